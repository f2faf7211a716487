//! Shutdown with sockets open: every socket is closed with 4000 within the
//! grace, in process and when the binary gets SIGTERM, which then exits 0.

use std::time::Duration;

use crate::util::process::{BROKER, Process};

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

#[tokio::test]
async fn sigterm_closes_sockets_with_4000_and_exits_0() {
    let config = format!(
        "shutdown_grace = \"2s\"\nin_memory = true\n\n[[companies]]\nid = \"acme\"\ngroups = [{{ id = \"support\" }}]\n\n[[companies.agents]]\nid = \"alice\"\ntoken = \"{ALICE}\"\ngroups = [\"support\"]\n"
    );
    let broker = Process::start(BROKER, Some(&config), &["--listen", "127.0.0.1:0"], &[]);
    let addr = broker.listening().await;

    let url = format!("ws://{addr}/v1/ws");
    let mut ws = WsClient::connect(&url).await;
    ws.send(json!({"type": "hello", "role": "agent", "token": ALICE}))
        .await;
    ws.wait_type("welcome").await;
    ws.sync().await;

    broker.signal("TERM");
    assert_eq!(ws.closed().await.0, Closed::Code(4000));
    // Within its grace (2 s), and a little more to exit.
    let status = broker
        .exit(Duration::from_secs(2) + Duration::from_secs(3))
        .await;
    assert_eq!(status.code(), Some(0), "{status:?}; {}", broker.output());
}
