//! The `crash` scenario: does a broker keep every change it acknowledged
//! when it is killed at a random moment?
//!
//! The scenario starts the broker binary itself, on a data directory and a
//! free loopback port, and then, round after round: C clients change cases
//! (`create_case` over WebSocket and `POST /v1/cases`, `assign`, customer
//! `request_help` + agent `join` + chat both ways, `close`) while an admin
//! dashboard follows the company's stream; after a random delay the broker
//! gets SIGKILL, is started again on the same directory, and every change
//! whose answer (a reply, an HTTP 2xx) arrived before the kill is looked
//! up: the case exists (`GET /v1/cases/{code}`), shows its last
//! acknowledged assignee and its acknowledged close, and its transcript
//! (`GET /v1/cases/{code}/transcript`) holds every acknowledged chat line.
//! The company's `epoch` must be the one of the first round and the
//! dashboard, subscribing again with `resume {epoch, seq}` from the last
//! event it saw, must get `resumed`. The restarted broker serves the next
//! round, whose kill ends it.
//!
//! One client makes every change of its own cases, one at a time, so at
//! most its last change lacks an answer when the kill comes: the broker may
//! show that change or not, both are right. A change counts as recovered
//! when its case shows it (or a later acknowledged change of the same
//! case), lost otherwise. Cases checked once are checked again every ten
//! rounds and at the end (their status and assignee; at the end their
//! transcripts too): a later crash must not take them back either.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use casebroker::protocol::{CaseBody, ClientMsg, CreateCase, RequestHelp, ServerMsg, StreamPos};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::http::Http;
use crate::report::{Progress, Report, per_sec, thousands};
use crate::stats::{Summary, fmt_ms, histogram, round3};
use crate::target::Target;

/// How long a broker may take from its start to answering `/healthz`.
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long the clients and the dashboard get to notice the kill.
const WIND_DOWN: Duration = Duration::from_secs(20);
/// Lines of the broker's output kept for error messages.
const TAIL_LINES: usize = 30;
/// Cases checked once are checked again every this many rounds.
const RECHECK_EVERY: u32 = 10;
/// Losses and surprises listed in the JSON (all are counted).
const LISTED: usize = 20;

/// What a crash run is asked to do.
#[derive(Clone, Debug)]
pub struct CrashOpts {
    /// The casebroker binary.
    pub broker: PathBuf,
    /// Its config file.
    pub config: PathBuf,
    /// The data directory; `None`: a fresh one under the temp dir.
    pub data_dir: Option<PathBuf>,
    /// Keep the fresh data directory at the end.
    pub keep: bool,
    pub rounds: u32,
    pub clients: usize,
    /// The kill comes this many ms after the clients start, uniformly.
    pub min_ms: u64,
    pub max_ms: u64,
    /// The whole run stops starting rounds past this.
    pub time_limit: Duration,
    pub seed: u64,
    /// An admin's token (every change is made as that agent).
    pub token: String,
    /// Module keys for `request_help`, used in turn.
    pub modules: Vec<String>,
    pub source_addrs: u8,
    pub progress: bool,
    /// Start the broker with `--in-memory` instead of the data directory:
    /// it then loses everything, which the run must report.
    pub in_memory: bool,
}

// A small seedable generator -------------------------------------------------

/// SplitMix64: enough to pick actions, agents and delays reproducibly.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with `pct` % probability.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.next_u64() % 100 < pct
    }

    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.next_u64() as usize % xs.len()]
    }
}

/// A seed from the clock and the process id.
pub fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

// The broker process -----------------------------------------------------------

/// A broker process; SIGKILLed when dropped, so no run leaves one behind.
struct Broker {
    child: Child,
    addr: SocketAddr,
    /// The last lines it wrote (stdout and stderr).
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl Broker {
    /// Starts the broker and waits until it answers `GET /healthz` with 200.
    /// Returns it and the time from the start to that answer.
    async fn start(opts: &CrashOpts, data: &Path) -> anyhow::Result<(Broker, Duration)> {
        let started = Instant::now();
        let mut cmd = Command::new(&opts.broker);
        cmd.arg("--config").arg(&opts.config).args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ]);
        if opts.in_memory {
            cmd.arg("--in-memory");
        } else {
            cmd.arg("--data-dir").arg(data);
        }
        cmd.env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", opts.broker.display()))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, mut listening) = tokio::sync::mpsc::unbounded_channel::<String>();
        if let Some(out) = child.stdout.take() {
            tokio::spawn(read_log(out, tail.clone(), tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(read_log(err, tail.clone(), tx));
        }
        let mut broker = Broker {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tail,
        };
        let deadline = started + START_LIMIT;
        // The address, from the "casebroker listening" log line.
        loop {
            if let Some(status) = broker.exited() {
                bail!(
                    "the broker exited while starting ({status}); {}",
                    broker.output()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the broker logged no address within {START_LIMIT:?}; {}",
                    broker.output()
                );
            }
            match tokio::time::timeout(Duration::from_millis(20), listening.recv()).await {
                Ok(Some(addr)) => {
                    broker.addr = addr
                        .parse()
                        .with_context(|| format!("the broker logged the address {addr:?}"))?;
                    break;
                }
                Ok(None) | Err(_) => continue,
            }
        }
        // Accepting: /healthz answers.
        let mut http = Http::new(broker.addr);
        loop {
            if let Ok(r) = http.call("GET", "/healthz", None, None).await
                && r.status == 200
            {
                break;
            }
            if let Some(status) = broker.exited() {
                bail!(
                    "the broker exited while starting ({status}); {}",
                    broker.output()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the broker did not answer /healthz within {START_LIMIT:?}; {}",
                    broker.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok((broker, started.elapsed()))
    }

    fn url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// The exit status once the process has ended.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL, and wait until the process is gone (its lock on the data
    /// directory with it).
    async fn kill(&mut self) -> anyhow::Result<()> {
        tokio::time::timeout(Duration::from_secs(10), self.child.kill())
            .await
            .context("the broker did not end within 10 s of SIGKILL")?
            .context("SIGKILL")
    }

    /// Its last lines of output, for an error message.
    fn output(&self) -> String {
        let tail = self.tail.lock().expect("log tail lock");
        if tail.is_empty() {
            return "it wrote nothing".into();
        }
        let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
        format!("its last output:\n{}", lines.join("\n"))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Reads one of the broker's pipes to its end: keeps the last lines and
/// sends the listening address when it is logged.
async fn read_log(
    pipe: impl tokio::io::AsyncRead + Unpin,
    tail: Arc<Mutex<VecDeque<String>>>,
    addr: tokio::sync::mpsc::UnboundedSender<String>,
) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && v["fields"]["message"] == "casebroker listening"
            && let Some(a) = v["fields"]["addr"].as_str()
        {
            let _ = addr.send(a.to_string());
        }
        let mut tail = tail.lock().expect("log tail lock");
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

// What the clients did -----------------------------------------------------------

/// One change a client asked for.
#[derive(Clone, Debug)]
enum Op {
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
    fn describe(&self) -> String {
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
struct Counts {
    creates: u64,
    assigns: u64,
    joins: u64,
    chats: u64,
    closes: u64,
}

impl Counts {
    fn add(&mut self, op: &Op) {
        match op {
            Op::Create { .. } | Op::Help => self.creates += 1,
            Op::Assign { .. } => self.assigns += 1,
            Op::Join => self.joins += 1,
            Op::Chat { .. } => self.chats += 1,
            Op::Close { .. } => self.closes += 1,
        }
    }

    fn total(&self) -> u64 {
        self.creates + self.assigns + self.joins + self.chats + self.closes
    }

    fn json(&self) -> Value {
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
struct Step {
    op: Op,
    /// Its reply (or 2xx) arrived.
    acked: bool,
}

/// One case as its client made it.
#[derive(Clone, Debug)]
struct CaseLog {
    round: u32,
    client: usize,
    /// The group of a `create_case`; `None` for `request_help`.
    group: Option<String>,
    /// Known once the creation was answered.
    code: Option<String>,
    steps: Vec<Step>,
}

/// What a case shows (or should show) after a restart.
#[derive(Clone, Debug, PartialEq)]
struct State {
    assignee: Option<String>,
    closed: bool,
    /// A seat was taken at some point.
    seated: bool,
    /// (role, text)
    lines: Vec<(String, String)>,
}

impl State {
    /// The status after a restart: nobody is connected any more.
    fn status(&self) -> &'static str {
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
struct Seen {
    status: String,
    assignee: Option<String>,
    lines: Vec<(String, String)>,
}

impl Seen {
    fn shows(&self, s: &State) -> bool {
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
    fn states(&self, me: &str) -> (State, Option<State>) {
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

    fn acked(&self) -> impl Iterator<Item = &Op> {
        self.steps.iter().filter(|s| s.acked).map(|s| &s.op)
    }

    fn has_chat(&self) -> bool {
        self.steps.iter().any(|s| matches!(s.op, Op::Chat { .. }))
    }

    fn name(&self) -> String {
        format!(
            "{} (round {}, client {}, {})",
            self.code.as_deref().unwrap_or("?"),
            self.round,
            self.client,
            self.steps.first().map_or("?".into(), |s| s.op.describe())
        )
    }
}

/// What a recovered case says about its log.
#[derive(Debug, Default)]
struct Verdict {
    acked: u64,
    lost: u64,
    /// It shows its unanswered last step too.
    beyond: bool,
    losses: Vec<String>,
    surprises: Vec<String>,
}

/// Compares a recovered case (`None`: not found) with its log.
fn judge(log: &CaseLog, me: &str, seen: Option<&Seen>) -> Verdict {
    let mut v = Verdict {
        acked: log.acked().count() as u64,
        ..Verdict::default()
    };
    let Some(seen) = seen else {
        v.lost = v.acked;
        v.losses.push(format!(
            "{} is gone (404 after the restart): its {} acknowledged changes are lost",
            log.name(),
            v.acked
        ));
        return v;
    };
    let (a, b) = log.states(me);
    if seen.shows(&a) {
        return v;
    }
    if b.as_ref().is_some_and(|b| seen.shows(b)) {
        v.beyond = true;
        return v;
    }
    let alt = b.clone().unwrap_or_else(|| a.clone());
    // Status: the close, or the seat.
    if seen.status != a.status() && seen.status != alt.status() {
        if a.closed {
            v.lost += 1;
            v.losses.push(format!(
                "{}: its acknowledged close is lost: it shows status {}",
                log.name(),
                seen.status
            ));
        } else if a.seated && seen.status == "new" {
            v.lost += 1;
            v.losses.push(format!(
                "{}: its acknowledged seat (request_help / join) is lost: it shows status new",
                log.name()
            ));
        } else {
            v.surprises.push(format!(
                "{}: status {}, expected {}",
                log.name(),
                seen.status,
                a.status()
            ));
        }
    }
    // Assignee: the last acknowledged change that set it.
    if seen.assignee != a.assignee && seen.assignee != alt.assignee {
        let setter = log
            .acked()
            .filter(|op| match op {
                Op::Create { assignee, .. } => assignee.is_some(),
                Op::Assign { .. } | Op::Join => true,
                _ => false,
            })
            .last();
        match setter {
            Some(op) => {
                v.lost += 1;
                v.losses.push(format!(
                    "{}: its acknowledged {} is lost: the assignee is {:?}, expected {:?}",
                    log.name(),
                    op.describe(),
                    seen.assignee,
                    a.assignee
                ));
            }
            None => v.surprises.push(format!(
                "{}: assignee {:?}, none was asked for",
                log.name(),
                seen.assignee
            )),
        }
    }
    // Transcript: every acknowledged line, in order.
    if seen.lines != a.lines && seen.lines != alt.lines {
        let missing: Vec<&(String, String)> =
            a.lines.iter().filter(|l| !seen.lines.contains(l)).collect();
        if !missing.is_empty() {
            v.lost += missing.len() as u64;
            v.losses.push(format!(
                "{}: {} acknowledged chat lines missing from the transcript (first: {} {:?}); the transcript has {} lines",
                log.name(),
                missing.len(),
                missing[0].0,
                missing[0].1,
                seen.lines.len()
            ));
        }
        let extra = seen.lines.iter().filter(|l| !alt.lines.contains(l)).count();
        if extra > 0 || missing.is_empty() {
            v.surprises.push(format!(
                "{}: transcript {:?}, expected {:?}",
                log.name(),
                seen.lines,
                a.lines
            ));
        }
    }
    if v.lost == 0 && v.surprises.is_empty() {
        v.surprises.push(format!(
            "{}: shows part of its unanswered last step: {seen:?}, expected {a:?} or {b:?}",
            log.name()
        ));
    }
    v.lost = v.lost.min(v.acked);
    v
}

// The clients ------------------------------------------------------------------

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
async fn ask(c: &mut Client, what: &str, msg: ClientMsg) -> anyhow::Result<ServerMsg> {
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
struct Ctx {
    round: u32,
    target: Target,
    addr: SocketAddr,
    token: String,
    /// The admin agent the token belongs to.
    me: String,
    /// Groups and their members (assignees).
    groups: Vec<(String, Vec<String>)>,
    modules: Vec<String>,
    /// Set just before the kill: a connection that ends after it ended
    /// because of it.
    killed: AtomicBool,
}

/// One client: an agent connection (the admin), a kept-alive HTTP
/// connection, customer connections for its sessions.
struct Driver {
    k: usize,
    ctx: Arc<Ctx>,
    rng: Rng,
    http: Http,
    logs: Vec<CaseLog>,
    errors: Vec<String>,
    /// Customers kept seated until the kill.
    customers: Vec<Client>,
    lines: u64,
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
            group,
            code: None,
            steps: vec![Step { op, acked: false }],
        });
        self.logs.len() - 1
    }

    /// A random case of this client whose answered state passes `ok`.
    fn pick(&mut self, ok: impl Fn(&CaseLog, &State) -> bool) -> Option<usize> {
        let me = self.ctx.me.clone();
        let candidates: Vec<usize> = (0..self.logs.len())
            .filter(|&i| {
                let l = &self.logs[i];
                l.code.is_some() && ok(l, &l.states(&me).0)
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
        let current = self.logs[i].states(&self.ctx.me).0.assignee;
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
async fn client_round(
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

// The dashboard -------------------------------------------------------------------

/// What the dashboard saw of the company's stream.
#[derive(Clone, Debug, Default)]
struct Watch {
    epoch: String,
    /// The last `seq` it processed.
    seq: u64,
    events: u64,
    /// Events whose `seq` was not the previous one + 1.
    gaps: u64,
    /// Events of another epoch.
    wrong_epoch: u64,
    first_gap: Option<String>,
}

/// Reads the dashboard's stream until the connection ends.
fn follow(mut c: Client, w: Arc<Mutex<Watch>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match c.recv(Duration::from_secs(3600)).await {
                Ok(Ok(r)) => {
                    if let Some(ServerMsg::Event { epoch, seq, .. }) = r.msg {
                        let mut w = w.lock().expect("watch lock");
                        if epoch != w.epoch {
                            w.wrong_epoch += 1;
                        }
                        if seq != w.seq + 1 {
                            w.gaps += 1;
                            let why = format!("after seq {} came seq {seq}", w.seq);
                            w.first_gap.get_or_insert(why);
                        }
                        w.seq = seq;
                        w.events += 1;
                    }
                }
                _ => return,
            }
        }
    })
}

/// How `subscribe` answered.
enum Answer {
    Resumed { epoch: String, seq: u64 },
    Snapshot { epoch: String, seq: u64 },
}

/// A new admin dashboard: `subscribe`, with `resume` when given.
async fn subscribe(
    target: &Target,
    token: &str,
    resume: Option<StreamPos>,
) -> anyhow::Result<(Client, Answer)> {
    let mut c = Client::connect(target).await?;
    c.hello_agent(token).await?;
    let msg = ClientMsg::Subscribe {
        group: None,
        resume,
    };
    let answer = match ask(&mut c, "subscribe", msg).await? {
        ServerMsg::Resumed { epoch, seq } => Answer::Resumed { epoch, seq },
        ServerMsg::Snapshot { epoch, seq, .. } => Answer::Snapshot { epoch, seq },
        other => bail!("subscribe: expected resumed or snapshot, got {other:?}"),
    };
    Ok((c, answer))
}

// The run -------------------------------------------------------------------------

/// A case checked once, as it was then.
struct Checked {
    log: CaseLog,
    seen: Seen,
    /// Its acknowledged changes that were found.
    recovered: u64,
}

/// Everything a run counts.
#[derive(Default)]
struct Tally {
    rounds: u32,
    acked: Counts,
    recovered: u64,
    lost: u64,
    losses: Vec<String>,
    surprises: Vec<String>,
    surprise_count: u64,
    /// Cases showing their unanswered last change.
    beyond: u64,
    /// Changes whose answer never came (at most one per client and round).
    unanswered: u64,
    /// Creations whose answer never came but whose case exists.
    unanswered_found: u64,
    resumed: u64,
    snapshots: u64,
    epoch_changed: u64,
    /// Resumes answered `resumed` at a seq behind the one the dashboard saw.
    went_back: u64,
    /// What went wrong with resumes and the epoch, first ones.
    resume_issues: Vec<String>,
    errors: u64,
    first_errors: Vec<String>,
    drive: Duration,
    /// Per round: the kill delay, the changes acknowledged, the restart.
    per_round: Vec<Value>,
    aborted: Option<String>,
}

impl Tally {
    fn list_loss(&mut self, why: String) {
        if self.losses.len() < LISTED {
            self.losses.push(why);
        }
    }

    /// `n` changes counted as recovered turn out lost.
    fn lose(&mut self, n: u64, why: String) {
        let n = n.min(self.recovered);
        self.lost += n;
        self.recovered -= n;
        self.list_loss(why);
    }

    fn surprise(&mut self, why: String) {
        self.surprise_count += 1;
        if self.surprises.len() < LISTED {
            self.surprises.push(why);
        }
    }

    fn resume_issue(&mut self, why: String) {
        if self.resume_issues.len() < LISTED {
            self.resume_issues.push(why);
        }
    }

    fn error(&mut self, why: String) {
        self.errors += 1;
        if self.first_errors.len() < LISTED {
            self.first_errors.push(why);
        }
    }
}

struct Run {
    opts: CrashOpts,
    data: PathBuf,
    rng: Rng,
    broker: Broker,
    me: String,
    groups: Vec<(String, Vec<String>)>,
    epoch: String,
    /// The dashboard following the current broker.
    dash: Option<(JoinHandle<()>, Arc<Mutex<Watch>>)>,
    checked: HashMap<String, Checked>,
    /// Codes whose creation was never answered and that were found.
    orphans: HashSet<String>,
    restarts: hdrhistogram::Histogram<u64>,
    first_start: Duration,
    events: u64,
    gaps: u64,
    first_gap: Option<String>,
    wrong_epoch: u64,
    t: Tally,
}

impl Run {
    fn target(&self) -> anyhow::Result<Target> {
        Target::new(&self.broker.url(), self.opts.source_addrs)
    }

    /// One round: drive, kill, restart, check.
    async fn round(&mut self, r: u32) -> anyhow::Result<()> {
        let ctx = Arc::new(Ctx {
            round: r,
            target: self.target()?,
            addr: self.broker.addr,
            token: self.opts.token.clone(),
            me: self.me.clone(),
            groups: self.groups.clone(),
            modules: self.opts.modules.clone(),
            killed: AtomicBool::new(false),
        });
        let (ready_tx, mut ready) = tokio::sync::mpsc::channel(self.opts.clients);
        let (go_tx, go) = tokio::sync::watch::channel(false);
        let tasks: Vec<JoinHandle<Driver>> = (0..self.opts.clients)
            .map(|k| {
                let d = Driver {
                    k,
                    ctx: ctx.clone(),
                    rng: Rng::new(self.rng.next_u64()),
                    http: Http::new(ctx.addr),
                    logs: Vec::new(),
                    errors: Vec::new(),
                    customers: Vec::new(),
                    lines: 0,
                };
                tokio::spawn(client_round(d, ready_tx.clone(), go.clone()))
            })
            .collect();
        drop(ready_tx);
        let all_ready = async {
            for _ in 0..self.opts.clients {
                if ready.recv().await.is_none() {
                    break;
                }
            }
        };
        if tokio::time::timeout(WIND_DOWN, all_ready).await.is_err() {
            bail!("round {r}: the clients did not connect within {WIND_DOWN:?}");
        }

        // Drive until the kill.
        let delay = Duration::from_millis(self.rng.range(self.opts.min_ms, self.opts.max_ms));
        let _ = go_tx.send(true);
        tokio::time::sleep(delay).await;
        self.t.drive += delay;
        if let Some(status) = self.broker.exited() {
            bail!(
                "round {r}: the broker exited by itself ({status}); {}",
                self.broker.output()
            );
        }
        ctx.killed.store(true, Ordering::SeqCst);
        self.broker.kill().await?;

        let mut logs = Vec::new();
        for task in tasks {
            let abort = task.abort_handle();
            match tokio::time::timeout(WIND_DOWN, task).await {
                Ok(Ok(d)) => {
                    for e in d.errors {
                        self.t.error(e);
                    }
                    logs.extend(d.logs);
                }
                Ok(Err(e)) => self
                    .t
                    .error(format!("round {r}: a client task failed: {e}")),
                Err(_) => {
                    abort.abort();
                    self.t.error(format!(
                        "round {r}: a client did not notice the kill within {WIND_DOWN:?}"
                    ));
                }
            }
        }
        let last = self.end_dashboard().await;

        // Restart on the same directory.
        let (broker, took) = Broker::start(&self.opts, &self.data)
            .await
            .with_context(|| format!("round {r}: restart after the kill"))?;
        self.broker = broker;
        self.restarts
            .saturating_record((took.as_micros() as u64).max(1));

        // The dashboard resumes where it left off.
        let target = self.target()?;
        let resume = StreamPos {
            epoch: last.epoch.clone(),
            seq: last.seq,
        };
        let (c, answer) = subscribe(&target, &self.opts.token, Some(resume))
            .await
            .with_context(|| format!("round {r}: the dashboard's resume"))?;
        let (epoch, from) = match answer {
            Answer::Resumed { epoch, seq } => {
                self.t.resumed += 1;
                if seq < last.seq {
                    self.t.went_back += 1;
                    self.t.resume_issue(format!(
                        "round {r}: resumed at seq {seq}, behind the seq {} the dashboard saw",
                        last.seq
                    ));
                }
                (epoch, last.seq)
            }
            Answer::Snapshot { epoch, seq } => {
                self.t.snapshots += 1;
                self.t.resume_issue(format!(
                    "round {r}: resume {{epoch {}, seq {}}} was answered with a snapshot (epoch {epoch}, seq {seq})",
                    last.epoch, last.seq
                ));
                (epoch, seq)
            }
        };
        if epoch != self.epoch {
            self.t.epoch_changed += 1;
            self.t.resume_issue(format!(
                "round {r}: the epoch changed from {} to {epoch}",
                self.epoch
            ));
        }
        self.start_dashboard(c, epoch, from);

        // Every acknowledged change is there.
        let before = self.t.acked.total();
        self.check(r, logs).await?;
        self.t.per_round.push(json!({
            "round": r,
            "kill_after_ms": delay.as_millis() as u64,
            "acknowledged": self.t.acked.total() - before,
            "restart_ms": round3(took.as_secs_f64() * 1000.0),
        }));
        if r.is_multiple_of(RECHECK_EVERY) || r == self.opts.rounds {
            self.recheck(r, r == self.opts.rounds).await?;
        }
        self.t.rounds = r;
        Ok(())
    }

    fn start_dashboard(&mut self, c: Client, epoch: String, seq: u64) {
        let w = Arc::new(Mutex::new(Watch {
            epoch,
            seq,
            ..Watch::default()
        }));
        self.dash = Some((follow(c, w.clone()), w));
    }

    /// Waits for the dashboard to see its connection end; what it saw.
    async fn end_dashboard(&mut self) -> Watch {
        let Some((task, w)) = self.dash.take() else {
            return Watch::default();
        };
        let abort = task.abort_handle();
        if tokio::time::timeout(WIND_DOWN, task).await.is_err() {
            abort.abort();
        }
        let w = w.lock().expect("watch lock").clone();
        self.events += w.events;
        self.gaps += w.gaps;
        self.wrong_epoch += w.wrong_epoch;
        if self.first_gap.is_none() {
            self.first_gap = w.first_gap.clone();
        }
        w
    }

    /// A case and (when it has chat) its transcript, as the admin sees
    /// them; `None` for 404.
    async fn seen(&self, http: &mut Http, code: &str, lines: bool) -> anyhow::Result<Option<Seen>> {
        let token = &self.opts.token;
        let r = http.get(&format!("/v1/cases/{code}"), token).await?;
        let case = match r.status {
            200 => r.json(),
            404 => return Ok(None),
            s => bail!("GET /v1/cases/{code}: {s} {}", r.text()),
        };
        let lines = if lines {
            self.transcript(http, code).await?
        } else {
            Vec::new()
        };
        Ok(Some(Seen {
            status: case["status"].as_str().unwrap_or("?").to_string(),
            assignee: case["assignee"].as_str().map(str::to_string),
            lines,
        }))
    }

    async fn transcript(
        &self,
        http: &mut Http,
        code: &str,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let path = format!("/v1/cases/{code}/transcript");
        let r = http.get(&path, &self.opts.token).await?;
        if r.status != 200 {
            bail!("GET {path}: {} {}", r.status, r.text());
        }
        Ok(r.json()["messages"]
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
            .unwrap_or_default())
    }

    /// Checks the round's cases against the restarted broker.
    async fn check(&mut self, r: u32, logs: Vec<CaseLog>) -> anyhow::Result<()> {
        let mut http = Http::new(self.broker.addr);
        for log in logs {
            for op in log.acked() {
                self.t.acked.add(op);
            }
            self.t.unanswered += log.steps.iter().filter(|s| !s.acked).count() as u64;
            let Some(code) = log.code.clone() else {
                continue;
            };
            let seen = self
                .seen(&mut http, &code, log.has_chat())
                .await
                .with_context(|| format!("round {r}: checking {code}"))?;
            let v = judge(&log, &self.me, seen.as_ref());
            self.t.recovered += v.acked - v.lost;
            self.t.beyond += u64::from(v.beyond);
            self.t.lost += v.lost;
            for why in v.losses {
                self.t.list_loss(format!("round {r}: {why}"));
            }
            for why in v.surprises {
                self.t.surprise(format!("round {r}: {why}"));
            }
            if let Some(seen) = seen {
                self.checked.insert(
                    code,
                    Checked {
                        log,
                        seen,
                        recovered: v.acked - v.lost,
                    },
                );
            }
        }
        Ok(())
    }

    /// Every case checked before must still be as it was: status and
    /// assignee from the listing, with `full` the transcripts too. Codes
    /// nobody was told of (creations whose answer the kill took) are
    /// counted.
    async fn recheck(&mut self, r: u32, full: bool) -> anyhow::Result<()> {
        let mut http = Http::new(self.broker.addr);
        let mut all: HashMap<String, Value> = HashMap::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/cases?limit=1000&cursor={c}"),
                None => "/v1/cases?limit=1000".to_string(),
            };
            let page = http.get(&path, &self.opts.token).await?;
            if page.status != 200 {
                bail!("GET {path}: {} {}", page.status, page.text());
            }
            let page = page.json();
            for c in page["cases"].as_array().into_iter().flatten() {
                if let Some(code) = c["code"].as_str() {
                    all.insert(code.to_string(), c.clone());
                }
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let mut gone = Vec::new();
        let codes: Vec<String> = self.checked.keys().cloned().collect();
        for code in codes {
            let Some(c) = self.checked.get(&code) else {
                continue;
            };
            let what = c.log.name();
            let Some(case) = all.get(&code) else {
                let n = c.recovered;
                self.t.lose(
                    n,
                    format!("round {r}: {what}, checked in round {}, is gone: its {n} acknowledged changes are lost", c.log.round),
                );
                gone.push(code);
                continue;
            };
            let mut now = Seen {
                status: case["status"].as_str().unwrap_or("?").to_string(),
                assignee: case["assignee"].as_str().map(str::to_string),
                lines: c.seen.lines.clone(),
            };
            if full && c.log.has_chat() {
                now.lines = self.transcript(&mut http, &code).await?;
            }
            if now != c.seen {
                let was = format!("{:?}", c.seen);
                let round = c.log.round;
                self.t.lose(
                    1,
                    format!("round {r}: {what} changed since its check in round {round}: it was {was}, now {now:?}"),
                );
                gone.push(code);
            }
        }
        for code in gone {
            self.checked.remove(&code);
        }
        for code in all.keys() {
            if !self.checked.contains_key(code) && self.orphans.insert(code.clone()) {
                self.t.unanswered_found += 1;
            }
        }
        Ok(())
    }
}

/// A fresh directory under the temp dir, removed when dropped unless kept.
struct Scratch {
    root: PathBuf,
    keep: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// The admin behind `token`, its groups and their members (from
/// `GET /v1/agents`).
async fn discover(
    broker: &Broker,
    opts: &CrashOpts,
) -> anyhow::Result<(String, Vec<(String, Vec<String>)>)> {
    let target = Target::new(&broker.url(), opts.source_addrs)?;
    let mut c = Client::connect(&target).await?;
    let hello = ClientMsg::Hello {
        role: casebroker::protocol::Role::Agent,
        token: Some(opts.token.clone()),
    };
    let info = match ask(&mut c, "hello", hello).await? {
        ServerMsg::Welcome {
            agent: Some(info), ..
        } => info,
        other => bail!("hello: expected welcome, got {other:?}"),
    };
    c.close().await;
    if !info.admin {
        bail!(
            "--token belongs to {}, who is not an admin: the crash scenario assigns and closes cases of every group",
            info.id
        );
    }
    let mut http = Http::new(broker.addr);
    let r = http.get("/v1/agents", &opts.token).await?;
    if r.status != 200 {
        bail!("GET /v1/agents: {} {}", r.status, r.text());
    }
    let agents = r.json();
    let groups = info
        .groups
        .iter()
        .map(|g| {
            let members = agents["agents"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| {
                    a["groups"]
                        .as_array()
                        .is_some_and(|gs| gs.iter().any(|x| x == g.as_str()))
                })
                .filter_map(|a| a["id"].as_str().map(str::to_string))
                .collect();
            (g.clone(), members)
        })
        .collect();
    Ok((info.id, groups))
}

/// Runs the scenario.
pub async fn run(opts: CrashOpts) -> anyhow::Result<Report> {
    if opts.min_ms > opts.max_ms {
        bail!(
            "--min-ms {} is more than --max-ms {}",
            opts.min_ms,
            opts.max_ms
        );
    }
    if opts.modules.is_empty() {
        bail!("--module: at least one module key is needed");
    }
    if !opts.broker.is_file() {
        bail!(
            "no broker binary at {} (build it with `cargo build --release -p casebroker`, or pass --broker)",
            opts.broker.display()
        );
    }
    if !opts.config.is_file() {
        bail!(
            "no config file at {} (pass --config)",
            opts.config.display()
        );
    }
    let (data, scratch) = match &opts.data_dir {
        Some(d) => (d.clone(), None),
        None => {
            let root = std::env::temp_dir().join(format!(
                "casebroker-crash-{}-{:x}",
                std::process::id(),
                fresh_seed()
            ));
            std::fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
            let data = root.join("data");
            (
                data,
                Some(Scratch {
                    root,
                    keep: opts.keep,
                }),
            )
        }
    };
    let started = Instant::now();
    let deadline = started + opts.time_limit;
    let (broker, first_start) = Broker::start(&opts, &data).await?;
    let (me, groups) = discover(&broker, &opts).await?;
    let target = Target::new(&broker.url(), opts.source_addrs)?;
    let (dash, answer) = subscribe(&target, &opts.token, None).await?;
    let (epoch, seq) = match answer {
        Answer::Snapshot { epoch, seq } | Answer::Resumed { epoch, seq } => (epoch, seq),
    };
    let mut run = Run {
        rng: Rng::new(opts.seed),
        data: data.clone(),
        broker,
        me,
        groups,
        epoch: epoch.clone(),
        dash: None,
        checked: HashMap::new(),
        orphans: HashSet::new(),
        restarts: histogram(),
        first_start,
        events: 0,
        gaps: 0,
        first_gap: None,
        wrong_epoch: 0,
        t: Tally::default(),
        opts,
    };
    run.start_dashboard(dash, epoch, seq);

    let bar = Progress::new(run.opts.progress, u64::from(run.opts.rounds));
    bar.phase("rounds", u64::from(run.opts.rounds));
    let rounds = async {
        for r in 1..=run.opts.rounds {
            if Instant::now() > deadline {
                run.t.aborted = Some(format!(
                    "the time limit of {:?} passed after {} rounds",
                    run.opts.time_limit,
                    r - 1
                ));
                break;
            }
            if let Err(e) = run.round(r).await {
                run.t.aborted = Some(format!("{e:#}"));
                break;
            }
            let p50 = Summary::of(&run.restarts).p50_ms;
            bar.set(
                u64::from(r),
                format!(
                    "{} acknowledged, {} lost, restart p50 {} ms",
                    thousands(run.t.acked.total()),
                    run.t.lost,
                    fmt_ms(p50)
                ),
            );
        }
        // A run cut short still checks every case it checked once.
        let done = run.t.rounds;
        if done > 0 && done < run.opts.rounds && run.broker.exited().is_none() {
            let last = run.recheck(done, true).await;
            if let Err(e) = last {
                run.t
                    .error(format!("the final check after round {done}: {e:#}"));
            }
        }
    };
    let interrupted = tokio::select! {
        () = rounds => false,
        _ = tokio::signal::ctrl_c() => true,
    };
    bar.finish();
    if interrupted {
        // The broker and the scratch directory go with `run` and `scratch`.
        bail!("interrupted");
    }
    let _ = run.broker.kill().await;
    run.end_dashboard().await;
    let kept = match &scratch {
        Some(s) => s.keep,
        None => true,
    };
    drop(scratch);
    Ok(report(&run, &data, kept, started.elapsed()))
}

fn report(run: &Run, data: &Path, kept: bool, took: Duration) -> Report {
    let o = &run.opts;
    let t = &run.t;
    let acked = t.acked.total();
    let restart = Summary::of(&run.restarts);
    let mut r = Report::new(format!(
        "crash: {} rounds, {} clients, SIGKILL after {}..{} ms",
        o.rounds, o.clients, o.min_ms, o.max_ms
    ));
    r.row(
        "rounds (kill + restart)",
        format!("{} of {}", t.rounds, o.rounds),
    );
    let a = &t.acked;
    r.row(
        "acknowledged changes",
        format!(
            "{} ({} creates, {} assigns, {} joins, {} chat lines, {} closes)",
            thousands(acked),
            thousands(a.creates),
            thousands(a.assigns),
            thousands(a.joins),
            thousands(a.chats),
            thousands(a.closes)
        ),
    );
    let drive = t.drive.as_secs_f64();
    r.row("  while driving", per_sec(acked as f64 / drive.max(1e-9)));
    r.row("recovered", thousands(t.recovered));
    r.row("lost", thousands(t.lost));
    if let Some(first) = t.losses.first() {
        r.row("first loss", first);
    }
    r.row(
        "unanswered changes",
        format!(
            "{} ({} shown after the restart, {} unanswered creations found)",
            t.unanswered, t.beyond, t.unanswered_found
        ),
    );
    if t.surprise_count > 0 {
        r.row("unexpected states", t.surprise_count);
        if let Some(first) = t.surprises.first() {
            r.row("first unexpected", first);
        }
    }
    r.row(
        "resume after restart",
        format!("{} resumed, {} snapshot", t.resumed, t.snapshots),
    );
    if let Some(first) = t.resume_issues.first() {
        r.row("first resume failure", first);
    }
    r.row(
        "epoch",
        if t.epoch_changed == 0 {
            format!("unchanged ({})", run.epoch)
        } else {
            format!("changed {} times", t.epoch_changed)
        },
    );
    r.row(
        "dashboard events",
        format!("{} ({} out of sequence)", thousands(run.events), run.gaps),
    );
    r.row("restart p50/p99/p999/max", restart.line());
    r.row("first start", format!("{} ms", fmt_ms(first_ms(run))));
    r.row("errors", t.errors);
    if let Some(first) = t.first_errors.first() {
        r.row("first error", first);
    }
    if let Some(why) = &t.aborted {
        r.row("aborted", why);
    }
    r.row(
        "data directory",
        format!(
            "{}{}",
            data.display(),
            if kept { " (kept)" } else { " (removed)" }
        ),
    );
    r.row("seed", o.seed);
    r.row("took", format!("{:.1} s", took.as_secs_f64()));

    let mut restart_json = restart.to_json();
    if let Value::Object(m) = &mut restart_json {
        m.insert("count".into(), run.restarts.len().into());
    }
    let j = |v: &Vec<String>| Value::Array(v.iter().cloned().map(Value::from).collect());
    let mut m = Map::new();
    m.insert("scenario".into(), "crash".into());
    m.insert("rounds".into(), o.rounds.into());
    m.insert("rounds_done".into(), t.rounds.into());
    m.insert("clients".into(), o.clients.into());
    m.insert("min_ms".into(), o.min_ms.into());
    m.insert("max_ms".into(), o.max_ms.into());
    m.insert("seed".into(), o.seed.into());
    m.insert("acknowledged".into(), acked.into());
    m.insert("acknowledged_by_kind".into(), t.acked.json());
    m.insert(
        "acknowledged_per_sec".into(),
        round3(acked as f64 / drive.max(1e-9)).into(),
    );
    m.insert("recovered".into(), t.recovered.into());
    m.insert("lost".into(), t.lost.into());
    m.insert("losses".into(), j(&t.losses));
    m.insert("unexpected".into(), t.surprise_count.into());
    m.insert("unexpected_states".into(), j(&t.surprises));
    m.insert("unanswered".into(), t.unanswered.into());
    m.insert("unanswered_shown".into(), t.beyond.into());
    m.insert(
        "unanswered_creations_found".into(),
        t.unanswered_found.into(),
    );
    m.insert("resumed".into(), t.resumed.into());
    m.insert("snapshot".into(), t.snapshots.into());
    m.insert("resumed_behind".into(), t.went_back.into());
    m.insert("resume_failures".into(), j(&t.resume_issues));
    m.insert("epoch".into(), run.epoch.clone().into());
    m.insert("epoch_changed".into(), t.epoch_changed.into());
    m.insert("events".into(), run.events.into());
    m.insert("out_of_sequence".into(), run.gaps.into());
    m.insert("first_out_of_sequence".into(), run.first_gap.clone().into());
    m.insert("wrong_epoch_events".into(), run.wrong_epoch.into());
    m.insert("restart".into(), restart_json.clone());
    m.insert("per_round".into(), Value::Array(t.per_round.clone()));
    for k in ["p50_ms", "p99_ms", "p999_ms", "max_ms"] {
        m.insert(k.into(), restart_json[k].clone());
    }
    m.insert("first_start_ms".into(), round3(first_ms(run)).into());
    m.insert("errors".into(), t.errors.into());
    m.insert("first_errors".into(), j(&t.first_errors));
    m.insert("aborted".into(), t.aborted.clone().into());
    m.insert("data_dir".into(), data.display().to_string().into());
    m.insert("kept".into(), kept.into());
    m.insert("seconds".into(), round3(took.as_secs_f64()).into());
    r.json = m;
    r.latency.push(("restart".into(), run.restarts.clone()));
    r.failed = t.lost > 0
        || t.surprise_count > 0
        || t.errors > 0
        || t.snapshots > 0
        || t.went_back > 0
        || t.epoch_changed > 0
        || run.gaps > 0
        || run.wrong_epoch > 0
        || t.aborted.is_some()
        || t.rounds < o.rounds;
    r
}

fn first_ms(run: &Run) -> f64 {
    run.first_start.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(steps: Vec<(Op, bool)>) -> CaseLog {
        CaseLog {
            round: 1,
            client: 0,
            group: Some("support".into()),
            code: Some("s12-345-678".into()),
            steps: steps
                .into_iter()
                .map(|(op, acked)| Step { op, acked })
                .collect(),
        }
    }

    fn seen(status: &str, assignee: Option<&str>, lines: &[(&str, &str)]) -> Seen {
        Seen {
            status: status.into(),
            assignee: assignee.map(str::to_string),
            lines: lines
                .iter()
                .map(|(r, t)| (r.to_string(), t.to_string()))
                .collect(),
        }
    }

    fn chat(role: &'static str, text: &str) -> Op {
        Op::Chat {
            role,
            text: text.into(),
        }
    }

    #[test]
    fn a_case_showing_its_answered_steps_or_one_more_is_recovered() {
        let l = log(vec![
            (Op::Help, true),
            (Op::Join, true),
            (chat("agent", "a"), true),
            (chat("customer", "b"), false),
        ]);
        let v = judge(
            &l,
            "admin",
            Some(&seen("pending", Some("admin"), &[("agent", "a")])),
        );
        assert_eq!((v.acked, v.lost, v.beyond), (3, 0, false), "{v:?}");
        let both = [("agent", "a"), ("customer", "b")];
        let v = judge(&l, "admin", Some(&seen("pending", Some("admin"), &both)));
        assert_eq!((v.lost, v.beyond), (0, true), "{v:?}");
        assert!(v.surprises.is_empty(), "{v:?}");
    }

    #[test]
    fn missing_changes_are_counted_as_lost() {
        let l = log(vec![
            (
                Op::Create {
                    http: true,
                    assignee: None,
                },
                true,
            ),
            (
                Op::Assign {
                    to: "agent-1".into(),
                    http: false,
                },
                true,
            ),
            (Op::Close { http: true }, true),
        ]);
        let v = judge(&l, "admin", None);
        assert_eq!((v.acked, v.lost), (3, 3), "{v:?}");
        let v = judge(&l, "admin", Some(&seen("new", None, &[])));
        assert_eq!(v.lost, 2, "{v:?}");
        assert_eq!(v.losses.len(), 2, "{v:?}");
        assert!(v.losses[0].contains("close"), "{v:?}");
        assert!(v.losses[1].contains("assign to agent-1"), "{v:?}");
        let v = judge(&l, "admin", Some(&seen("closed", Some("agent-1"), &[])));
        assert_eq!(v.lost, 0, "{v:?}");

        let s = log(vec![
            (Op::Help, true),
            (Op::Join, true),
            (chat("agent", "a"), true),
            (chat("customer", "b"), true),
        ]);
        let v = judge(
            &s,
            "admin",
            Some(&seen("pending", Some("admin"), &[("agent", "a")])),
        );
        assert_eq!(v.lost, 1, "{v:?}");
        assert!(v.losses[0].contains("\"b\""), "{v:?}");
    }

    #[test]
    fn states_nobody_asked_for_are_surprises() {
        let l = log(vec![(
            Op::Create {
                http: false,
                assignee: None,
            },
            true,
        )]);
        let v = judge(&l, "admin", Some(&seen("closed", None, &[])));
        assert_eq!(v.lost, 0, "{v:?}");
        assert_eq!(v.surprises.len(), 1, "{v:?}");
    }

    #[test]
    fn the_generator_stays_in_range() {
        let mut r = Rng::new(7);
        for _ in 0..1000 {
            let x = r.range(50, 500);
            assert!((50..=500).contains(&x));
        }
        assert_eq!(r.range(5, 5), 5);
        let mut a = Rng::new(1);
        let mut b = Rng::new(1);
        assert_eq!(a.next_u64(), b.next_u64());
    }
}
