//! The agents of the SIGKILL test: each drives random creates, assignments,
//! closes and chat sessions against the binary until it dies, and logs
//! every change it asked for and whether it was answered (a
//! `casebroker_testkit::crash::CaseLog`, which the check judges).

use std::sync::atomic::AtomicBool;

use casebroker_testkit::crash::{CaseLog, Op, State, Step};
use rand::RngExt;
use rand::rngs::StdRng;

use super::sigkill::AGENTS;
use super::*;

/// One of three agents driving changes against the binary until it dies.
pub(super) struct Worker {
    pub(super) me: &'static str,
    pub(super) token: &'static str,
    pub(super) admin: bool,
    pub(super) round: u32,
    /// Which of the agents (for the logs).
    pub(super) client: usize,
    pub(super) at: Endpoint,
    pub(super) rng: StdRng,
    pub(super) killed: Arc<AtomicBool>,
    pub(super) logs: Vec<CaseLog>,
    /// Customer connections kept seated until the kill.
    pub(super) customers: Vec<WsClient>,
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
        let link = self.at.try_agent(self.token).await;
        let Some(mut agent) = self.alive(link, "hello") else {
            return self.logs;
        };
        while self.step(&mut agent).await.is_some() {}
        drop(self.customers);
        self.logs
    }

    async fn step(&mut self, agent: &mut WsClient) -> Option<()> {
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
            .filter(|&i| self.logs[i].code.is_some() && ok(self, &self.logs[i].states().0))
            .collect();
        (!candidates.is_empty()).then(|| candidates[self.rng.random_range(0..candidates.len())])
    }

    async fn create(
        &mut self,
        agent: &mut WsClient,
        assignee: Option<&'static str>,
    ) -> Option<usize> {
        let i = self.logs.len();
        let http = self.rng.random_bool(0.5);
        self.logs.push(CaseLog {
            round: self.round,
            client: self.client,
            agent: self.me.to_string(),
            group: Some("support".into()),
            code: None,
            steps: vec![Step {
                op: Op::Create {
                    http,
                    assignee: assignee.map(str::to_string),
                },
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
        let case = if !http {
            body["type"] = json!("create_case");
            let r = agent.try_request(body).await;
            let r = self.alive(r, "create_case")?;
            assert_eq!(r["type"], "case", "{}: create_case: {r}", self.me);
            r["case"].clone()
        } else {
            let r = self
                .at
                .try_http("POST", "/v1/cases", Some(self.token), Some(body))
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

    async fn assign(&mut self, agent: &mut WsClient, i: usize) -> Option<()> {
        let code = self.code(i);
        let current = self.logs[i].states().0.assignee;
        let to = self.other_agent(current.as_deref());
        let http = self.rng.random_bool(0.5);
        let op = Op::Assign {
            to: to.to_string(),
            http,
        };
        self.begin(i, op);
        let case = if !http {
            let r = agent
                .try_request(json!({"type": "assign", "code": code, "assignee": to}))
                .await;
            let r = self.alive(r, "assign")?;
            assert_eq!(r["type"], "case", "{}: assign {code} to {to}: {r}", self.me);
            r["case"].clone()
        } else {
            let r = self
                .at
                .try_http(
                    "POST",
                    &format!("/v1/cases/{code}/assign"),
                    Some(self.token),
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

    async fn close(&mut self, agent: &mut WsClient, i: usize) -> Option<()> {
        let code = self.code(i);
        let http = self.rng.random_bool(0.5);
        self.begin(i, Op::Close { http });
        let case = if !http {
            let r = agent
                .try_request(json!({"type": "close", "code": code}))
                .await;
            let r = self.alive(r, "close")?;
            assert_eq!(r["type"], "case", "{}: close {code}: {r}", self.me);
            r["case"].clone()
        } else {
            let r = self
                .at
                .try_http(
                    "POST",
                    &format!("/v1/cases/{code}/close"),
                    Some(self.token),
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
    async fn session(&mut self, agent: &mut WsClient) -> Option<()> {
        let i = self.create(agent, None).await?;
        let code = self.code(i);
        self.begin(i, Op::Join);
        let r = agent
            .try_request(json!({"type": "join", "code": code}))
            .await;
        let r = self.alive(r, "join")?;
        assert_eq!(r["type"], "joined", "{}: join {code}: {r}", self.me);
        self.acked(i);

        let link = self.at.try_customer().await;
        let mut customer = self.alive(link, "customer hello")?;
        self.begin(i, Op::CustomerJoin);
        let r = customer
            .try_request(json!({"type": "join", "code": code, "name": "Ana"}))
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
                    .try_request(json!({"type": "chat", "code": code, "text": text}))
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
                    .try_request(json!({"type": "chat", "text": text}))
                    .await;
                ("customer", r)
            };
            let r = self.alive(r, "chat")?;
            assert_eq!(r["type"], "sent", "{role} chat in {code}: {r}");
            self.acked(i);
        }
        if self.rng.random_bool(0.3) {
            self.begin(i, Op::Close { http: false });
            let r = agent
                .try_request(json!({"type": "close", "code": code}))
                .await;
            let r = self.alive(r, "close")?;
            assert_eq!(r["type"], "case", "{}: close {code}: {r}", self.me);
            self.acked(i);
        } else {
            self.customers.push(customer);
        }
        Some(())
    }
}
