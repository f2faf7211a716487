//! What the clients of the crash scenario did and what a case shows: the
//! changes they asked for ([`Op`]), whether each was answered ([`Step`],
//! [`CaseLog`]), the acknowledged changes by kind ([`Counts`]), the state a
//! case should show after a restart ([`State`]) and the state it does show
//! ([`Seen`]).

use serde_json::{Value, json};

/// One change a client asked for.
#[derive(Clone, Debug)]
pub(super) enum Op {
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
    /// The client's agent joins the session, taking the unassigned case.
    Join,
    /// A chat line, by `"agent"` or `"customer"`.
    Chat { role: &'static str, text: String },
    /// `close` (WebSocket or HTTP).
    Close { http: bool },
}

impl Op {
    pub(super) fn describe(&self) -> String {
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
            Op::Chat { role, text } => format!("{role} chat {text:?}"),
            Op::Close { http } => format!("close{}", if *http { " (HTTP)" } else { "" }),
        }
    }
}

/// Acknowledged changes by kind.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Counts {
    pub(super) creates: u64,
    pub(super) assigns: u64,
    pub(super) joins: u64,
    pub(super) chats: u64,
    pub(super) closes: u64,
}

impl Counts {
    pub(super) fn add(&mut self, op: &Op) {
        match op {
            Op::Create { .. } | Op::Help => self.creates += 1,
            Op::Assign { .. } => self.assigns += 1,
            Op::Join => self.joins += 1,
            Op::Chat { .. } => self.chats += 1,
            Op::Close { .. } => self.closes += 1,
        }
    }

    pub(super) fn total(&self) -> u64 {
        self.creates + self.assigns + self.joins + self.chats + self.closes
    }

    pub(super) fn json(&self) -> Value {
        json!({
            "creates": self.creates,
            "assigns": self.assigns,
            "joins": self.joins,
            "chat_lines": self.chats,
            "closes": self.closes,
        })
    }
}

#[derive(Clone, Debug)]
pub(super) struct Step {
    pub(super) op: Op,
    /// Its reply (or 2xx) arrived.
    pub(super) acked: bool,
}

/// One case as its client made it.
#[derive(Clone, Debug)]
pub(super) struct CaseLog {
    pub(super) round: u32,
    pub(super) client: usize,
    /// The group of a `create_case`; `None` for `request_help`.
    pub(super) group: Option<String>,
    /// Known once the creation was answered.
    pub(super) code: Option<String>,
    pub(super) steps: Vec<Step>,
}

/// What a case shows (or should show) after a restart.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct State {
    pub(super) assignee: Option<String>,
    pub(super) closed: bool,
    /// A seat was taken at some point.
    pub(super) seated: bool,
    /// (role, text)
    pub(super) lines: Vec<(String, String)>,
}

impl State {
    /// The status after a restart: nobody is connected any more.
    pub(super) fn status(&self) -> &'static str {
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
pub(super) struct Seen {
    pub(super) status: String,
    pub(super) assignee: Option<String>,
    pub(super) lines: Vec<(String, String)>,
}

impl Seen {
    pub(super) fn shows(&self, s: &State) -> bool {
        self.status == s.status() && self.assignee == s.assignee && self.lines == s.lines
    }
}

impl CaseLog {
    fn apply(s: &mut State, op: &Op, me: &str) {
        match op {
            Op::Create { assignee, .. } => s.assignee = assignee.clone(),
            Op::Help => s.seated = true,
            Op::Assign { to, .. } => s.assignee = Some(to.clone()),
            Op::Join => {
                s.assignee.get_or_insert_with(|| me.to_string());
                s.seated = true;
            }
            Op::Chat { role, text } => s.lines.push((role.to_string(), text.clone())),
            Op::Close { .. } => s.closed = true,
        }
    }

    /// The state of the answered steps, and with the unanswered last step
    /// too (when there is one).
    pub(super) fn states(&self, me: &str) -> (State, Option<State>) {
        let mut s = State {
            assignee: None,
            closed: false,
            seated: false,
            lines: Vec::new(),
        };
        let mut beyond = None;
        for step in &self.steps {
            if step.acked {
                Self::apply(&mut s, &step.op, me);
            } else {
                let mut b = s.clone();
                Self::apply(&mut b, &step.op, me);
                beyond = Some(b);
            }
        }
        (s, beyond)
    }

    pub(super) fn acked(&self) -> impl Iterator<Item = &Op> {
        self.steps.iter().filter(|s| s.acked).map(|s| &s.op)
    }

    pub(super) fn has_chat(&self) -> bool {
        self.steps.iter().any(|s| matches!(s.op, Op::Chat { .. }))
    }

    pub(super) fn name(&self) -> String {
        format!(
            "{} (round {}, client {}, {})",
            self.code.as_deref().unwrap_or("?"),
            self.round,
            self.client,
            self.steps.first().map_or("?".into(), |s| s.op.describe())
        )
    }
}
