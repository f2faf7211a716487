//! CI smoke test of the load tester: every scenario runs for a second or
//! two with small counts against a casebroker started in this process (on
//! `127.0.0.1:0`, with `casebroker-load.toml`), through the same command
//! line a person would type; `crash` starts the casebroker binary of this
//! build itself, and `fanout --baseline` starts the bare and the corked
//! Node.js baselines; `webhooks` registers its own receiver. It asserts
//! correctness only (nothing lost, `seq` in order, no failures, the JSON
//! keys present), never timing.
//!
//! This file holds what the tests share: the broker started in this
//! process, running a command line and reading its JSON, the fan-out
//! checks, and finding (and building) the casebroker binary. The tests
//! are in `smoke/` (named by `#[path]`: this file is the crate's root, so
//! a plain `mod` would look for them beside it, where cargo would take
//! each for a test of its own):
//! - `fanout`: `fanout` as fast as possible and at a rate, and `mixed`.
//! - `cases`: `lifecycle` and `queue-depth`.
//! - `processes`: `idle` across worker processes, and the exit code of a
//!   URL or host outside loopback.
//! - `baseline`: `fanout` against the bare and the Node.js baselines.
//! - `crash`: `crash` against this build's broker binary.
//! - `webhooks`: `webhooks` with its receiver, receiver-only and driver
//!   only, and a broker that refuses a loopback receiver.

#[path = "smoke/baseline.rs"]
mod baseline;
#[path = "smoke/cases.rs"]
mod cases;
#[path = "smoke/crash.rs"]
mod crash;
#[path = "smoke/fanout.rs"]
mod fanout;
#[path = "smoke/processes.rs"]
mod processes;
#[path = "smoke/webhooks.rs"]
mod webhooks;

use std::path::{Path, PathBuf};
use std::time::Duration;

use casebroker::Config;
use casebroker_loadtest::report::JSON_KEYS;
use casebroker_loadtest::{Cli, run_cli};
use casebroker_testkit::InProcess;
use clap::Parser;
use serde_json::Value;

/// The config of the brokers started here: `casebroker-load.toml`.
const LOAD_CONFIG: &str = include_str!("../casebroker-load.toml");

/// A broker on `toml` (`LOAD_CONFIG` but for a few tests), run in this
/// process on a free loopback port; stopped when dropped.
async fn broker(toml: &str) -> InProcess {
    InProcess::start(Config::from_toml(toml).expect("a valid config")).await
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
