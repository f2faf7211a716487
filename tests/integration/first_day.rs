//! What a team meets on its first day: signals, start-up messages and
//! refusals of the binary, a person removed from the config, the limits
//! and headers a probe of the broker found wanting.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::process::Process;
use crate::util::*;

const SECRET_CHAT: &str = "my-pin-is-8472";
const SECRET_SIGNAL: &str = "sdp-offer-3f9a";

/// GET `path` on a process's listener; the status.
async fn status_of(addr: std::net::SocketAddr, path: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .timeout(WAIT)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_is_logged_and_the_broker_goes_on_serving() {
    let mut broker = Process::start(Some(&config_text("")), &["--listen", "127.0.0.1:0"], &[]);
    let addr = broker.listening().await;
    broker.signal("HUP");
    broker.line("SIGHUP received and ignored").await;
    assert_eq!(status_of(addr, "/healthz").await, 200, "still serving");
    broker.signal("TERM");
    let status = broker.exit(WAIT * 3).await;
    assert!(status.success(), "{status}");
    let out = broker.output();
    assert!(out.contains("shutting down"), "{out}");
    assert!(out.contains("casebroker stopped"), "{out}");
    // Written to a pipe: no colour codes.
    assert!(!out.contains('\u{1b}'), "ANSI codes in piped logs:\n{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_without_companies_is_refused_before_listening() {
    let mut broker = Process::start(
        Some("in_memory = true\n"),
        &["--listen", "127.0.0.1:0"],
        &[],
    );
    let status = broker.exit(WAIT * 2).await;
    assert_eq!(status.code(), Some(64), "{}", broker.output());
    let out = broker.output();
    assert!(out.contains("[[companies]]"), "{out}");
    assert!(!out.contains("listening"), "{out}");
}

/// Creates a case as alice over a process's HTTP API.
async fn create_over_http(addr: std::net::SocketAddr, group: &str, name: &str) {
    let created = reqwest::Client::new()
        .post(format!("http://{addr}/v1/cases"))
        .bearer_auth(ALICE)
        .json(&json!({"group": group, "name": name}))
        .timeout(WAIT)
        .send()
        .await
        .expect("create a case");
    assert_eq!(created.status().as_u16(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_data_directory_says_so_and_a_used_one_is_restored() {
    let config = config_text("data_dir = \"data\"");
    let first = Process::start(Some(&config), &["--listen", "127.0.0.1:0"], &[]);
    first.line("a new data directory: no cases yet").await;
    let addr = first.listening().await;
    create_over_http(addr, "support", "Kept").await;
    let dir = first.stop().await;
    let second = Process::start_in(dir, Some(&config), &["--listen", "127.0.0.1:0"], &[]);
    second.line("cases restored from the data directory").await;
    assert!(!second.output().contains("a new data directory"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_prints_the_pages_of_every_company() {
    let broker = Process::start(Some(&config_text("")), &["--listen", "127.0.0.1:0"], &[]);
    let addr = broker.listening().await;
    broker.line("agent dashboard").await;
    broker
        .line(&format!("http://{addr}/help/{GLOBEX_MODULE}"))
        .await;
    let out = broker.output();
    for want in [
        format!("http://{addr}/"),
        format!("http://{addr}/help/{MODULE}"),
        format!("http://{addr}/help/{MODULE_SALES}"),
        "company acme (ACME)".to_string(),
        "company globex (Globex)".to_string(),
    ] {
        assert!(out.contains(&want), "no {want} in:\n{out}");
    }
    // Tokens are never printed.
    for token in [ALICE, BOB, GINA] {
        assert!(!out.contains(token), "a token in the output:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_carry_no_token_chat_or_signal_and_no_redis_password() {
    let broker = Process::start(
        Some(&config_text("")),
        &["--listen", "127.0.0.1:0"],
        &[("RUST_LOG", "trace")],
    );
    let addr = broker.listening().await;
    let url = format!("ws://{addr}/v1/ws");
    let mut bob = WsClient::connect(&url).await;
    bob.ok(
        json!({"type": "hello", "role": "agent", "token": BOB}),
        "welcome",
    )
    .await;
    let case = bob
        .ok(
            json!({"type": "create_case", "group": "support", "name": "Trace"}),
            "case",
        )
        .await;
    let code = case["case"]["code"].as_str().unwrap().to_string();
    let mut customer = WsClient::connect(&url).await;
    customer
        .ok(json!({"type": "hello", "role": "customer"}), "welcome")
        .await;
    customer
        .ok(json!({"type": "join", "code": code}), "joined")
        .await;
    bob.ok(json!({"type": "join", "code": code}), "joined")
        .await;
    bob.ok(
        json!({"type": "chat", "code": code, "text": SECRET_CHAT}),
        "sent",
    )
    .await;
    customer
        .send(json!({"type": "signal", "data": {"sdp": SECRET_SIGNAL}}))
        .await;
    let signal = bob.wait_type("signal").await;
    assert_eq!(signal["data"]["sdp"], SECRET_SIGNAL);
    customer.wait_type("chat").await;
    bob.sync().await;
    let out = broker.output();
    assert!(
        out.contains("TRACE") || out.contains("DEBUG"),
        "trace is on"
    );
    for secret in [BOB, SECRET_CHAT, SECRET_SIGNAL] {
        assert!(!out.contains(secret), "{secret} in the trace log");
    }

    // A Redis URL's password is never printed, even in the refusal of a
    // node that cannot reach it.
    let mut node = Process::start(
        Some(&config_text("")),
        &[
            "--listen",
            "127.0.0.1:0",
            "--redis-url",
            "redis://casebroker:s3cret-pw@127.0.0.1:1",
        ],
        &[("RUST_LOG", "trace")],
    );
    let status = node.exit(Duration::from_secs(30)).await;
    assert!(!status.success());
    let out = node.output();
    assert!(out.contains("casebroker:***@127.0.0.1:1"), "{out}");
    assert!(
        !out.contains("s3cret-pw"),
        "the password in the output:\n{out}"
    );
}

/// A config with bob, a journaled broker on `dir`.
fn with_data(dir: &TempDir, extra: &str) -> String {
    format!("data_dir = \"{}\"\n{extra}", dir.path().display())
}

/// The test config without one agent (by id) or one group.
fn without(text: &str, what: &str) -> String {
    match what {
        "bob" => text
            .replace(
                &format!(
                    "[[companies.agents]]\nid = \"bob\"\nname = \"Bob\"\ntoken = \"{BOB}\"\ngroups = [\"support\"]\n"
                ),
                "",
            )
            .replace("default_assignee = \"bob\"\n", ""),
        "sales" => text
            .replace(", { id = \"sales\" }", "")
            .replace("groups = [\"support\", \"sales\"]", "groups = [\"support\"]")
            .replace(
                &format!(
                    "[[companies.agents]]\nid = \"carol\"\nname = \"Carol\"\ntoken = \"{CAROL}\"\ngroups = [\"sales\"]\n"
                ),
                "",
            )
            .replace(
                &format!("[[companies.modules]]\nkey = \"{MODULE_SALES}\"\ngroup = \"sales\"\n"),
                "",
            ),
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_agent_keeps_its_history_and_its_open_cases_return_to_the_line() {
    let dir = TempDir::new("former");
    let full = config_text(&with_data(&dir, ""));
    let server = TestServer::with_config(casebroker::Config::from_toml(&full).unwrap()).await;
    let mut bob = server.agent(BOB).await;
    let open = bob
        .ok(
            json!({"type": "create_case", "group": "support", "name": "Open"}),
            "case",
        )
        .await["case"]["code"]
        .as_str()
        .unwrap()
        .to_string();
    let done = bob
        .ok(
            json!({"type": "create_case", "group": "support", "name": "Done"}),
            "case",
        )
        .await["case"]["code"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, _) = server
        .http(
            "POST",
            &format!("/v1/cases/{open}/assign"),
            Some(BOB),
            Some(json!({"assignee": "bob"})),
        )
        .await;
    assert_eq!(st, 200);
    bob.ok(json!({"type": "close", "code": done}), "case").await;
    drop(bob);
    server.stop().await;

    // Bob leaves the team: the broker starts without him.
    let config = casebroker::Config::from_toml(&without(&full, "bob")).unwrap();
    let server = TestServer::with_config(config).await;
    let (st, case) = server
        .http("GET", &format!("/v1/cases/{open}"), Some(ALICE), None)
        .await;
    assert_eq!(st, 200, "{case}");
    assert_eq!(case["assignee"], Value::Null, "back in the line: {case}");
    assert_eq!(case["created_by"], "bob", "the history keeps him: {case}");
    let (_, closed) = server
        .http("GET", &format!("/v1/cases/{done}"), Some(ALICE), None)
        .await;
    assert_eq!(closed["closed_by"], "bob", "{closed}");
    assert_eq!(closed["status"], "closed", "{closed}");
    // He cannot sign in, nor be given a case.
    let mut ws = server.ws().await;
    ws.send(json!({"type": "hello", "role": "agent", "token": BOB}))
        .await;
    let refused = ws.wait_type("error").await;
    assert_eq!(refused["code"], "unauthorized", "{refused}");
    let (st, body) = server
        .http(
            "POST",
            &format!("/v1/cases/{open}/assign"),
            Some(ALICE),
            Some(json!({"assignee": "bob"})),
        )
        .await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(body["code"], "bad_request", "{body}");
    let (_, agents) = server.http("GET", "/v1/agents", Some(ALICE), None).await;
    assert!(
        !agents.to_string().contains("\"bob\""),
        "a former agent is not listed: {agents}"
    );
    // And another agent takes the case.
    let mut dave = server.agent(DAVE).await;
    dave.ok(json!({"type": "join", "code": open}), "joined")
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_group_with_cases_is_refused_before_listening_with_64() {
    let first = Process::start(
        Some(&config_text("data_dir = \"data\"")),
        &["--listen", "127.0.0.1:0"],
        &[],
    );
    let addr = first.listening().await;
    create_over_http(addr, "sales", "Sales case").await;
    let dir = first.stop().await;
    let config = without(&config_text("data_dir = \"data\""), "sales");
    let mut second = Process::start_in(dir, Some(&config), &["--listen", "127.0.0.1:0"], &[]);
    let status = second.exit(WAIT * 2).await;
    assert_eq!(status.code(), Some(64), "{}", second.output());
    let out = second.output();
    assert!(out.contains("group \"sales\""), "{out}");
    assert!(!out.contains("listening"), "{out}");
}

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

in_every_mode!(
    successful_commands_count_no_error,
    a_successful_join_does_not_reset_the_back_off,
);

/// A client bound to its own loopback address (any of 127.0.0.0/8).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .timeout(WAIT)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_over_http_takes_json_from_an_allowed_origin_only() {
    let server = TestServer::start().await;
    let url = server.url("/v1/help");
    let body = json!({"module": MODULE, "name": "Ana"}).to_string();
    let http = reqwest::Client::new();
    let send = |content_type: Option<&'static str>, origin: Option<String>| {
        let mut req = http.post(&url).body(body.clone()).timeout(WAIT);
        if let Some(t) = content_type {
            req = req.header("content-type", t);
        }
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    let r = send(Some("text/plain"), None).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "bad_request", "{v}");
    let r = send(None, None).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = send(Some("application/json"), Some("http://evil.example".into()))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "forbidden", "{v}");
    let r = send(
        Some("application/json; charset=utf-8"),
        Some(format!("http://{}", server.addr)),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 201, "the broker's own origin");
    let r = send(Some("application/json"), None).await.unwrap();
    assert_eq!(r.status().as_u16(), 201, "no origin: not a browser");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_many_addresses_leaves_a_new_address_its_share() {
    let server = TestServer::with_config(config_with(
        "help_per_module_per_minute = 6\nhelp_per_ip_per_minute = 100",
    ))
    .await;
    let url = server.url("/v1/help");
    let body = json!({"module": MODULE, "name": "Flood"});
    let mut limited = 0;
    for n in 2..6 {
        let client = client_from(&format!("127.0.0.{n}"));
        for _ in 0..6 {
            let r = client.post(&url).json(&body).send().await.unwrap();
            if r.status().as_u16() == 429 {
                limited += 1;
            }
        }
    }
    assert!(limited > 0, "the module's limit was reached");
    // A new address still gets its share.
    let fresh = client_from("127.0.0.9");
    for _ in 0..3 {
        let r = fresh.post(&url).json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    let r = fresh.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429, "past its share too");
}

/// Reads what the server sends on `stream` until it closes (or `limit`).
async fn read_bytes(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut out)).await;
    out
}

/// The same, as text.
async fn read_all(stream: &mut TcpStream, limit: Duration) -> String {
    String::from_utf8_lossy(&read_bytes(stream, limit).await).into_owned()
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
        let r = client_from(&format!("127.0.0.{n}"))
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_rebinding_origin_is_not_the_brokers_own() {
    let server = TestServer::start().await;
    let port = server.addr.port();
    let upgrade = |host: String, origin: String| {
        let addr = server.addr;
        async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(
                format!(
                    "GET /v1/ws HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
            let mut head = [0u8; 12];
            let n = s.read(&mut head).await.unwrap();
            String::from_utf8_lossy(&head[..n]).into_owned()
        }
    };
    let evil = format!("evil.example:{port}");
    let got = upgrade(evil.clone(), format!("http://{evil}")).await;
    assert!(got.starts_with("HTTP/1.1 403"), "{got}");
    let own = format!("127.0.0.1:{port}");
    let got = upgrade(own.clone(), format!("http://{own}")).await;
    assert!(got.starts_with("HTTP/1.1 101"), "{got}");
    let local = format!("localhost:{port}");
    let got = upgrade(local.clone(), format!("http://{local}")).await;
    assert!(got.starts_with("HTTP/1.1 101"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_answers_are_not_cached_or_sniffed_and_405_says_so() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let r = http
        .get(server.url("/v1/cases"))
        .bearer_auth(ALICE)
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let r = http
        .put(server.url("/v1/help"))
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "method_not_allowed", "{v}");
}

/// A masked client frame: FIN, `first` (opcode and reserved bits), the
/// payload masked with a fixed key.
fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let key = [1u8, 2, 3, 4];
    let mut f = vec![first, (payload.len() as u8) | if masked { 0x80 } else { 0 }];
    if masked {
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// Opens a WebSocket by hand, says hello as a customer, sends `bad`; the
/// close code the broker answers with.
async fn close_code_for(server: &TestServer, bad: Vec<u8>) -> u16 {
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        format!(
            "GET /v1/ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    s.write_all(&frame(0x81, br#"{"type":"hello","role":"customer"}"#, true))
        .await
        .unwrap();
    s.write_all(&bad).await.unwrap();
    let answer = read_bytes(&mut s, WAIT).await;
    // The last frame is the close: 0x88, length, code.
    let at = answer
        .windows(2)
        .rposition(|w| w[0] == 0x88 && w[1] >= 2)
        .unwrap_or_else(|| panic!("no close frame in {:?}", String::from_utf8_lossy(&answer)));
    u16::from_be_bytes([answer[at + 2], answer[at + 3]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_frames_get_the_close_code_that_says_why() {
    let server = TestServer::start().await;
    assert_eq!(
        close_code_for(&server, frame(0x81, &[0xff, 0xfe, 0xfd], true)).await,
        1007,
        "text that is not UTF-8"
    );
    assert_eq!(
        close_code_for(&server, frame(0x81, b"{}", false)).await,
        1002,
        "an unmasked frame"
    );
    assert_eq!(
        close_code_for(&server, frame(0xC1, b"{}", true)).await,
        1002,
        "a reserved bit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_given_twice_means_its_last_value_on_both_paths() {
    let server = TestServer::start().await;
    let text = r#"{"group": "nope", "group": "support", "name": "Twice"}"#;
    let (st, case) = server
        .http_raw("POST", "/v1/cases", Some(ALICE), text)
        .await;
    assert_eq!(st, 201, "{case}");
    assert_eq!(case["group"], "support");
    let mut alice = server.agent(ALICE).await;
    alice
        .send_text(r#"{"type": "create_case", "group": "nope", "group": "support", "id": "t"}"#)
        .await;
    let reply = alice.wait_for("the reply", |m| m["id"] == "t").await;
    assert_eq!(reply["type"], "case", "{reply}");
    assert_eq!(reply["case"]["group"], "support");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_with_markup_or_header_breaks_is_refused() {
    let server = TestServer::start().await;
    for email in [
        "<script>@\r\nBcc: x",
        "ana@example.com\r\nBcc: x@y.z",
        "ana example@example.com",
        "ana@localhost",
        "@example.com",
        "ana@",
        "a@b@example.com",
    ] {
        let (st, body) = server
            .http(
                "POST",
                "/v1/cases",
                Some(ALICE),
                Some(json!({"group": "support", "customer": {"name": "Ana", "email": email}})),
            )
            .await;
        assert_eq!(st, 400, "{email:?}: {body}");
        assert_eq!(body["code"], "bad_request", "{email:?}: {body}");
    }
    let (st, _) = server
        .http(
            "POST",
            "/v1/cases",
            Some(ALICE),
            Some(json!({"group": "support", "customer": {"name": "Ana", "email": "ana.o'neil+help@example.co.uk"}})),
        )
        .await;
    assert_eq!(st, 201);
}

/// The broker's `/metrics` value of `series`, 0 when absent.
async fn metric_of(addr: std::net::SocketAddr, series: &str) -> f64 {
    let text = scrape_with(&reqwest::Client::new(), &format!("http://{addr}/metrics")).await;
    metric(&text, series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_that_never_read_pin_no_more_than_the_large_message_budget() {
    const CASES: usize = 1500;
    const READERS: usize = 40;
    const BUDGET: u64 = 16 * 1024 * 1024;
    let broker = Process::start(
        Some(&config_text(&format!(
            "outbox_bytes = 65536\nlarge_messages_bytes = {BUDGET}\n{UNLIMITED}"
        ))),
        &["--listen", "127.0.0.1:0"],
        &[],
    );
    let addr = broker.listening().await;
    let url = format!("ws://{addr}/v1/ws");
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
    while metric_of(addr, "casebroker_disconnects_total{reason=\"slow\"}").await
        < (READERS / 2) as f64
    {
        assert!(
            std::time::Instant::now() < until,
            "the budget turned no subscriber away"
        );
        // Alice keeps talking meanwhile, so that a slow machine does not
        // take her for a silent connection (ping_interval + pong_timeout).
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
    assert_eq!(status_of(addr, "/healthz").await, 200);
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_key_tells_its_company_name_and_nothing_for_an_unknown_key() {
    let server = TestServer::start().await;
    let (st, body) = server
        .http("GET", &format!("/v1/modules/{MODULE}"), None, None)
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        body,
        json!({"module": MODULE, "company": {"name": "ACME"}, "group": "support"})
    );
    let (st, body) = server
        .http("GET", &format!("/v1/modules/{GLOBEX_MODULE}"), None, None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(body["company"]["name"], "Globex");
    let (st, body) = server
        .http("GET", "/v1/modules/no-such-key", None, None)
        .await;
    assert_eq!(st, 404, "{body}");
    assert_eq!(body["code"], "not_found");
}
