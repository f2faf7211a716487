//! `fanout` against the baselines: `--baseline bare` and `--baseline
//! node-corked`, which the load tester starts itself and compares with
//! casebroker in the same run, and a plain run against the Node.js
//! baseline started here.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::{LOAD_CONFIG, assert_complete, broker, run, run_with_table};

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
    let b = broker(LOAD_CONFIG).await;
    let (v, table) = run_with_table(
        name,
        &[
            "fanout",
            "--url",
            &b.ws_url(),
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
