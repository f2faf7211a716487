//! Limits a probe found wanting: successful commands count no error, a
//! successful join does not reset the back-off, a flood from many addresses
//! leaves a new address its share, a trickled body gets 408 and loses its
//! connection, one address cannot take the last connection slots, and
//! subscribers that never read pin no more than the large-message budget.

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::util::process::{BROKER, Process};

use super::*;

async fn successful_commands_count_no_error(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut bob = server.agent(BOB).await;
    for _ in 0..5 {
        create_case(&mut bob, "support").await;
    }
    let text = scrape(&server).await;
    assert_eq!(
        metric(&text, "casebroker_errors_total{code=\"unavailable\"}").unwrap_or(0.0),
        0.0,
        "{text}"
    );
}

/// Joins `code` as a new customer; the reply.
async fn try_join(server: &TestServer, code: &str) -> Value {
    let mut c = server.customer().await;
    c.request(json!({"type": "join", "code": code})).await
}

/// Joins `code` and expects `rate_limited` with a wait of `seconds`.
async fn blocked_for(server: &TestServer, code: &str, seconds: u64) {
    let blocked = try_join(server, code).await;
    assert_eq!(blocked["code"], "rate_limited", "{blocked}");
    let message = blocked["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("retry in {seconds} s")),
        "{blocked}"
    );
}

async fn a_successful_join_does_not_reset_the_back_off(mode: Mode) {
    let server = TestServer::with_extra_in(
        mode,
        "failed_joins_per_minute = 2\nmax_join_backoff = \"1m\"",
    )
    .await;
    let mut alice = server.agent(ALICE).await;
    let mine = create_case(&mut alice, "support").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let wrong = "s00-000-001";
    for _ in 0..2 {
        let r = try_join(&server, wrong).await;
        assert_eq!(r["code"], "not_found", "{r}");
    }
    blocked_for(&server, wrong, 1).await;
    // Wait out the first block, asking again until it lapses.
    let until = std::time::Instant::now() + WAIT;
    let joined = loop {
        let r = try_join(&server, &mine).await;
        if r["type"] == "joined" {
            break r;
        }
        assert_eq!(r["code"], "rate_limited", "{r}");
        assert!(std::time::Instant::now() < until, "the block never lapsed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(joined["code"], mine.as_str());
    // The success changed nothing: the next failure blocks for longer.
    let r = try_join(&server, wrong).await;
    assert_eq!(r["code"], "not_found", "{r}");
    // The back-off doubled.
    blocked_for(&server, wrong, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_many_addresses_leaves_a_new_address_its_share() {
    let server = TestServer::with_config(config_with(
        "help_per_module_per_minute = 6\nhelp_per_ip_per_minute = 100",
    ))
    .await;
    let body = json!({"module": MODULE, "name": "Flood"});
    let mut limited = 0;
    for n in 2..6 {
        let from = server.sending_from(loopback(n));
        for _ in 0..6 {
            let (status, _) = from
                .http("POST", "/v1/help", None, Some(body.clone()))
                .await;
            if status == 429 {
                limited += 1;
            }
        }
    }
    assert!(limited > 0, "the module's limit was reached");
    // A new address still gets its share.
    let fresh = server.sending_from(loopback(9));
    for _ in 0..3 {
        let (status, answer) = fresh
            .http("POST", "/v1/help", None, Some(body.clone()))
            .await;
        assert_eq!(status, 201, "{answer}");
    }
    let (status, answer) = fresh.http("POST", "/v1/help", None, Some(body)).await;
    assert_eq!(status, 429, "past its share too: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_gets_408_and_loses_its_connection() {
    let server = TestServer::with_config(config_with("request_timeout = \"1s\"")).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        format!(
            "POST /v1/help HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{{",
            server.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let answer = read_all(&mut s, WAIT).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"timeout\""), "{answer}");
    let text = scrape(&server).await;
    assert_eq!(
        value(
            &text,
            "casebroker_connections_refused_total{reason=\"request_timeout\"}"
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_the_last_connection_slots() {
    let server = TestServer::with_config(config_with(
        "max_connections = 20\nhandshake_timeout = \"30s\"",
    ))
    .await;
    // One address opens connections and sends nothing (as a slow client
    // would): it gets up to the reserve (the last tenth), no further.
    let mut held = Vec::new();
    let mut refused = None;
    for _ in 0..30 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut s = socket.connect(server.addr).await.unwrap();
        let mut first = [0u8; 12];
        match tokio::time::timeout(Duration::from_millis(150), s.read(&mut first)).await {
            Ok(Ok(n)) if n > 0 => {
                refused = Some(String::from_utf8_lossy(&first[..n]).into_owned());
                break;
            }
            _ => held.push(s),
        }
    }
    let refused = refused.expect("the address was refused at some point");
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert_eq!(held.len(), 18, "up to capacity less the reserve");
    // Other addresses still get in, and the broker answers them.
    for n in 3..5 {
        let from = server.sending_from(loopback(n));
        let (status, _) = from.http("GET", "/healthz", None, None).await;
        assert_eq!(status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_that_never_read_pin_no_more_than_the_large_message_budget() {
    const CASES: usize = 1500;
    const READERS: usize = 40;
    const BUDGET: u64 = 16 * 1024 * 1024;
    // No pings in the test's time: Alice reads only between steps, and on
    // a loaded machine connecting the readers can outlast a pong's wait
    // (she was closed 1001 at eight test threads).
    let broker = Process::start(
        BROKER,
        Some(&config_text(&format!(
            "outbox_bytes = 65536\nlarge_messages_bytes = {BUDGET}\nping_interval = \"1h\"\n{UNLIMITED}"
        ))),
        &["--listen", "127.0.0.1:0"],
        &[],
    );
    let at = Endpoint::new(broker.listening().await);
    let url = at.ws_url();
    // A queue whose snapshot is about 6.5 MB.
    let mut alice = WsClient::connect(&url).await;
    alice
        .ok(
            json!({"type": "hello", "role": "agent", "token": ALICE}),
            "welcome",
        )
        .await;
    let description = "x".repeat(4000);
    for i in 0..CASES {
        alice
            .send(
                json!({"type": "create_case", "group": "support", "name": format!("Big {i}"),
                         "description": description, "id": i}),
            )
            .await;
    }
    let last = (CASES - 1) as u64;
    alice.wait_for("the last case", |m| m["id"] == last).await;
    alice.clear();
    let before = broker.rss();

    // Agents that subscribe and never read a byte.
    let mut silent = Vec::new();
    for _ in 0..READERS {
        let mut ws = WsClient::connect(&url).await;
        ws.send(json!({"type": "hello", "role": "agent", "token": ALICE}))
            .await;
        ws.send(json!({"type": "subscribe"})).await;
        silent.push(ws);
    }
    // Those whose snapshot found no budget left are closed with 4001.
    let until = std::time::Instant::now() + WAIT * 2;
    while metric(
        &scrape(&at).await,
        "casebroker_disconnects_total{reason=\"slow\"}",
    )
    .unwrap_or(0.0)
        < (READERS / 2) as f64
    {
        assert!(
            std::time::Instant::now() < until,
            "the budget turned no subscriber away"
        );
        alice.sync().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let grown = broker.rss().saturating_sub(before);
    assert!(
        grown < BUDGET + 48 * 1024 * 1024,
        "{READERS} silent subscribers grew the broker by {} MB",
        grown / 1024 / 1024
    );
    // The broker still serves everyone else.
    alice.sync().await;
    assert_eq!(at.http("GET", "/healthz", None, None).await.0, 200);
    drop(silent);
}

in_every_mode!(
    successful_commands_count_no_error,
    a_successful_join_does_not_reset_the_back_off,
);
