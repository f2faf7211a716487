//! The agents of the SIGKILL test: each drives random creates, assignments,
//! closes and chat sessions against the binary until it dies, and logs
//! every change it asked for and whether it was answered; what a case's
//! answered steps imply, and whether a recovered case shows it.

use std::sync::atomic::AtomicBool;

use rand::RngExt;
use rand::rngs::StdRng;

use super::sigkill::AGENTS;
use super::sigkill_clients::{Api, Link};
use super::*;

/// A change a worker asked for.
#[derive(Clone, Debug)]
pub(super) enum Op {
    Create {
        assignee: Option<&'static str>,
    },
    Assign(&'static str),
    /// The worker's agent joins the session (claiming the unassigned case).
    Join,
    CustomerJoin,
    Chat {
        role: &'static str,
        text: String,
    },
    Close,
}

#[derive(Debug)]
pub(super) struct Step {
    pub(super) op: Op,
    /// Its reply (or 2xx) arrived.
    pub(super) acked: bool,
}

/// One case, as its worker made it: the worker's agent makes every change
/// of it, one at a time, so at most the last step lacks its answer.
#[derive(Debug)]
pub(super) struct CaseLog {
    pub(super) round: usize,
    pub(super) agent: &'static str,
    /// Known once the creation was answered.
    pub(super) code: Option<String>,
    pub(super) steps: Vec<Step>,
}

/// What a case's steps imply.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct State {
    assignee: Option<String>,
    closed: bool,
    /// A seat was ever taken.
    seated: bool,
    lines: Vec<(String, String)>,
}

impl CaseLog {
    fn apply(&self, s: &mut State, op: &Op) {
        match op {
            Op::Create { assignee } => s.assignee = assignee.map(str::to_string),
            Op::Assign(to) => s.assignee = Some(to.to_string()),
            Op::Join => {
                s.assignee.get_or_insert_with(|| self.agent.to_string());
                s.seated = true;
            }
            Op::CustomerJoin => s.seated = true,
            Op::Chat { role, text } => s.lines.push((role.to_string(), text.clone())),
            Op::Close => s.closed = true,
        }
    }

    /// The state of the answered steps, and the state with the unanswered
    /// last step too (when there is one).
    pub(super) fn states(&self) -> (State, Option<State>) {
        let mut s = State {
            assignee: None,
            closed: false,
            seated: false,
            lines: Vec::new(),
        };
        let mut beyond = None;
        for (k, step) in self.steps.iter().enumerate() {
            if step.acked {
                assert!(beyond.is_none(), "a step after an unanswered one: {self:?}");
                self.apply(&mut s, &step.op);
            } else {
                assert_eq!(k + 1, self.steps.len(), "{self:?}");
                let mut b = s.clone();
                self.apply(&mut b, &step.op);
                beyond = Some(b);
            }
        }
        (s, beyond)
    }

    fn acked(&self) -> State {
        self.states().0
    }
}

/// Whether a recovered case and its transcript show `s`.
pub(super) fn shows(case: &Value, lines: &[(String, String)], s: &State) -> bool {
    let status = case["status"].as_str().unwrap();
    case["assignee"].as_str() == s.assignee.as_deref()
        && (status == "closed") == s.closed
        && (s.closed || status == if s.seated { "pending" } else { "new" })
        && lines == s.lines.as_slice()
}

/// One of three agents driving changes against the binary until it dies.
pub(super) struct Worker {
    pub(super) me: &'static str,
    pub(super) token: &'static str,
    pub(super) admin: bool,
    pub(super) round: usize,
    pub(super) addr: SocketAddr,
    pub(super) api: Api,
    pub(super) rng: StdRng,
    pub(super) killed: Arc<AtomicBool>,
    pub(super) logs: Vec<CaseLog>,
    /// Customer connections kept seated until the kill.
    pub(super) customers: Vec<Link>,
    pub(super) lines: u64,
}

impl Worker {
    /// `v`, after checking that a missing answer comes from the kill.
    fn alive<T>(&self, v: Option<T>, what: &str) -> Option<T> {
        if v.is_none() {
            assert!(
                self.killed.load(Ordering::SeqCst),
                "{}: {what} got no answer while the broker was running",
                self.me
            );
        }
        v
    }

    fn begin(&mut self, i: usize, op: Op) {
        self.logs[i].steps.push(Step { op, acked: false });
    }

    fn acked(&mut self, i: usize) {
        self.logs[i].steps.last_mut().unwrap().acked = true;
    }

    fn code(&self, i: usize) -> String {
        self.logs[i].code.clone().unwrap()
    }

    fn other_agent(&mut self, not: Option<&str>) -> &'static str {
        loop {
            let (id, _, _) = AGENTS[self.rng.random_range(0..AGENTS.len())];
            if Some(id) != not {
                return id;
            }
        }
    }

    pub(super) async fn run(mut self) -> Vec<CaseLog> {
        let link = Link::agent(self.addr, self.token).await;
        let Some(mut agent) = self.alive(link, "hello") else {
            return self.logs;
        };
        while self.step(&mut agent).await.is_some() {}
        drop(self.customers);
        self.logs
    }

    async fn step(&mut self, agent: &mut Link) -> Option<()> {
        let roll = self.rng.random_range(0..100);
        if roll < 25 {
            let assignee = self
                .rng
                .random_bool(0.3)
                .then(|| AGENTS[self.rng.random_range(0..AGENTS.len())].0);
            self.create(agent, assignee).await?;
        } else if roll < 45 {
            match self.pick(|w, s| {
                !s.closed && (w.admin || s.assignee.as_deref().is_none_or(|a| a == w.me))
            }) {
                Some(i) => self.assign(agent, i).await?,
                None => {
                    self.create(agent, None).await?;
                }
            }
        } else if roll < 60 {
            match self.pick(|_, s| !s.closed) {
                Some(i) => self.close(agent, i).await?,
                None => {
                    self.create(agent, None).await?;
                }
            }
        } else {
            self.session(agent).await?;
        }
        Some(())
    }

    /// A random case of this worker whose answered state passes `ok`.
    fn pick(&mut self, ok: impl Fn(&Worker, &State) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.logs.len())
            .filter(|&i| self.logs[i].code.is_some() && ok(self, &self.logs[i].acked()))
            .collect();
        (!candidates.is_empty()).then(|| candidates[self.rng.random_range(0..candidates.len())])
    }

    async fn create(&mut self, agent: &mut Link, assignee: Option<&'static str>) -> Option<usize> {
        let i = self.logs.len();
        self.logs.push(CaseLog {
            round: self.round,
            agent: self.me,
            code: None,
            steps: vec![Step {
                op: Op::Create { assignee },
                acked: false,
            }],
        });
        let mut body = json!({
            "group": "support",
            "name": format!("{} round {} #{i}", self.me, self.round),
        });
        if let Some(a) = assignee {
            body["assignee"] = json!(a);
        }
        let case = if self.rng.random_bool(0.5) {
            body["type"] = json!("create_case");
            let r = agent.request(body).await;
            let r = self.alive(r, "create_case")?;
            assert_eq!(r["type"], "case", "{}: create_case: {r}", self.me);
            r["case"].clone()
        } else {
            let r = self
                .api
                .call(reqwest::Method::POST, "/v1/cases", self.token, Some(body))
                .await;
            let (status, case) = self.alive(r, "POST /v1/cases")?;
            assert_eq!(status, 201, "{}: POST /v1/cases: {case}", self.me);
            case
        };
        assert_eq!(case["assignee"].as_str(), assignee, "{case}");
        self.logs[i].code = Some(code_of(&case));
        self.acked(i);
        Some(i)
    }

    async fn assign(&mut self, agent: &mut Link, i: usize) -> Option<()> {
        let code = self.code(i);
        let current = self.logs[i].acked().assignee;
        let to = self.other_agent(current.as_deref());
        self.begin(i, Op::Assign(to));
        let case = if self.rng.random_bool(0.5) {
            let r = agent
                .request(json!({"type": "assign", "code": code, "assignee": to}))
                .await;
            let r = self.alive(r, "assign")?;
            assert_eq!(r["type"], "case", "{}: assign {code} to {to}: {r}", self.me);
            r["case"].clone()
        } else {
            let r = self
                .api
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/cases/{code}/assign"),
                    self.token,
                    Some(json!({"assignee": to})),
                )
                .await;
            let (status, case) = self.alive(r, "POST assign")?;
            assert_eq!(status, 200, "{}: assign {code} to {to}: {case}", self.me);
            case
        };
        assert_eq!(case["assignee"], to, "{case}");
        assert_eq!(case["assigned_by"], self.me, "{case}");
        self.acked(i);
        Some(())
    }

    async fn close(&mut self, agent: &mut Link, i: usize) -> Option<()> {
        let code = self.code(i);
        self.begin(i, Op::Close);
        let case = if self.rng.random_bool(0.5) {
            let r = agent.request(json!({"type": "close", "code": code})).await;
            let r = self.alive(r, "close")?;
            assert_eq!(r["type"], "case", "{}: close {code}: {r}", self.me);
            r["case"].clone()
        } else {
            let r = self
                .api
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/cases/{code}/close"),
                    self.token,
                    None,
                )
                .await;
            let (status, case) = self.alive(r, "POST close")?;
            assert_eq!(status, 200, "{}: close {code}: {case}", self.me);
            case
        };
        assert_eq!(case["status"], "closed", "{case}");
        assert_eq!(case["closed_by"], self.me, "{case}");
        self.acked(i);
        Some(())
    }

    /// A new case, the agent joins, a customer joins, a few chat lines both
    /// ways, and sometimes the agent closes it.
    async fn session(&mut self, agent: &mut Link) -> Option<()> {
        let i = self.create(agent, None).await?;
        let code = self.code(i);
        self.begin(i, Op::Join);
        let r = agent.request(json!({"type": "join", "code": code})).await;
        let r = self.alive(r, "join")?;
        assert_eq!(r["type"], "joined", "{}: join {code}: {r}", self.me);
        self.acked(i);

        let link = Link::customer(self.addr).await;
        let mut customer = self.alive(link, "customer hello")?;
        self.begin(i, Op::CustomerJoin);
        let r = customer
            .request(json!({"type": "join", "code": code, "name": "Ana"}))
            .await;
        let r = self.alive(r, "customer join")?;
        assert_eq!(r["type"], "joined", "customer join {code}: {r}");
        self.acked(i);

        for k in 0..self.rng.random_range(1..=4) {
            self.lines += 1;
            let text = format!("{} round {} line {}", self.me, self.round, self.lines);
            let (role, r) = if k % 2 == 0 {
                self.begin(
                    i,
                    Op::Chat {
                        role: "agent",
                        text: text.clone(),
                    },
                );
                let r = agent
                    .request(json!({"type": "chat", "code": code, "text": text}))
                    .await;
                ("agent", r)
            } else {
                self.begin(
                    i,
                    Op::Chat {
                        role: "customer",
                        text: text.clone(),
                    },
                );
                let r = customer
                    .request(json!({"type": "chat", "text": text}))
                    .await;
                ("customer", r)
            };
            let r = self.alive(r, "chat")?;
            assert_eq!(r["type"], "sent", "{role} chat in {code}: {r}");
            self.acked(i);
        }
        if self.rng.random_bool(0.3) {
            self.begin(i, Op::Close);
            let r = agent.request(json!({"type": "close", "code": code})).await;
            let r = self.alive(r, "close")?;
            assert_eq!(r["type"], "case", "{}: close {code}: {r}", self.me);
            self.acked(i);
        } else {
            self.customers.push(customer);
        }
        Some(())
    }
}
