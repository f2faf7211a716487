//! The tests that start this package's binary as a child process: `idle`
//! spreading its connections over worker processes, and the exit code 2
//! of a URL or a host outside loopback.

use super::{LOAD_CONFIG, broker, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_holds_connections_across_worker_processes() {
    let b = broker(LOAD_CONFIG).await;
    // 15 sockets per process: this process holds 15, two workers the rest.
    let v = run(
        "idle",
        &[
            "idle",
            "--url",
            &b.ws_url(),
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
