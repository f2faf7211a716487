//! Shutdown with sockets open: every socket is closed with 4000 within the
//! grace, in process and when the binary gets SIGTERM, which then exits 0.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

// 12. Graceful shutdown ----------------------------------------------------------------------

#[tokio::test]
async fn shutdown_closes_every_socket_with_4000_within_the_grace() {
    let grace = Duration::from_secs(2);
    let server = TestServer::with_config(config_with("shutdown_grace = \"2s\"")).await;
    let (mut customer, joined) = request_help(&server, MODULE).await;
    let code = joined["code"].as_str().unwrap().to_string();
    let mut alice = server.agent(ALICE).await;
    alice.ok(json!({"type": "subscribe"}), "snapshot").await;
    alice
        .ok(json!({"type": "join", "code": code}), "joined")
        .await;
    let mut silent = server.ws().await; // never says hello

    timeout(grace + Duration::from_secs(1), server.shutdown())
        .await
        .expect("run returns within the grace period");
    assert_eq!(alice.closed().await.0, Closed::Code(4000));
    assert_eq!(customer.closed().await.0, Closed::Code(4000));
    assert_eq!(silent.closed().await.0, Closed::Code(4000));
}

/// Kills the child if the test ends while it still runs.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test]
async fn sigterm_closes_sockets_with_4000_and_exits_0() {
    let path = std::env::temp_dir().join(format!(
        "casebroker-hostile-{}-{}.toml",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(
        &path,
        format!(
            "shutdown_grace = \"2s\"\nin_memory = true\n\n[[companies]]\nid = \"acme\"\ngroups = [{{ id = \"support\" }}]\n\n[[companies.agents]]\nid = \"alice\"\ntoken = \"{ALICE}\"\ngroups = [\"support\"]\n"
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_casebroker"))
        .arg("--config")
        .arg(&path)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--log-format")
        .arg("json")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let mut child = Running(child);
    let pid = child.0.id();

    // The listening address from the log line (on stdout or stderr); both
    // pipes are drained for the life of the process.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let mut readers = Vec::new();
    let out: Box<dyn std::io::Read + Send> = Box::new(child.0.stdout.take().unwrap());
    let err: Box<dyn std::io::Read + Send> = Box::new(child.0.stderr.take().unwrap());
    for pipe in [out, err] {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["fields"]["message"] == "casebroker listening"
                    && let Some(addr) = v["fields"]["addr"].as_str()
                {
                    let _ = tx.send(addr.to_string());
                }
            }
        }));
    }
    drop(tx);
    let addr: SocketAddr = tokio::task::spawn_blocking(move || rx.recv_timeout(WAIT * 2))
        .await
        .unwrap()
        .expect("the binary logs its listening address")
        .parse()
        .expect("a socket address");
    let _ = std::fs::remove_file(&path);

    let url = format!("ws://{addr}/v1/ws");
    let mut ws = WsClient::connect(&url).await;
    ws.send(json!({"type": "hello", "role": "agent", "token": ALICE}))
        .await;
    ws.wait_type("welcome").await;
    ws.sync().await;

    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(killed.success());
    assert_eq!(ws.closed().await.0, Closed::Code(4000));

    let deadline = Instant::now() + Duration::from_secs(2) + Duration::from_secs(3);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the binary still runs after its grace period"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
    for r in readers {
        let _ = r.join();
    }
}
