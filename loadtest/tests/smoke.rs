//! CI smoke test of the load tester: every scenario runs for a second or
//! two with small counts against a casebroker started in this process (on
//! `127.0.0.1:0`, with `casebroker-load.toml`), through the same command
//! line a person would type; `crash` starts the casebroker binary of this
//! build itself, and `fanout --baseline` starts the bare and the corked
//! Node.js baselines; `webhooks` registers its own receiver. It asserts correctness only (nothing lost, `seq` in order,
//! no failures, the JSON keys present), never timing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use casebroker::Config;
use casebroker_loadtest::report::JSON_KEYS;
use casebroker_loadtest::{Cli, run_cli};
use clap::Parser;
use serde_json::Value;
use tokio::sync::oneshot;

/// A broker on a free loopback port, stopped when dropped.
struct Broker {
    url: String,
    stop: Option<oneshot::Sender<()>>,
}

impl Broker {
    async fn start() -> Broker {
        Broker::with_config(include_str!("../casebroker-load.toml")).await
    }

    /// A broker on `toml` instead of `casebroker-load.toml`.
    async fn with_config(toml: &str) -> Broker {
        let config = Config::from_toml(toml).expect("a valid config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/v1/ws", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(casebroker::run(listener, config, async {
            let _ = stopped.await;
        }));
        Broker {
            url,
            stop: Some(stop),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A fresh scratch directory for one test's output files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "casebroker-loadtest-smoke-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the command line `args` (plus `--json`, `--no-progress` and a few
/// source addresses); returns the JSON it wrote, after checking its keys.
async fn run(name: &str, args: &[&str]) -> Value {
    run_with_table(name, args).await.0
}

/// As [`run`], and also returns the printed table.
async fn run_with_table(name: &str, args: &[&str]) -> (Value, String) {
    let (v, report) = run_report(name, args).await;
    assert!(
        !report.failed,
        "{name}: the run reported a failure:\n{}",
        report.table()
    );
    (v, report.table())
}

/// Runs the command line `args` as [`run`] does, whatever the outcome;
/// returns the JSON (its keys checked) and the report.
async fn run_report(name: &str, args: &[&str]) -> (Value, casebroker_loadtest::report::Report) {
    let json = scratch(name).join("out.json");
    let json_arg = json.to_str().unwrap().to_string();
    let mut argv = vec!["casebroker-loadtest"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["--json", &json_arg, "--no-progress", "--source-addrs", "4"]);
    let cli = Cli::try_parse_from(&argv).expect("valid command line");
    let report = tokio::time::timeout(Duration::from_secs(60), run_cli(cli))
        .await
        .expect("the scenario stops by itself")
        .expect("the scenario runs")
        .expect("a report");
    let text = std::fs::read_to_string(&json).expect("--json wrote its file");
    let v: Value = serde_json::from_str(&text).expect("--json is JSON");
    for key in JSON_KEYS {
        assert!(v.get(key).is_some(), "{name}: key {key} missing in {text}");
    }
    (v, report)
}

/// Asserts a fan-out result: every dashboard got every event, in order.
fn assert_complete(name: &str, v: &Value) {
    for key in [
        "lost",
        "gaps",
        "out_of_order",
        "missing_at_end",
        "unexpected",
        "disconnected",
        "driver_errors",
    ] {
        assert_eq!(v[key], 0, "{name}: {key} in {v:#}");
    }
    assert!(v["delivered"].as_u64().unwrap() > 0, "{name}: {v:#}");
    assert_eq!(v["delivered"], v["expected"], "{name}: {v:#}");
    assert!(v["delivered_per_sec"].is_number(), "{name}: {v:#}");
    assert!(v["p99_ms"].is_number(), "{name}: {v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_as_fast_as_possible_loses_nothing() {
    let b = Broker::start().await;
    let svg = scratch("fanout-plot").join("latency.svg");
    let svg_arg = svg.to_str().unwrap().to_string();
    let v = run(
        "fanout",
        &[
            "fanout",
            "--url",
            &b.url,
            "--dashboards",
            "8",
            "--seconds",
            "2",
            "--plot",
            &svg_arg,
        ],
    )
    .await;
    assert_complete("fanout", &v);
    let plot = std::fs::read_to_string(&svg).expect("--plot wrote its file");
    assert!(plot.starts_with("<svg"), "{}", &plot[..plot.len().min(200)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_at_a_rate_loses_nothing() {
    let b = Broker::start().await;
    let v = run(
        "fanout-rate",
        &[
            "fanout",
            "--url",
            &b.url,
            "--dashboards",
            "5",
            "--seconds",
            "2",
            "--rate",
            "300",
        ],
    )
    .await;
    assert_complete("fanout-rate", &v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_completes_cases() {
    let b = Broker::start().await;
    let v = run(
        "lifecycle",
        &[
            "lifecycle",
            "--url",
            &b.url,
            "--concurrency",
            "4",
            "--seconds",
            "2",
        ],
    )
    .await;
    assert_eq!(v["failed"], 0, "{v:#}");
    assert!(v["cases"].as_u64().unwrap() > 0, "{v:#}");
    assert!(v["cases_per_sec"].is_number(), "{v:#}");
    for step in casebroker_loadtest::lifecycle::STEPS {
        assert!(
            v["steps"][step]["count"].as_u64().unwrap() > 0,
            "{step}: {v:#}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_holds_connections_across_worker_processes() {
    let b = Broker::start().await;
    // 15 sockets per process: this process holds 15, two workers the rest.
    let v = run(
        "idle",
        &[
            "idle",
            "--url",
            &b.url,
            "--connections",
            "40",
            "--seconds",
            "1",
            "--per-process",
            "15",
            "--worker-exe",
            env!("CARGO_BIN_EXE_casebroker-loadtest"),
        ],
    )
    .await;
    assert_eq!(v["connections"], 40, "{v:#}");
    assert_eq!(v["failed"], 0, "{v:#}");
    assert_eq!(v["dropped"], 0, "{v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_loses_nothing_under_idle_load() {
    let b = Broker::start().await;
    let v = run(
        "mixed",
        &[
            "mixed",
            "--url",
            &b.url,
            "--dashboards",
            "6",
            "--customers",
            "60",
            "--rate",
            "100",
            "--seconds",
            "2",
        ],
    )
    .await;
    assert_complete("mixed", &v);
    assert_eq!(v["customers"], 60, "{v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_depth_compares_a_deep_queue_and_cleans_up() {
    let b = Broker::start().await;
    let args = [
        "queue-depth",
        "--url",
        &b.url,
        "--cases",
        "200",
        "--waiting",
        "20",
        "--seconds",
        "1",
    ];
    let (v, table) = run_with_table("queue-depth", &args).await;
    assert_eq!(v["failed"], 0, "{v:#}");
    assert!(v["aborted"].is_null(), "{v:#}");
    assert_eq!(v["fill"]["cases"], 200, "{v:#}");
    assert_eq!(v["fill"]["customers"], 20, "{v:#}");
    assert_eq!(v["cleanup"]["left"], 0, "{v:#}");
    // Every waiting customer was told its place in the line.
    assert!(v["queue_pushes"].as_u64().unwrap() >= 20, "{v:#}");
    for op in casebroker_loadtest::queue_depth::OPS {
        for phase in ["empty", "deep"] {
            let m = &v[phase][op];
            assert!(m["ops"].as_u64().unwrap() > 0, "{phase} {op}: {v:#}");
            assert_eq!(m["errors"], 0, "{phase} {op}: {v:#}");
            assert!(m["per_sec"].is_number(), "{phase} {op}: {v:#}");
            assert!(m["p99_ms"].is_number(), "{phase} {op}: {v:#}");
        }
        assert!(v["ratios"][op].as_f64().unwrap() > 0.0, "{op}: {v:#}");
        assert!(table.contains(&format!("{op} deep/empty")), "{op}: {table}");
    }
    assert!(v["meets_target"].is_boolean(), "{v:#}");
    // The broker is left as found: a second run starts from an empty group.
    let (again, _) = run_with_table("queue-depth-again", &args).await;
    assert_eq!(again["open_before"], 0, "{again:#}");
    assert_eq!(again["failed"], 0, "{again:#}");
}

#[test]
fn urls_outside_loopback_are_refused_with_exit_code_2() {
    for url in ["ws://10.0.0.1:8080/v1/ws", "ws://example.com/v1/ws"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_casebroker-loadtest"))
            .args(["fanout", "--url", url, "--seconds", "1", "--no-progress"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{url}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("loopback"),
            "{out:?}"
        );
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_casebroker-loadtest"))
        .args(["bare", "--host", "10.0.0.1", "--port", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "bare: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("loopback"),
        "{out:?}"
    );
}

/// The Node.js baseline's directory, its pinned `ws` package installed
/// when it is not yet (needs Node.js and npm; `.ci/run` installs them
/// where missing).
fn node_baseline() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("baseline");
    if !dir.join("node_modules/ws").exists() {
        let status = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status()
            .expect("npm is needed for the Node.js baseline (install nodejs and npm)");
        assert!(status.success(), "npm install in loadtest/baseline failed");
    }
    dir
}

/// `fanout --baseline KIND` against a broker: the load tester starts the
/// baseline itself, runs both, and reports the ratios. Returns the JSON.
async fn fanout_with_baseline(name: &str, kind: &str) -> Value {
    let b = Broker::start().await;
    let (v, table) = run_with_table(
        name,
        &[
            "fanout",
            "--url",
            &b.url,
            "--dashboards",
            "20",
            "--seconds",
            "2",
            "--baseline",
            kind,
            "--baseline-exe",
            env!("CARGO_BIN_EXE_casebroker-loadtest"),
        ],
    )
    .await;
    assert_complete(name, &v);
    assert_complete(name, &v["baseline"]);
    assert_eq!(v["baseline"]["kind"], kind, "{v:#}");
    assert_eq!(v["baseline"]["dashboards"], 20, "{v:#}");
    assert!(v["ratio"].as_f64().unwrap() > 0.0, "{v:#}");
    assert!(v["p99_ratio"].as_f64().unwrap() > 0.0, "{v:#}");
    assert!(
        table.contains(&format!("ratio casebroker / {kind}")),
        "{table}"
    );
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_compares_with_the_bare_baseline_in_the_same_run() {
    let v = fanout_with_baseline("fanout-bare", "bare").await;
    assert_eq!(v["baseline"]["corked"], false, "{v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_compares_with_the_corked_node_baseline_in_the_same_run() {
    node_baseline();
    let v = fanout_with_baseline("fanout-node-corked", "node-corked").await;
    assert_eq!(v["baseline"]["corked"], true, "{v:#}");
}

/// The Node.js baseline speaks enough of the protocol for `fanout`. Needs
/// Node.js and npm (`.ci/run` installs them where missing); the baseline's
/// pinned `ws` package is installed here when it is not yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_runs_against_the_node_baseline() {
    let dir = node_baseline();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut node = tokio::process::Command::new("node")
        .arg(dir.join("server.js"))
        .args(["--port", &port.to_string()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(node.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line),
    )
    .await
    .expect("the baseline starts")
    .unwrap();
    assert!(line.contains("listening"), "{line}");
    let url = format!("ws://127.0.0.1:{port}/");
    let v = run(
        "baseline",
        &[
            "fanout",
            "--url",
            &url,
            "--dashboards",
            "5",
            "--seconds",
            "1",
        ],
    )
    .await;
    assert_complete("baseline", &v);
    let _ = node.kill().await;
}

/// The casebroker binary of the profile this test was built in
/// (`target/<profile>/casebroker`, found from this test's own path,
/// `target/<profile>/deps/smoke-<hash>`). `cargo test -p
/// casebroker-loadtest` does not build it, and an older one may be left
/// from an earlier build, so it is built here (once per process; a no-op
/// when it is up to date, as after `cargo test --workspace`).
fn broker_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_broker).clone()
}

fn build_broker() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps")
        .to_path_buf();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("loadtest/ sits in the workspace");
    let mut cargo = std::process::Command::new(env!("CARGO"));
    cargo
        .args(["build", "-p", "casebroker", "--bin", "casebroker"])
        .current_dir(workspace);
    match dir.file_name().and_then(|p| p.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cargo.arg("--release");
        }
        Some(profile) => {
            cargo.args(["--profile", profile]);
        }
    }
    let status = cargo.status().expect("run cargo build");
    assert!(status.success(), "cargo build -p casebroker failed");
    let bin = dir.join(format!("casebroker{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "no casebroker binary at {}", bin.display());
    bin
}

/// The arguments of a short `crash` run against this build's binary.
fn crash_args(broker: &Path, rounds: &str) -> Vec<String> {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/casebroker-load.toml");
    [
        "crash",
        "--broker",
        broker.to_str().unwrap(),
        "--config",
        config,
        "--rounds",
        rounds,
        "--clients",
        "3",
        "--min-ms",
        "100",
        "--max-ms",
        "300",
        "--time-limit",
        "50",
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loses_no_acknowledged_change() {
    let broker = broker_binary();
    let args = crash_args(&broker, "3");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (v, table) = run_with_table("crash", &args).await;
    assert_eq!(v["scenario"], "crash", "{v:#}");
    assert_eq!(v["rounds_done"], 3, "{v:#}");
    assert_eq!(v["lost"], 0, "{table}");
    assert!(v["acknowledged"].as_u64().unwrap() > 0, "{v:#}");
    assert_eq!(v["recovered"], v["acknowledged"], "{v:#}");
    for kind in ["creates", "chat_lines"] {
        assert!(
            v["acknowledged_by_kind"][kind].as_u64().unwrap() > 0,
            "{kind}: {v:#}"
        );
    }
    assert_eq!(v["resumed"], 3, "{v:#}");
    assert_eq!(v["snapshot"], 0, "{v:#}");
    assert_eq!(v["epoch_changed"], 0, "{v:#}");
    assert_eq!(v["errors"], 0, "{v:#}");
    assert_eq!(v["unexpected"], 0, "{v:#}");
    assert_eq!(v["restart"]["count"], 3, "{v:#}");
    assert!(v["p99_ms"].is_number(), "{v:#}");
    assert!(table.contains("lost"), "{table}");
    // The fresh data directory is removed at the end.
    let data = v["data_dir"].as_str().unwrap();
    assert!(!Path::new(data).exists(), "{data} left behind");
}

/// The check itself: a broker that keeps nothing (`--in-memory`) loses
/// every change, and the run must say so and fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_reports_the_losses_of_a_broker_that_keeps_nothing() {
    let broker = broker_binary();
    let mut args = crash_args(&broker, "1");
    args.push("--broker-in-memory".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (v, report) = run_report("crash-in-memory", &args).await;
    assert!(report.failed, "{}", report.table());
    let acked = v["acknowledged"].as_u64().unwrap();
    assert!(acked > 0, "{v:#}");
    assert_eq!(v["lost"], acked, "{v:#}");
    assert_eq!(v["recovered"], 0, "{v:#}");
    assert_eq!(v["snapshot"], 1, "{v:#}");
    assert_eq!(v["epoch_changed"], 1, "{v:#}");
    assert!(
        v["losses"][0].as_str().unwrap().contains("is gone"),
        "{v:#}"
    );
}

/// Asserts a webhooks result: every expected delivery arrived once, in
/// order per case, none failed, and the endpoint was deleted.
fn assert_delivered(name: &str, v: &Value) {
    for key in [
        "duplicates",
        "out_of_order",
        "failures",
        "bad_signature",
        "unreadable",
        "unexpected",
        "missing",
        "lost",
    ] {
        assert_eq!(v[key], 0, "{name}: {key} in {v:#}");
    }
    assert_eq!(v["all_arrived"], true, "{name}: {v:#}");
    assert_eq!(v["endpoint_deleted"], true, "{name}: {v:#}");
    assert!(v["deliveries"].as_u64().unwrap() > 0, "{name}: {v:#}");
    assert!(v["delivered_per_sec"].is_number(), "{name}: {v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_deliver_every_event_once_and_in_order() {
    let b = Broker::start().await;
    let args = [
        "webhooks",
        "--url",
        &b.url,
        "--drivers",
        "2",
        "--seconds",
        "2",
        "--verify",
        "--drain",
        "20",
    ];
    let v = run("webhooks", &args).await;
    assert_delivered("webhooks", &v);
    assert_eq!(v["deliveries"], v["expected"], "{v:#}");
    // Three changes per case, each one event, each one delivery.
    assert_eq!(v["deliveries"], v["changes"], "{v:#}");
    assert_eq!(v["verify"], true, "{v:#}");
    assert!(v["p99_ms"].is_number(), "{v:#}");
    assert!(
        v["broker_attempts"]["delivered"].as_f64().unwrap() >= v["changes"].as_f64().unwrap(),
        "{v:#}"
    );
    // At a rate, and for chosen types only: closes are not sent.
    let v = run(
        "webhooks-rate",
        &[
            "webhooks",
            "--url",
            &b.url,
            "--rate",
            "300",
            "--seconds",
            "1",
            "--events",
            "case.created,case.deleted",
        ],
    )
    .await;
    assert_delivered("webhooks-rate", &v);
    assert_eq!(v["deliveries"], v["expected"], "{v:#}");
    let changes = v["changes"].as_u64().unwrap();
    assert_eq!(v["deliveries"].as_u64().unwrap() * 3, changes * 2, "{v:#}");
}

/// `--receiver-only` receives what another run changes (here `webhooks
/// --no-endpoint`, the same changes without an endpoint of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_receiver_only_gets_another_runs_changes() {
    let b = Broker::start().await;
    // run_cli's future is not Send (bare holds stdout's lock): both runs
    // go on in this task.
    let receiver_args = [
        "webhooks",
        "--url",
        &b.url,
        "--receiver-only",
        "--seconds",
        "4",
    ];
    let receiver = run("webhooks-receiver", &receiver_args);
    let driver = async {
        // Wait until the receiver's endpoint is registered.
        let addr = casebroker_loadtest::target::loopback_addr(&b.url).unwrap();
        let mut http = casebroker_loadtest::http::Http::new(addr);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let r = http
                .get("/v1/admin/webhooks", "load-admin-token")
                .await
                .unwrap();
            if r.json()["webhooks"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no endpoint registered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        run(
            "webhooks-no-endpoint",
            &[
                "webhooks",
                "--url",
                &b.url,
                "--no-endpoint",
                "--seconds",
                "1",
            ],
        )
        .await
    };
    let (v, driven) = tokio::join!(receiver, driver);
    assert_eq!(driven["driver_errors"], 0, "{driven:#}");
    assert!(driven["deliveries"].is_null(), "{driven:#}");
    let changes = driven["changes"].as_u64().unwrap();
    assert!(changes > 0, "{driven:#}");
    assert_delivered("webhooks-receiver", &v);
    assert_eq!(v["deliveries"].as_u64().unwrap(), changes, "{v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_say_so_when_the_broker_refuses_a_loopback_receiver() {
    let config = include_str!("../casebroker-load.toml").replace(
        "webhook_allow_private = true",
        "webhook_allow_private = false",
    );
    let b = Broker::with_config(&config).await;
    let argv = [
        "casebroker-loadtest",
        "webhooks",
        "--url",
        &b.url,
        "--seconds",
        "1",
        "--no-progress",
    ];
    let cli = Cli::try_parse_from(argv).unwrap();
    let Err(e) = run_cli(cli).await else {
        panic!("a refused endpoint was not an error")
    };
    assert!(
        format!("{e:#}").contains("webhook_allow_private = true"),
        "{e:#}"
    );
}
