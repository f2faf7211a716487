//! The clients of one round: each one an admin agent connection, a
//! kept-alive HTTP connection and customer connections, making random
//! changes to its own cases one at a time (`create_case` over WebSocket and
//! HTTP, `assign`, `request_help` + `join` + chat both ways, `close`) and
//! logging each one with whether its answer arrived before the kill.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use casebroker::protocol::{CaseBody, ClientMsg, CreateCase, RequestHelp, ServerMsg};
use casebroker_testkit::crash::{CaseLog, Op, State, Step};
use serde_json::json;

use super::Rng;
use crate::client::Client;
use crate::http::Http;
use crate::target::Target;

/// A refusal (an `error` reply, an HTTP status other than the expected
/// one, an unexpected reply): a failure whether or not the broker was
/// being killed.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Sends `msg` and waits for the message answering it; an `error` reply is
/// [`Refused`], a connection that ends is a plain error.
pub(super) async fn ask(c: &mut Client, what: &str, msg: ClientMsg) -> anyhow::Result<ServerMsg> {
    let id = c.send(msg).await?;
    let r = c.wait_for(what, None, |r| r.answers(id)).await?;
    match r.msg {
        Some(ServerMsg::Error { .. }) | None => Err(Refused(format!("{what}: {}", r.text)).into()),
        Some(m) => Ok(m),
    }
}

fn refused(what: &str, got: impl std::fmt::Debug) -> anyhow::Error {
    Refused(format!("{what}: unexpected answer {got:?}")).into()
}

/// What every client of a round shares.
pub(super) struct Ctx {
    pub(super) round: u32,
    pub(super) target: Target,
    pub(super) addr: SocketAddr,
    pub(super) token: String,
    /// The admin agent the token belongs to.
    pub(super) me: String,
    /// Groups and their members (assignees).
    pub(super) groups: Vec<(String, Vec<String>)>,
    pub(super) modules: Vec<String>,
    /// Set just before the kill: a connection that ends after it ended
    /// because of it.
    pub(super) killed: AtomicBool,
}

/// One client: an agent connection (the admin), a kept-alive HTTP
/// connection, customer connections for its sessions.
pub(super) struct Driver {
    pub(super) k: usize,
    pub(super) ctx: Arc<Ctx>,
    pub(super) rng: Rng,
    pub(super) http: Http,
    pub(super) logs: Vec<CaseLog>,
    pub(super) errors: Vec<String>,
    /// Customers kept seated until the kill.
    pub(super) customers: Vec<Client>,
    pub(super) lines: u64,
}

impl Driver {
    /// `Some` on success; on failure records why, unless the connection
    /// ended because of the kill.
    fn alive<T>(&mut self, r: anyhow::Result<T>, what: &str) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                if e.downcast_ref::<Refused>().is_some() || !self.ctx.killed.load(Ordering::SeqCst)
                {
                    self.errors.push(format!(
                        "round {}, client {}: {what}: {e:#}",
                        self.ctx.round, self.k
                    ));
                }
                None
            }
        }
    }

    fn begin(&mut self, i: usize, op: Op) {
        self.logs[i].steps.push(Step { op, acked: false });
    }

    fn ack(&mut self, i: usize) {
        if let Some(s) = self.logs[i].steps.last_mut() {
            s.acked = true;
        }
    }

    fn code(&self, i: usize) -> String {
        self.logs[i].code.clone().unwrap_or_default()
    }

    fn new_case(&mut self, group: Option<String>, op: Op) -> usize {
        self.logs.push(CaseLog {
            round: self.ctx.round,
            client: self.k,
            agent: self.ctx.me.clone(),
            group,
            code: None,
            steps: vec![Step { op, acked: false }],
        });
        self.logs.len() - 1
    }

    /// A random case of this client whose answered state passes `ok`.
    fn pick(&mut self, ok: impl Fn(&CaseLog, &State) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.logs.len())
            .filter(|&i| {
                let l = &self.logs[i];
                l.code.is_some() && ok(l, &l.states().0)
            })
            .collect();
        (!candidates.is_empty()).then(|| *self.rng.pick(&candidates))
    }

    fn members(&self, group: &str) -> Vec<String> {
        self.ctx
            .groups
            .iter()
            .find(|(g, _)| g == group)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    async fn run(&mut self, agent: &mut Client) {
        while !self.ctx.killed.load(Ordering::SeqCst) {
            if self.step(agent).await.is_none() {
                break;
            }
        }
    }

    async fn step(&mut self, agent: &mut Client) -> Option<()> {
        let roll = self.rng.range(0, 99);
        if roll < 30 {
            self.create(agent).await?;
        } else if roll < 50 {
            let pick = self.pick(|l, s| !s.closed && l.group.is_some());
            match pick {
                Some(i) => self.assign(agent, i).await?,
                None => {
                    self.create(agent).await?;
                }
            }
        } else if roll < 65 {
            match self.pick(|_, s| !s.closed) {
                Some(i) => self.close(agent, i).await?,
                None => {
                    self.create(agent).await?;
                }
            }
        } else {
            self.session(agent).await?;
        }
        Some(())
    }

    /// `create_case` over WebSocket or HTTP, in a random group, sometimes
    /// assigned at once.
    async fn create(&mut self, agent: &mut Client) -> Option<usize> {
        let groups: Vec<String> = self.ctx.groups.iter().map(|(g, _)| g.clone()).collect();
        let group = self.rng.pick(&groups).clone();
        let members = self.members(&group);
        let assignee =
            (self.rng.chance(30) && !members.is_empty()).then(|| self.rng.pick(&members).clone());
        let http = self.rng.chance(50);
        let i = self.new_case(
            Some(group.clone()),
            Op::Create {
                http,
                assignee: assignee.clone(),
            },
        );
        let body = CreateCase {
            group,
            name: Some(format!("crash r{} c{} #{i}", self.ctx.round, self.k)),
            assignee,
            ..CreateCase::default()
        };
        let code = if http {
            let ctx = self.ctx.clone();
            let body = serde_json::to_value(&body).expect("a create body serialises");
            let r = self
                .http
                .call("POST", "/v1/cases", Some(&ctx.token), Some(&body))
                .await
                .and_then(|r| match (r.status, r.json()["code"].as_str()) {
                    (201, Some(code)) => Ok(code.to_string()),
                    _ => Err(refused("POST /v1/cases", (r.status, r.text()))),
                });
            self.alive(r, "POST /v1/cases")?
        } else {
            let r = ask(agent, "create_case", ClientMsg::CreateCase(body))
                .await
                .and_then(|m| match m {
                    ServerMsg::Case {
                        case: CaseBody::Agent(c),
                    } => Ok(c.code.to_string()),
                    other => Err(refused("create_case", other)),
                });
            self.alive(r, "create_case")?
        };
        self.logs[i].code = Some(code);
        self.ack(i);
        Some(i)
    }

    /// `assign` to another member of the case's group.
    async fn assign(&mut self, agent: &mut Client, i: usize) -> Option<()> {
        let code = self.code(i);
        let group = self.logs[i].group.clone().unwrap_or_default();
        let current = self.logs[i].states().0.assignee;
        let others: Vec<String> = self
            .members(&group)
            .into_iter()
            .filter(|m| Some(m) != current.as_ref())
            .collect();
        if others.is_empty() {
            return self.close(agent, i).await;
        }
        let to = self.rng.pick(&others).clone();
        let http = self.rng.chance(50);
        self.begin(
            i,
            Op::Assign {
                to: to.clone(),
                http,
            },
        );
        let r = if http {
            let ctx = self.ctx.clone();
            self.http
                .call(
                    "POST",
                    &format!("/v1/cases/{code}/assign"),
                    Some(&ctx.token),
                    Some(&json!({ "assignee": to })),
                )
                .await
                .and_then(|r| match r.status {
                    200 => Ok(()),
                    _ => Err(refused("POST assign", (r.status, r.text()))),
                })
        } else {
            ask(
                agent,
                "assign",
                ClientMsg::Assign {
                    code,
                    assignee: Some(to),
                },
            )
            .await
            .and_then(|m| match m {
                ServerMsg::Case { .. } => Ok(()),
                other => Err(refused("assign", other)),
            })
        };
        self.alive(r, "assign")?;
        self.ack(i);
        Some(())
    }

    /// `close` over WebSocket or HTTP.
    async fn close(&mut self, agent: &mut Client, i: usize) -> Option<()> {
        let code = self.code(i);
        let http = self.rng.chance(50);
        self.begin(i, Op::Close { http });
        let r = if http {
            let ctx = self.ctx.clone();
            self.http
                .call(
                    "POST",
                    &format!("/v1/cases/{code}/close"),
                    Some(&ctx.token),
                    None,
                )
                .await
                .and_then(|r| match r.status {
                    200 => Ok(()),
                    _ => Err(refused("POST close", (r.status, r.text()))),
                })
        } else {
            ask(agent, "close", ClientMsg::Close { code: Some(code) })
                .await
                .and_then(|m| match m {
                    ServerMsg::Case { .. } => Ok(()),
                    other => Err(refused("close", other)),
                })
        };
        self.alive(r, "close")?;
        self.ack(i);
        Some(())
    }

    /// A customer asks for help, the agent joins, one to four chat lines
    /// both ways, and sometimes the agent closes the case.
    async fn session(&mut self, agent: &mut Client) -> Option<()> {
        let ctx = self.ctx.clone();
        let connect = async {
            let mut c = Client::connect(&ctx.target).await?;
            c.hello_customer().await?;
            anyhow::Ok(c)
        };
        let mut customer = self.alive(connect.await, "customer connection")?;
        let module = self.rng.pick(&ctx.modules).clone();
        let i = self.new_case(None, Op::Help);
        let help = RequestHelp {
            module,
            name: Some(format!("Customer r{} c{}", ctx.round, self.k)),
            ..RequestHelp::default()
        };
        let r = ask(&mut customer, "request_help", ClientMsg::RequestHelp(help))
            .await
            .and_then(|m| match m {
                ServerMsg::Joined { code, .. } => Ok(code.to_string()),
                other => Err(refused("request_help", other)),
            });
        let code = self.alive(r, "request_help")?;
        self.logs[i].code = Some(code.clone());
        self.ack(i);

        self.begin(i, Op::Join);
        let join = ClientMsg::Join {
            code: code.clone(),
            takeover: false,
            name: None,
            resume_token: None,
        };
        let r = ask(agent, "join", join).await.and_then(|m| match m {
            ServerMsg::Joined { .. } => Ok(()),
            other => Err(refused("join", other)),
        });
        self.alive(r, "join")?;
        self.ack(i);

        for n in 0..self.rng.range(1, 4) {
            self.lines += 1;
            let text = format!("r{} c{} line {}", ctx.round, self.k, self.lines);
            let (role, c, msg) = if n % 2 == 0 {
                let msg = ClientMsg::Chat {
                    code: Some(code.clone()),
                    text: text.clone(),
                };
                ("agent", &mut *agent, msg)
            } else {
                let msg = ClientMsg::Chat {
                    code: None,
                    text: text.clone(),
                };
                ("customer", &mut customer, msg)
            };
            self.begin(i, Op::Chat { role, text });
            let r = ask(c, "chat", msg).await.and_then(|m| match m {
                ServerMsg::Sent { .. } => Ok(()),
                other => Err(refused("chat", other)),
            });
            self.alive(r, &format!("{role} chat"))?;
            self.ack(i);
        }
        if self.rng.chance(30) {
            self.begin(i, Op::Close { http: false });
            let r = ask(
                agent,
                "close",
                ClientMsg::Close {
                    code: Some(code.clone()),
                },
            )
            .await
            .and_then(|m| match m {
                ServerMsg::Case { .. } => Ok(()),
                other => Err(refused("close", other)),
            });
            self.alive(r, "close")?;
            self.ack(i);
        } else {
            self.customers.push(customer);
        }
        Some(())
    }
}

/// One client's round: connect, say it is ready, wait for the start, drive
/// changes until the kill.
pub(super) async fn client_round(
    mut d: Driver,
    ready: tokio::sync::mpsc::Sender<()>,
    mut go: tokio::sync::watch::Receiver<bool>,
) -> Driver {
    let ctx = d.ctx.clone();
    let connect = async {
        let mut c = Client::connect(&ctx.target).await?;
        c.hello_agent(&ctx.token).await?;
        anyhow::Ok(c)
    };
    let agent = connect.await;
    let _ = ready.send(()).await;
    let Some(mut agent) = d.alive(agent, "agent connection") else {
        return d;
    };
    if go.wait_for(|g| *g).await.is_err() {
        return d;
    }
    d.run(&mut agent).await;
    d
}
