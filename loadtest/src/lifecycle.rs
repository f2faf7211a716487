//! The `lifecycle` scenario: C workers each run complete cases back to
//! back: a new customer connection (`hello`), `request_help`, the worker's
//! agent `join`s, one chat each way, the agent `close`s (the customer gets
//! `ended` and its socket is closed), then the agent deletes the case so
//! repeated runs leave the broker as they found it (not timed). Reports
//! cases per second and each step's latency. Given several nodes of one
//! cluster, each worker's agent and customers are on two different nodes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use casebroker::protocol::{ClientMsg, RequestHelp, Role, ServerMsg};
use tokio::sync::Mutex;

use crate::client::{Client, Ended, REPLY_TIMEOUT};
use crate::report::{Progress, Report, per_sec, thousands};
use crate::stats::{Sharded, Summary, round3};
use crate::target::Target;

/// The timed steps, in order, and the whole case.
pub const STEPS: [&str; 7] = [
    "connect",
    "request_help",
    "join",
    "chat_to_customer",
    "chat_to_agent",
    "close",
    "case",
];

/// What a lifecycle run is asked to do.
#[derive(Clone, Debug)]
pub struct LifecycleOpts {
    /// The broker, or the nodes of one cluster: worker w's agent connects
    /// to `targets[w % n]`, its customers to `targets[(w + 1) % n]`.
    pub targets: Vec<Target>,
    pub token: String,
    /// Module keys, used in turn.
    pub modules: Vec<String>,
    pub concurrency: usize,
    pub seconds: u64,
    pub progress: bool,
}

struct Shared {
    steps: Vec<Sharded>,
    done: AtomicU64,
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// One complete case; records each step's latency.
async fn one_case(
    w: usize,
    n: u64,
    agent: &mut Client,
    opts: &LifecycleOpts,
    sh: &Shared,
) -> anyhow::Result<()> {
    let t_case = Instant::now();
    let mut customer = Client::connect(&opts.targets[(w + 1) % opts.targets.len()]).await?;
    customer.hello_customer().await?;
    sh.steps[0].record_one(w, micros(t_case.elapsed()));

    let module = opts.modules[(w + n as usize) % opts.modules.len()].clone();
    let t = Instant::now();
    let reply = customer
        .request(
            "request_help",
            ClientMsg::RequestHelp(RequestHelp {
                module,
                name: Some(format!("Load {w}-{n}")),
                ..RequestHelp::default()
            }),
        )
        .await?;
    let ServerMsg::Joined { code, .. } = reply else {
        bail!("request_help: expected joined, got {reply:?}");
    };
    let code = code.to_string();
    sh.steps[1].record_one(w, micros(t.elapsed()));

    let t = Instant::now();
    let reply = agent
        .request(
            "join",
            ClientMsg::Join {
                code: code.clone(),
                takeover: false,
                name: None,
                resume_token: None,
            },
        )
        .await?;
    if !matches!(reply, ServerMsg::Joined { .. }) {
        bail!("join: expected joined, got {reply:?}");
    }
    sh.steps[2].record_one(w, micros(t.elapsed()));

    let t = Instant::now();
    agent
        .send(ClientMsg::Chat {
            code: Some(code.clone()),
            text: format!("Hello from the agent, case {n}"),
        })
        .await?;
    customer
        .wait_for("chat to the customer", None, |r| {
            matches!(&r.msg, Some(ServerMsg::Chat { line, .. }) if line.from.role == Role::Agent)
        })
        .await?;
    sh.steps[3].record_one(w, micros(t.elapsed()));

    let t = Instant::now();
    customer
        .send(ClientMsg::Chat {
            code: None,
            text: "Thanks, here is my problem".into(),
        })
        .await?;
    agent
        .wait_for("chat to the agent", None, |r| {
            matches!(&r.msg, Some(ServerMsg::Chat { code: c, line, .. })
                if line.from.role == Role::Customer && c.to_string() == code)
        })
        .await?;
    sh.steps[4].record_one(w, micros(t.elapsed()));

    let t = Instant::now();
    let reply = agent
        .request(
            "close",
            ClientMsg::Close {
                code: Some(code.clone()),
            },
        )
        .await?;
    if !matches!(reply, ServerMsg::Case { .. }) {
        bail!("close: expected case, got {reply:?}");
    }
    sh.steps[5].record_one(w, micros(t.elapsed()));
    sh.steps[6].record_one(w, micros(t_case.elapsed()));

    // The customer is told and let go.
    customer
        .wait_for("ended", None, |r| {
            matches!(r.msg, Some(ServerMsg::Ended { .. }))
        })
        .await?;
    match customer.recv(REPLY_TIMEOUT).await {
        Ok(Err(Ended::Closed(1000))) => {}
        other => bail!("customer connection after ended: expected close 1000, got {other:?}"),
    }
    let reply = agent
        .request("delete", ClientMsg::Delete { code: code.clone() })
        .await?;
    if !matches!(reply, ServerMsg::Deleted { .. }) {
        bail!("delete: expected deleted, got {reply:?}");
    }
    Ok(())
}

/// One worker: its own agent connection, cases back to back until the
/// deadline. A failed case is counted and the agent reconnects.
async fn worker(w: usize, opts: Arc<LifecycleOpts>, sh: Arc<Shared>, deadline: Instant) {
    let mut agent: Option<Client> = None;
    let mut n = 0u64;
    while Instant::now() < deadline {
        if agent.is_none() {
            match connect_agent(w, &opts).await {
                Ok(a) => agent = Some(a),
                Err(e) => {
                    fail(&sh, format!("agent connection: {e:#}")).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some(a) = agent.as_mut() else { continue };
        n += 1;
        match one_case(w, n, a, &opts, &sh).await {
            Ok(()) => {
                sh.done.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                fail(&sh, format!("{e:#}")).await;
                agent = None;
            }
        }
    }
    if let Some(a) = agent {
        a.close().await;
    }
}

async fn connect_agent(w: usize, opts: &LifecycleOpts) -> anyhow::Result<Client> {
    let mut a = Client::connect(&opts.targets[w % opts.targets.len()]).await?;
    a.hello_agent(&opts.token).await?;
    Ok(a)
}

async fn fail(sh: &Shared, why: String) {
    sh.failed.fetch_add(1, Ordering::Relaxed);
    sh.first_failure.lock().await.get_or_insert(why);
}

/// Runs the scenario.
pub async fn run(opts: LifecycleOpts) -> anyhow::Result<Report> {
    if opts.modules.is_empty() {
        bail!("--module: at least one module key is needed");
    }
    if opts.targets.is_empty() {
        bail!("--url: a broker is needed");
    }
    let opts = Arc::new(opts);
    let sh = Arc::new(Shared {
        steps: STEPS.iter().map(|_| Sharded::new(8)).collect(),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        first_failure: Mutex::new(None),
    });
    let bar = Progress::new(opts.progress, opts.seconds);
    bar.phase("running", opts.seconds);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(opts.seconds);
    let tasks: Vec<_> = (0..opts.concurrency)
        .map(|w| tokio::spawn(worker(w, opts.clone(), sh.clone(), deadline)))
        .collect();
    let all = futures::future::join_all(tasks);
    tokio::pin!(all);
    loop {
        tokio::select! {
            _ = &mut all => break,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                let done = sh.done.load(Ordering::Relaxed);
                bar.set(
                    started.elapsed().as_secs().min(opts.seconds),
                    format!("{} cases ({}), {} failed", thousands(done),
                        per_sec(done as f64 / secs), sh.failed.load(Ordering::Relaxed)),
                );
            }
        }
    }
    bar.finish();
    let secs = started.elapsed().as_secs_f64();
    let done = sh.done.load(Ordering::Relaxed);
    let failed = sh.failed.load(Ordering::Relaxed);
    let cases_per_sec = done as f64 / secs.max(1e-9);

    let mut r = Report::new(format!(
        "lifecycle: {} workers, {} s",
        opts.concurrency, opts.seconds
    ));
    r.row(
        "cases completed",
        format!("{} ({})", thousands(done), per_sec(cases_per_sec)),
    );
    r.row("cases failed", failed);
    if let Some(f) = sh.first_failure.lock().await.as_ref() {
        r.row("first failure", f);
    }
    let mut steps = serde_json::Map::new();
    for (name, h) in STEPS.iter().zip(&sh.steps) {
        let h = h.merged();
        let s = Summary::of(&h);
        r.row(format!("{name} p50/p99/p999/max"), s.line());
        steps.insert(name.to_string(), s.to_json());
        r.latency.push((name.to_string(), h));
    }
    let whole = Summary::of(&sh.steps[6].merged()).to_json();
    r.set("scenario", "lifecycle");
    r.set("concurrency", opts.concurrency);
    r.set("nodes", opts.targets.len());
    r.set("cases", done);
    r.set("failed", failed);
    r.set("cases_per_sec", round3(cases_per_sec));
    for k in ["p50_ms", "p99_ms", "p999_ms", "max_ms"] {
        r.set(k, whole[k].clone());
    }
    r.set("steps", serde_json::Value::Object(steps));
    r.set("seconds", round3(secs));
    r.failed = failed > 0 || done == 0;
    Ok(r)
}
