//! The check that a broker killed at a random moment kept every change it
//! acknowledged: what the clients asked for ([`Op`]), whether each was
//! answered ([`Step`], [`CaseLog`]), the state a case should show after a
//! restart ([`State`]), the state it does show ([`Seen`]), and the verdict
//! ([`judge`]). The integration tests' SIGKILL test and the load tester's
//! `crash` scenario both judge this way.
//!
//! One client makes every change of its own cases, one at a time, so at
//! most a case's last change lacks its answer when the kill comes: the
//! restarted broker may show that change or not, both are right.

mod judge;

pub use judge::{Verdict, judge};

use serde_json::Value;

/// One change a client asked for.
#[derive(Clone, Debug)]
pub enum Op {
    /// `create_case` (over WebSocket, or `POST /v1/cases`), maybe assigned
    /// at once.
    Create {
        http: bool,
        assignee: Option<String>,
    },
    /// `request_help` on a customer connection: a case with its customer
    /// seated.
    Help,
    /// `assign` (WebSocket or HTTP) to this agent.
    Assign { to: String, http: bool },
    /// The case's agent joins the session, taking the unassigned case.
    Join,
    /// A customer joins the case's session, taking its seat.
    CustomerJoin,
    /// A chat line, by `"agent"` or `"customer"`.
    Chat { role: &'static str, text: String },
    /// `close` (WebSocket or HTTP).
    Close { http: bool },
}

impl Op {
    pub fn describe(&self) -> String {
        match self {
            Op::Create { http, assignee } => format!(
                "create_case{}{}",
                if *http { " (POST /v1/cases)" } else { "" },
                assignee
                    .as_ref()
                    .map_or(String::new(), |a| format!(" assigned to {a}"))
            ),
            Op::Help => "request_help".into(),
            Op::Assign { to, http } => {
                format!("assign to {to}{}", if *http { " (HTTP)" } else { "" })
            }
            Op::Join => "agent join".into(),
            Op::CustomerJoin => "customer join".into(),
            Op::Chat { role, text } => format!("{role} chat {text:?}"),
            Op::Close { http } => format!("close{}", if *http { " (HTTP)" } else { "" }),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Step {
    pub op: Op,
    /// Its reply (or 2xx) arrived.
    pub acked: bool,
}

/// One case as its client made it.
#[derive(Clone, Debug)]
pub struct CaseLog {
    pub round: u32,
    pub client: usize,
    /// The agent making every change of the case (the one a `join` seats).
    pub agent: String,
    /// The group of a `create_case`; `None` for `request_help`.
    pub group: Option<String>,
    /// Known once the creation was answered.
    pub code: Option<String>,
    pub steps: Vec<Step>,
}

/// What a case shows (or should show) after a restart.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    pub assignee: Option<String>,
    pub closed: bool,
    /// A seat was taken at some point.
    pub seated: bool,
    /// (role, text)
    pub lines: Vec<(String, String)>,
}

impl State {
    /// The status after a restart: nobody is connected any more.
    pub fn status(&self) -> &'static str {
        if self.closed {
            "closed"
        } else if self.seated {
            "pending"
        } else {
            "new"
        }
    }
}

/// A case as recovered.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub status: String,
    pub assignee: Option<String>,
    pub lines: Vec<(String, String)>,
}

impl Seen {
    /// A case object (`GET /v1/cases/{code}` or a listing's row) and the
    /// lines of its transcript.
    pub fn of(case: &Value, lines: Vec<(String, String)>) -> Seen {
        Seen {
            status: case["status"].as_str().unwrap_or("?").to_string(),
            assignee: case["assignee"].as_str().map(str::to_string),
            lines,
        }
    }

    pub fn shows(&self, s: &State) -> bool {
        self.status == s.status() && self.assignee == s.assignee && self.lines == s.lines
    }
}

/// A transcript (`GET /v1/cases/{code}/transcript`) as (role, text) lines.
pub fn transcript_lines(transcript: &Value) -> Vec<(String, String)> {
    transcript["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|l| {
                    (
                        l["from"]["role"].as_str().unwrap_or("?").to_string(),
                        l["text"].as_str().unwrap_or("?").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

impl CaseLog {
    fn apply(&self, s: &mut State, op: &Op) {
        match op {
            Op::Create { assignee, .. } => s.assignee = assignee.clone(),
            Op::Help | Op::CustomerJoin => s.seated = true,
            Op::Assign { to, .. } => s.assignee = Some(to.clone()),
            Op::Join => {
                s.assignee.get_or_insert_with(|| self.agent.clone());
                s.seated = true;
            }
            Op::Chat { role, text } => s.lines.push((role.to_string(), text.clone())),
            Op::Close { .. } => s.closed = true,
        }
    }

    /// The state of the answered steps, and with the unanswered last step
    /// too (when there is one). Panics when an answered step follows an
    /// unanswered one: a client waits for each answer.
    pub fn states(&self) -> (State, Option<State>) {
        let mut s = State {
            assignee: None,
            closed: false,
            seated: false,
            lines: Vec::new(),
        };
        let mut beyond = None;
        for step in &self.steps {
            assert!(beyond.is_none(), "a step after an unanswered one: {self:?}");
            if step.acked {
                self.apply(&mut s, &step.op);
            } else {
                let mut b = s.clone();
                self.apply(&mut b, &step.op);
                beyond = Some(b);
            }
        }
        (s, beyond)
    }

    pub fn acked(&self) -> impl Iterator<Item = &Op> {
        self.steps.iter().filter(|s| s.acked).map(|s| &s.op)
    }

    pub fn has_chat(&self) -> bool {
        self.steps.iter().any(|s| matches!(s.op, Op::Chat { .. }))
    }

    pub fn name(&self) -> String {
        format!(
            "{} (round {}, client {}, {})",
            self.code.as_deref().unwrap_or("?"),
            self.round,
            self.client,
            self.steps.first().map_or("?".into(), |s| s.op.describe())
        )
    }
}
