//! The `queue-depth` scenario: does the cost of a change grow with the
//! size of a company's queue? It measures the rate and latency of
//! `create_case`, `assign` and `close` twice: against the group as found
//! ("empty"), and again ("deep") after filling the group with `--cases`
//! open cases, `--waiting` of them with a customer seated and waiting
//! (`request_help`, reading its `queue` pushes). It reports deep / empty
//! for each operation, then deletes every case it created and closes the
//! customer sockets (not timed), so repeated runs leave the broker as
//! found.
//!
//! Measuring keeps the queue's size steady: each round creates up to
//! `--batch` cases at the tail of the line, assigns each to `--assignee`
//! and back to the line, closes them and deletes them (the delete is not
//! timed). An operation's clock runs only while it is being measured: a
//! timed step stops sending once its operation has had `--seconds` in all
//! (the commands in flight are still answered and counted), and a phase
//! ends when all three have. Creation goes on, untimed, while another
//! operation still needs cases. Commands are pipelined on `--connections`
//! agent connections, each with at most `--window` commands without reply,
//! and replies are matched by `id`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use casebroker::case::Status;
use casebroker::protocol::{ClientMsg, CreateCase, RequestHelp, ServerMsg};
use futures::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, REPLY_TIMEOUT, encode};
use crate::report::{Progress, Report, per_sec, thousands};
use crate::scan;
use crate::stats::{Summary, fmt_ms, histogram, round3};
use crate::target::{Target, Ws};

/// The measured operations, in the order of a round.
pub const OPS: [&str; 3] = ["create_case", "assign", "close"];
/// The deep / empty rate ratio each operation should reach.
pub const TARGET_RATIO: f64 = 0.8;
/// The longest the bulk creation of the fill may take; past it the fill
/// stops (a failure) and the deep phase runs behind the cases created.
pub const FILL_LIMIT: Duration = Duration::from_secs(900);
/// The shortest bound of the clean-up; it is allowed three times the fill's
/// time when that is longer (removing a case from a deep line may cost as
/// much as adding it).
pub const CLEANUP_LIMIT: Duration = Duration::from_secs(1800);
/// Customer connections opened at once.
const CONNECT_AT_ONCE: usize = 64;
/// Cases created (fill) or deleted (clean-up) per pipelined step, between
/// progress updates and deadline checks.
const CHUNK: usize = 1_000;

/// The longest one measuring phase may take: its three operations' clocks
/// plus the untimed steps, with a wide margin.
pub fn phase_limit(seconds: u64) -> Duration {
    Duration::from_secs(10 * seconds + 60)
}

/// The clean-up's bound after a fill that took `fill`.
pub fn cleanup_limit(fill: Duration) -> Duration {
    CLEANUP_LIMIT.max(fill * 3)
}

/// The bound of a whole run in seconds: two phases, the fill and the
/// clean-up.
pub fn time_bound(seconds: u64) -> u64 {
    let fill = FILL_LIMIT + Duration::from_secs(60);
    (2 * phase_limit(seconds) + fill + cleanup_limit(fill)).as_secs()
}

/// What a queue-depth run is asked to do.
#[derive(Clone, Debug)]
pub struct QueueDepthOpts {
    pub target: Target,
    pub token: String,
    pub group: String,
    /// Module keys of the waiting customers, used in turn; they must map
    /// to `group`.
    pub modules: Vec<String>,
    /// Open cases the fill adds, waiting customers included.
    pub cases: usize,
    /// Cases of the fill with a seated, waiting customer.
    pub waiting: usize,
    /// Measured seconds per operation and phase.
    pub seconds: u64,
    pub connections: usize,
    /// Commands without reply per agent connection.
    pub window: usize,
    /// Cases per measuring round (at most `cases / 10`).
    pub batch: usize,
    /// The agent `assign` hands cases to before returning them to the line.
    pub assignee: String,
    pub progress: bool,
}

impl QueueDepthOpts {
    /// The round size actually used: `batch`, at most a tenth of the fill.
    pub fn round_size(&self) -> usize {
        self.batch.min(self.cases / 10).max(1)
    }
}

/// An agent connection that pipelines commands.
struct Agent {
    ws: Ws,
    next_id: u64,
}

impl Agent {
    async fn connect(target: &Target, token: &str) -> anyhow::Result<Agent> {
        let mut c = Client::connect(target).await?;
        c.hello_agent(token).await?;
        Ok(Agent {
            ws: c.into_inner(),
            next_id: 1,
        })
    }

    async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }
}

/// What one connection's share of a step gave.
struct Piped {
    /// The code each command's reply names, in command order (`None` for
    /// a refused command).
    codes: Vec<Option<String>>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    latency: Histogram<u64>,
}

/// Sends `cmds` on one connection, at most `window` without reply, and
/// no more once `until` has passed (the rest are not sent); a reply of type
/// `expect` is a success, anything else answering a command is a refusal.
/// Fails when the connection ends or a reply is more than
/// [`REPLY_TIMEOUT`] late.
async fn pipe(
    agent: &mut Agent,
    cmds: Vec<ClientMsg>,
    window: usize,
    expect: &str,
    until: Option<Instant>,
) -> anyhow::Result<Piped> {
    let mut out = Piped {
        codes: vec![None; cmds.len()],
        ok: 0,
        errors: 0,
        first_error: None,
        latency: histogram(),
    };
    let mut inflight: HashMap<u64, (usize, Instant)> = HashMap::with_capacity(window);
    let mut cmds = cmds.into_iter().enumerate();
    let mut more = true;
    loop {
        while more && inflight.len() < window {
            if until.is_some_and(|u| Instant::now() >= u) {
                more = false;
                break;
            }
            let Some((i, msg)) = cmds.next() else {
                more = false;
                break;
            };
            let id = agent.next_id;
            agent.next_id += 1;
            inflight.insert(id, (i, Instant::now()));
            agent
                .ws
                .feed(Message::text(encode(msg, Some(id))))
                .await
                .context("agent send")?;
        }
        agent.ws.flush().await.context("agent send")?;
        if inflight.is_empty() {
            return Ok(out);
        }
        let Ok(first) = tokio::time::timeout(REPLY_TIMEOUT, agent.ws.next()).await else {
            bail!(
                "{} replies missing after {REPLY_TIMEOUT:?} (expected {expect})",
                inflight.len()
            );
        };
        // Handle the awaited message and whatever else is already there,
        // then top the window up in one write.
        let mut next = Some(first);
        while let Some(m) = next.take() {
            let text = match m {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(frame))) => bail!(
                    "the broker closed an agent connection ({}) with {} replies outstanding",
                    frame.map(|f| u16::from(f.code)).unwrap_or(1005),
                    inflight.len()
                ),
                Some(Ok(_)) => {
                    next = agent.ws.next().now_or_never();
                    continue;
                }
                Some(Err(e)) => bail!("agent connection failed: {e}"),
                None => bail!(
                    "agent connection ended with {} replies outstanding",
                    inflight.len()
                ),
            };
            let b = text.as_bytes();
            if let Some(id) = scan::id(b)
                && let Some((i, sent)) = inflight.remove(&id)
            {
                if scan::msg_type(b) == Some(expect) {
                    out.latency
                        .saturating_record((sent.elapsed().as_micros() as u64).max(1));
                    out.ok += 1;
                    out.codes[i] = scan::code(b).map(str::to_string);
                } else {
                    out.errors += 1;
                    out.first_error
                        .get_or_insert_with(|| text.as_str().to_string());
                }
            }
            next = agent.ws.next().now_or_never();
        }
    }
}

/// What one step (every connection's share) gave.
struct Step {
    /// The codes the successful replies name.
    codes: Vec<String>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    latency: Histogram<u64>,
    /// From the first command sent to the last reply.
    secs: f64,
}

/// Runs `shares[c]` on connection `c`, all connections at once, sending
/// nothing new after `until`.
async fn step(
    agents: &mut [Agent],
    shares: Vec<Vec<ClientMsg>>,
    window: usize,
    expect: &str,
    until: Option<Instant>,
) -> anyhow::Result<Step> {
    let started = Instant::now();
    let results = futures::future::join_all(
        agents
            .iter_mut()
            .zip(shares)
            .map(|(a, cmds)| pipe(a, cmds, window, expect, until)),
    )
    .await;
    let mut s = Step {
        codes: Vec::new(),
        ok: 0,
        errors: 0,
        first_error: None,
        latency: histogram(),
        secs: started.elapsed().as_secs_f64(),
    };
    for r in results {
        let p = r?;
        s.codes.extend(p.codes.into_iter().flatten());
        s.ok += p.ok;
        s.errors += p.errors;
        if s.first_error.is_none() {
            s.first_error = p.first_error;
        }
        s.latency.add(&p.latency).expect("same bounds");
    }
    Ok(s)
}

/// Deals `items` round-robin into `n` shares.
fn deal<T>(items: impl IntoIterator<Item = T>, n: usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = (0..n.max(1)).map(|_| Vec::new()).collect();
    let len = out.len();
    for (i, item) in items.into_iter().enumerate() {
        out[i % len].push(item);
    }
    out
}

fn create(group: &str, name: String) -> ClientMsg {
    ClientMsg::CreateCase(CreateCase {
        group: group.to_string(),
        name: Some(name),
        ..CreateCase::default()
    })
}

fn deletes(codes: &[String]) -> impl Iterator<Item = ClientMsg> + '_ {
    codes
        .iter()
        .map(|code| ClientMsg::Delete { code: code.clone() })
}

/// One operation's measurement in one phase.
struct OpStats {
    ops: u64,
    errors: u64,
    secs: f64,
    latency: Histogram<u64>,
}

impl OpStats {
    fn new() -> OpStats {
        OpStats {
            ops: 0,
            errors: 0,
            secs: 0.0,
            latency: histogram(),
        }
    }

    fn add(&mut self, s: &Step) {
        self.ops += s.ok;
        self.errors += s.errors;
        self.secs += s.secs;
        self.latency.add(&s.latency).expect("same bounds");
    }

    /// When a step of this operation must stop sending: once its clock has
    /// `secs` in all (from now), and never past `limit`.
    fn until(&self, secs: f64, limit: Instant) -> Instant {
        let left = Duration::from_secs_f64((secs - self.secs).max(0.0));
        (Instant::now() + left).min(limit)
    }

    fn rate(&self) -> Option<f64> {
        (self.ops > 0 && self.secs > 0.0).then(|| self.ops as f64 / self.secs)
    }

    fn line(&self) -> String {
        let Some(rate) = self.rate() else {
            return "no samples".into();
        };
        let s = Summary::of(&self.latency);
        format!(
            "{}, p50/p99 {} / {} ms ({} in {:.1} s)",
            per_sec(rate),
            fmt_ms(s.p50_ms),
            fmt_ms(s.p99_ms),
            thousands(self.ops),
            self.secs
        )
    }

    fn json(&self) -> Value {
        let s = Summary::of(&self.latency).to_json();
        json!({
            "ops": self.ops,
            "errors": self.errors,
            "seconds": round3(self.secs),
            "per_sec": self.rate().map(round3),
            "p50_ms": s["p50_ms"],
            "p99_ms": s["p99_ms"],
            "p999_ms": s["p999_ms"],
            "max_ms": s["max_ms"],
        })
    }
}

/// One measuring phase: the three operations.
struct Phase {
    ops: [OpStats; 3],
    rounds: u64,
    /// The phase ran into [`phase_limit`] before every clock was full.
    hit_limit: bool,
}

/// How the fill went.
#[derive(Default)]
struct Fill {
    customers: u64,
    customer_secs: f64,
    created: u64,
    create_secs: f64,
    /// The bulk creation ran into [`FILL_LIMIT`].
    hit_limit: bool,
}

impl Fill {
    fn total(&self) -> u64 {
        self.customers + self.created
    }

    fn secs(&self) -> f64 {
        self.customer_secs + self.create_secs
    }
}

/// How the clean-up went.
#[derive(Default)]
struct Cleanup {
    deleted: u64,
    left: u64,
    secs: f64,
}

/// A seated customer: its case and the task that reads its pushes.
struct Customer {
    code: String,
    task: JoinHandle<Option<String>>,
}

/// Everything a run holds.
struct Run {
    opts: QueueDepthOpts,
    agents: Vec<Agent>,
    /// Cases created with `create_case` and not deleted yet.
    live: HashSet<String>,
    customers: Vec<Customer>,
    /// Stops the customers' readers, which then close their sockets.
    release: CancellationToken,
    pushes: Arc<AtomicU64>,
    failures: u64,
    first_failure: Option<String>,
    bar: Progress,
}

impl Run {
    fn fail(&mut self, n: u64, why: impl FnOnce() -> String) {
        if n > 0 {
            self.failures += n;
            if self.first_failure.is_none() {
                self.first_failure = Some(why());
            }
        }
    }

    /// Counts a step's refusals as failures.
    fn absorb(&mut self, s: &Step) {
        let first = s.first_error.clone().unwrap_or_default();
        self.fail(s.errors, || first);
    }

    /// One pipelined step on the run's agent connections.
    async fn step(
        &mut self,
        cmds: Vec<Vec<ClientMsg>>,
        expect: &str,
        until: Option<Instant>,
    ) -> anyhow::Result<Step> {
        let s = step(&mut self.agents, cmds, self.opts.window, expect, until).await?;
        self.absorb(&s);
        Ok(s)
    }

    /// Creates up to `names.len()` cases in the group (none after `until`).
    async fn create(&mut self, names: Vec<String>, until: Option<Instant>) -> anyhow::Result<Step> {
        let group = self.opts.group.clone();
        let cmds = deal(
            names.into_iter().map(|n| create(&group, n)),
            self.agents.len(),
        );
        let s = self.step(cmds, "case", until).await?;
        self.live.extend(s.codes.iter().cloned());
        Ok(s)
    }

    /// Deletes cases this run created (none after `until`).
    async fn delete(&mut self, codes: &[String], until: Option<Instant>) -> anyhow::Result<Step> {
        let cmds = deal(deletes(codes), self.agents.len());
        let s = self.step(cmds, "deleted", until).await?;
        for code in &s.codes {
            self.live.remove(code);
        }
        Ok(s)
    }
}

/// The open cases of `group` (through a short-lived dashboard subscribed
/// to it) and how many of them wait unassigned.
async fn open_in_group(
    target: &Target,
    token: &str,
    group: &str,
) -> anyhow::Result<(Vec<String>, usize)> {
    let mut c = Client::connect(target).await?;
    c.hello_agent(token).await?;
    let reply = c
        .request(
            "snapshot",
            ClientMsg::Subscribe {
                group: Some(group.to_string()),
                resume: None,
            },
        )
        .await
        .with_context(|| format!("subscribe to group {group}"))?;
    let ServerMsg::Snapshot { cases, .. } = reply else {
        bail!("subscribe: expected snapshot, got {reply:?}");
    };
    c.close().await;
    let mut codes = Vec::new();
    let mut waiting = 0;
    for c in cases
        .iter()
        .filter(|c| !matches!(c.status, Status::Closed | Status::Expired))
    {
        codes.push(c.code.to_string());
        waiting += usize::from(c.assignee.is_none());
    }
    Ok((codes, waiting))
}

/// One seated customer: `hello`, `request_help` with `module`; returns the
/// socket and the case's code.
async fn seat_customer(target: &Target, module: String, n: usize) -> anyhow::Result<(Ws, String)> {
    let mut c = Client::connect(target).await?;
    c.hello_customer().await?;
    let reply = c
        .request(
            "request_help",
            ClientMsg::RequestHelp(RequestHelp {
                module,
                name: Some(format!("Waiting {n}")),
                ..RequestHelp::default()
            }),
        )
        .await?;
    let ServerMsg::Joined { code, .. } = reply else {
        bail!("request_help: expected joined, got {reply:?}");
    };
    Ok((c.into_inner(), code.to_string()))
}

/// Reads and discards a waiting customer's pushes (counting `queue`
/// positions) until released, then closes the socket. Returns why the
/// connection ended early, if it did.
async fn hold_customer(
    mut ws: Ws,
    release: CancellationToken,
    pushes: Arc<AtomicU64>,
) -> Option<String> {
    loop {
        let msg = tokio::select! {
            biased;
            _ = release.cancelled() => break,
            m = ws.next() => m,
        };
        match msg {
            Some(Ok(Message::Text(t))) => {
                if scan::msg_type(t.as_bytes()) == Some("queue") {
                    pushes.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return Some(format!(
                    "a waiting customer was closed by the broker ({})",
                    frame.map(|f| u16::from(f.code)).unwrap_or(1005)
                ));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Some(format!("a waiting customer's connection failed: {e}")),
            None => return Some("a waiting customer's connection ended".into()),
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    None
}

/// Measures the three operations for `seconds` each.
async fn phase(run: &mut Run, label: &'static str) -> anyhow::Result<Phase> {
    let secs = run.opts.seconds as f64;
    let round = run.opts.round_size();
    let mut p = Phase {
        ops: [OpStats::new(), OpStats::new(), OpStats::new()],
        rounds: 0,
        hit_limit: false,
    };
    let limit = Instant::now() + phase_limit(run.opts.seconds);
    run.bar.phase(label, 3 * run.opts.seconds);
    while p.ops.iter().any(|o| o.secs < secs) {
        if Instant::now() >= limit {
            p.hit_limit = true;
            break;
        }
        p.rounds += 1;
        let k = p.rounds;
        let names = (0..round)
            .map(|i| format!("queue-depth {label} {k}.{i}"))
            .collect();
        let timed = p.ops[0].secs < secs;
        let until = if timed {
            p.ops[0].until(secs, limit)
        } else {
            limit
        };
        let created = run.create(names, Some(until)).await?;
        if timed {
            p.ops[0].add(&created);
        }
        let codes = created.codes;
        if codes.is_empty() && timed && created.first_error.is_none() {
            // The step's clock ran out before it could send anything: the
            // create budget is spent, and the next round is untimed.
            p.ops[0].secs = p.ops[0].secs.max(secs);
            continue;
        }
        if codes.is_empty() {
            if Instant::now() >= limit {
                p.hit_limit = true;
                break;
            }
            bail!(
                "create_case in group {} created no case: {}",
                run.opts.group,
                created.first_error.unwrap_or_default()
            );
        }
        if p.ops[1].secs < secs {
            let to = run.opts.assignee.clone();
            // Each case there and back in turn, so a step stopped by the
            // clock has sent as many of one as of the other.
            let cmds = deal(codes.iter().cloned(), run.agents.len())
                .into_iter()
                .map(|share| {
                    share
                        .into_iter()
                        .flat_map(|code| {
                            [
                                ClientMsg::Assign {
                                    code: code.clone(),
                                    assignee: Some(to.clone()),
                                },
                                ClientMsg::Assign {
                                    code,
                                    assignee: None,
                                },
                            ]
                        })
                        .collect()
                })
                .collect();
            let s = run
                .step(cmds, "case", Some(p.ops[1].until(secs, limit)))
                .await?;
            p.ops[1].add(&s);
        }
        if p.ops[2].secs < secs {
            let cmds = deal(
                codes.iter().map(|code| ClientMsg::Close {
                    code: Some(code.clone()),
                }),
                run.agents.len(),
            );
            let s = run
                .step(cmds, "case", Some(p.ops[2].until(secs, limit)))
                .await?;
            p.ops[2].add(&s);
        }
        run.delete(&codes, None).await?;
        let done: f64 = p.ops.iter().map(|o| o.secs.min(secs)).sum();
        run.bar.set(
            done as u64,
            format!(
                "{} / {} / {} (create / assign / close)",
                per_sec(p.ops[0].rate().unwrap_or(0.0)),
                per_sec(p.ops[1].rate().unwrap_or(0.0)),
                per_sec(p.ops[2].rate().unwrap_or(0.0)),
            ),
        );
    }
    Ok(p)
}

/// Seats the waiting customers, checks they joined the group's line, then
/// creates the other cases.
async fn fill(run: &mut Run, f: &mut Fill) -> anyhow::Result<()> {
    let o = run.opts.clone();
    run.bar.phase("filling", o.cases as u64);
    let started = Instant::now();
    let mut seating = futures::stream::iter(0..o.waiting)
        .map(|i| {
            let target = o.target.clone();
            let module = o.modules[i % o.modules.len()].clone();
            async move { seat_customer(&target, module, i).await }
        })
        .buffer_unordered(CONNECT_AT_ONCE);
    let mut failed = 0;
    let mut first = None;
    while let Some(r) = seating.next().await {
        match r {
            Ok((ws, code)) => {
                let task = tokio::spawn(hold_customer(ws, run.release.clone(), run.pushes.clone()));
                run.customers.push(Customer { code, task });
                f.customers += 1;
                run.bar.inc();
            }
            Err(e) => {
                failed += 1;
                first.get_or_insert_with(|| format!("seating a waiting customer: {e:#}"));
            }
        }
    }
    drop(seating);
    f.customer_secs = started.elapsed().as_secs_f64();
    run.fail(failed, || first.unwrap_or_default());
    if failed > 0 {
        bail!(
            "{failed} of {} waiting customers could not be seated",
            o.waiting
        );
    }
    if !run.customers.is_empty() {
        let (codes, _) = open_in_group(&o.target, &o.token, &o.group).await?;
        let in_group: HashSet<String> = codes.into_iter().collect();
        let elsewhere = run
            .customers
            .iter()
            .filter(|c| !in_group.contains(&c.code))
            .count();
        if elsewhere > 0 {
            bail!(
                "{elsewhere} waiting customers are not in group {}: the module keys {} \
                 must map to it (see casebroker-load.toml)",
                o.group,
                o.modules.join(",")
            );
        }
    }

    let started = Instant::now();
    let deadline = started + FILL_LIMIT;
    let to_create = o.cases - o.waiting;
    while (f.created as usize) < to_create {
        if Instant::now() >= deadline {
            f.hit_limit = true;
            let total = f.total();
            run.fail(1, || {
                format!(
                    "the fill stopped at its limit of {FILL_LIMIT:?} ({} of {} cases)",
                    thousands(total),
                    thousands(o.cases as u64)
                )
            });
            break;
        }
        let n = CHUNK.min(to_create - f.created as usize);
        let base = f.created;
        let names = (0..n as u64)
            .map(|i| format!("queue-depth fill {}", base + i + 1))
            .collect();
        let s = run.create(names, Some(deadline)).await?;
        if s.ok == 0 && Instant::now() < deadline {
            bail!(
                "create_case in group {} created no case: {}",
                o.group,
                s.first_error.unwrap_or_default()
            );
        }
        f.created += s.ok;
        f.create_secs = started.elapsed().as_secs_f64();
        run.bar.set(
            f.total(),
            format!(
                "{} cases ({})",
                thousands(f.total()),
                per_sec(f.created as f64 / f.create_secs.max(1e-3))
            ),
        );
    }
    f.create_secs = started.elapsed().as_secs_f64();
    Ok(())
}

/// Deletes every case the run created and closes the customer sockets:
/// cases behind the customers first, then the customers leave, then their
/// cases go. Uses fresh agent connections. Not timed.
async fn clean_up(run: &mut Run, fill: Duration) -> Cleanup {
    let started = Instant::now();
    let deadline = started + cleanup_limit(fill);
    let mut c = Cleanup::default();
    for a in std::mem::take(&mut run.agents) {
        a.close().await;
    }
    let mut agents = Vec::new();
    for _ in 0..run.opts.connections {
        match Agent::connect(&run.opts.target, &run.opts.token).await {
            Ok(a) => agents.push(a),
            Err(e) => {
                run.fail(1, || format!("clean-up connection: {e:#}"));
                break;
            }
        }
    }
    run.agents = agents;
    let total = run.live.len() + run.customers.len();
    run.bar.phase("cleaning up", total as u64);

    let mut codes: Vec<String> = run.live.iter().cloned().collect();
    codes.sort_unstable();
    let mut stopped = run.agents.is_empty();
    for chunk in codes.chunks(CHUNK) {
        if stopped || Instant::now() >= deadline {
            stopped = true;
            break;
        }
        match run.delete(chunk, Some(deadline)).await {
            Ok(s) => c.deleted += s.ok,
            Err(e) => {
                run.fail(1, || format!("clean-up: {e:#}"));
                stopped = true;
            }
        }
        run.bar
            .set(c.deleted, format!("{} deleted", thousands(c.deleted)));
    }

    run.release.cancel();
    let mut dropped = 0;
    let mut first = None;
    let customers = std::mem::take(&mut run.customers);
    let mut codes = Vec::with_capacity(customers.len());
    for cu in customers {
        match cu.task.await {
            Ok(None) => {}
            Ok(Some(why)) => {
                dropped += 1;
                first.get_or_insert(why);
            }
            Err(e) => {
                dropped += 1;
                first.get_or_insert(format!("customer task: {e}"));
            }
        }
        codes.push(cu.code);
    }
    run.fail(dropped, || first.unwrap_or_default());
    let mut left = 0;
    for chunk in codes.chunks(CHUNK) {
        if stopped || Instant::now() >= deadline {
            stopped = true;
            left += chunk.len() as u64;
            continue;
        }
        let cmds = deal(deletes(chunk), run.agents.len());
        match run.step(cmds, "deleted", Some(deadline)).await {
            Ok(s) => {
                c.deleted += s.ok;
                left += chunk.len() as u64 - s.ok;
            }
            Err(e) => {
                run.fail(1, || format!("clean-up: {e:#}"));
                stopped = true;
                left += chunk.len() as u64;
            }
        }
        run.bar
            .set(c.deleted, format!("{} deleted", thousands(c.deleted)));
    }
    c.left = left + run.live.len() as u64;
    if c.left > 0 {
        let n = c.left;
        run.fail(n, || format!("clean-up left {n} cases behind"));
    }
    for a in std::mem::take(&mut run.agents) {
        a.close().await;
    }
    c.secs = started.elapsed().as_secs_f64();
    c
}

fn ratio(deep: &OpStats, empty: &OpStats) -> Option<f64> {
    Some(deep.rate()? / empty.rate()?)
}

fn latency_ratio(deep: &OpStats, empty: &OpStats, q: f64) -> Option<f64> {
    if deep.latency.is_empty() || empty.latency.is_empty() {
        return None;
    }
    let e = empty.latency.value_at_quantile(q).max(1) as f64;
    Some(deep.latency.value_at_quantile(q) as f64 / e)
}

fn phase_json(p: &Phase) -> Value {
    let mut m = Map::new();
    for (name, o) in OPS.iter().zip(&p.ops) {
        m.insert(name.to_string(), o.json());
    }
    m.insert("rounds".into(), p.rounds.into());
    m.insert("hit_time_limit".into(), p.hit_limit.into());
    Value::Object(m)
}

/// Runs the scenario.
pub async fn run(opts: QueueDepthOpts) -> anyhow::Result<Report> {
    if opts.waiting > opts.cases {
        bail!("--waiting may not exceed --cases");
    }
    if opts.waiting > 0 && opts.modules.is_empty() {
        bail!("--module: at least one module key is needed");
    }
    let (before, waiting_before) = open_in_group(&opts.target, &opts.token, &opts.group).await?;
    let mut agents = Vec::with_capacity(opts.connections);
    for _ in 0..opts.connections {
        agents.push(Agent::connect(&opts.target, &opts.token).await?);
    }
    let mut run = Run {
        bar: Progress::new(opts.progress, 1),
        opts,
        agents,
        live: HashSet::new(),
        customers: Vec::new(),
        release: CancellationToken::new(),
        pushes: Arc::new(AtomicU64::new(0)),
        failures: 0,
        first_failure: None,
    };

    let mut f = Fill::default();
    let mut empty = None;
    let mut deep = None;
    let measured: anyhow::Result<()> = async {
        empty = Some(phase(&mut run, "empty").await.context("phase empty")?);
        fill(&mut run, &mut f).await.context("fill")?;
        deep = Some(phase(&mut run, "deep").await.context("phase deep")?);
        Ok(())
    }
    .await;
    let aborted = measured.err().map(|e| format!("{e:#}"));
    if let Some(why) = &aborted {
        run.fail(1, || why.clone());
    }
    let cleanup = clean_up(&mut run, Duration::from_secs_f64(f.secs())).await;
    run.bar.finish();

    let o = &run.opts;
    let mut r = Report::new(format!(
        "queue-depth: {} cases ({} waiting) in group {}, {} s per operation",
        thousands(o.cases as u64),
        thousands(o.waiting as u64),
        o.group,
        o.seconds
    ));
    r.row(
        "before",
        format!(
            "{} open cases in {} ({} waiting unassigned)",
            thousands(before.len() as u64),
            o.group,
            thousands(waiting_before as u64)
        ),
    );
    r.row(
        "pipelining",
        format!(
            "{} connections x window {}, rounds of {} cases",
            o.connections,
            o.window,
            o.round_size()
        ),
    );
    let fill_rate = f.total() as f64 / f.secs().max(1e-9);
    r.row(
        "fill",
        format!(
            "{} cases in {:.1} s ({}): {} customers in {:.1} s, {} created in {:.1} s",
            thousands(f.total()),
            f.secs(),
            per_sec(fill_rate),
            thousands(f.customers),
            f.customer_secs,
            thousands(f.created),
            f.create_secs
        ),
    );
    let mut ratios = Map::new();
    let mut p99_ratios = Map::new();
    let mut meets = true;
    let mut complete = empty.is_some() && deep.is_some();
    let none = Phase {
        ops: [OpStats::new(), OpStats::new(), OpStats::new()],
        rounds: 0,
        hit_limit: false,
    };
    let (e, d) = (
        empty.as_ref().unwrap_or(&none),
        deep.as_ref().unwrap_or(&none),
    );
    for (i, name) in OPS.iter().enumerate() {
        r.row(format!("{name} empty"), e.ops[i].line());
        r.row(format!("{name} deep"), d.ops[i].line());
        let q = ratio(&d.ops[i], &e.ops[i]);
        let p99 = latency_ratio(&d.ops[i], &e.ops[i], 0.99);
        let verdict = match q {
            Some(q) if q >= TARGET_RATIO => format!("{q:.2} (target >= {TARGET_RATIO}: met)"),
            Some(q) => format!("{q:.2} (target >= {TARGET_RATIO}: NOT met)"),
            None => "n/a".into(),
        };
        let p99_text = p99.map(|x| format!(", p99 x{x:.2}")).unwrap_or_default();
        r.row(format!("{name} deep/empty"), format!("{verdict}{p99_text}"));
        meets &= q.is_some_and(|q| q >= TARGET_RATIO);
        complete &= q.is_some();
        ratios.insert(name.to_string(), q.map(round3).into());
        p99_ratios.insert(name.to_string(), p99.map(round3).into());
    }
    if f.hit_limit {
        r.row(
            "fill limit",
            format!(
                "stopped at {FILL_LIMIT:?}: deep measured behind {} cases",
                thousands(f.total())
            ),
        );
    }
    for (label, p) in [("empty", &empty), ("deep", &deep)] {
        if let Some(p) = p
            && p.hit_limit
        {
            r.row(
                format!("{label} phase"),
                format!("stopped at its limit of {:?}", phase_limit(o.seconds)),
            );
        }
    }
    r.row(
        "waiting customers",
        format!(
            "{} seated, {} queue pushes received",
            thousands(f.customers),
            thousands(run.pushes.load(Ordering::Relaxed))
        ),
    );
    r.row(
        "clean-up",
        format!(
            "{} cases deleted in {:.1} s, {} left",
            thousands(cleanup.deleted),
            cleanup.secs,
            cleanup.left
        ),
    );
    r.row("failures", run.failures);
    if let Some(why) = &run.first_failure {
        r.row("first failure", why);
    }

    for (label, p) in [("empty", e), ("deep", d)] {
        for (name, op) in OPS.iter().zip(&p.ops) {
            r.latency
                .push((format!("{name} ({label})"), op.latency.clone()));
        }
    }
    r.set("scenario", "queue-depth");
    r.set("url", o.target.url());
    r.set("group", o.group.clone());
    r.set("cases", o.cases);
    r.set("waiting", o.waiting);
    r.set("seconds", o.seconds);
    r.set("connections", o.connections);
    r.set("window", o.window);
    r.set("batch", o.round_size());
    r.set("assignee", o.assignee.clone());
    r.set("open_before", before.len());
    r.set("waiting_before", waiting_before);
    r.set(
        "fill",
        json!({
            "cases": f.total(),
            "customers": f.customers,
            "created": f.created,
            "seconds": round3(f.secs()),
            "customer_seconds": round3(f.customer_secs),
            "create_seconds": round3(f.create_secs),
            "per_sec": round3(fill_rate),
            "hit_time_limit": f.hit_limit,
        }),
    );
    r.set("empty", empty.as_ref().map(phase_json));
    r.set("deep", deep.as_ref().map(phase_json));
    r.set("ratios", Value::Object(ratios));
    r.set("p99_ratios", Value::Object(p99_ratios));
    r.set("target_ratio", TARGET_RATIO);
    r.set("meets_target", complete && meets);
    r.set("queue_pushes", run.pushes.load(Ordering::Relaxed));
    r.set(
        "cleanup",
        json!({"deleted": cleanup.deleted, "left": cleanup.left,
               "seconds": round3(cleanup.secs)}),
    );
    r.set("failed", run.failures);
    r.set("first_failure", run.first_failure.clone());
    r.set("aborted", aborted);
    r.failed = run.failures > 0 || !complete;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dealing_is_round_robin() {
        assert_eq!(deal(0..5, 2), vec![vec![0, 2, 4], vec![1, 3]]);
        assert_eq!(deal(0..2, 3), vec![vec![0], vec![1], vec![]]);
        assert_eq!(deal(0..3, 0), vec![vec![0, 1, 2]]);
    }

    #[test]
    fn rounds_stay_small_beside_the_fill() {
        let opts = QueueDepthOpts {
            target: Target::new(crate::target::DEFAULT_URL, 1).unwrap(),
            token: "t".into(),
            group: "support".into(),
            modules: vec!["m".into()],
            cases: 200,
            waiting: 20,
            seconds: 1,
            connections: 2,
            window: 32,
            batch: 1000,
            assignee: "admin".into(),
            progress: false,
        };
        assert_eq!(opts.round_size(), 20);
        let big = QueueDepthOpts {
            cases: 100_000,
            ..opts.clone()
        };
        assert_eq!(big.round_size(), 1000);
        let tiny = QueueDepthOpts { cases: 3, ..opts };
        assert_eq!(tiny.round_size(), 1);
    }
}
