//! The binary as a team first runs it: SIGHUP is logged and it goes on
//! serving, a config without companies is refused before listening, a new
//! data directory says so and a used one is restored, the pages of every
//! company are printed, and trace logs carry no token, chat, signal or
//! Redis password.

use crate::util::process::{BROKER, Process};

use super::*;

const SECRET_CHAT: &str = "my-pin-is-8472";
const SECRET_SIGNAL: &str = "sdp-offer-3f9a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_is_logged_and_the_broker_goes_on_serving() {
    let broker = Process::start(
        BROKER,
        Some(&config_text("")),
        &["--listen", "127.0.0.1:0"],
        &[],
    );
    let addr = broker.listening().await;
    broker.signal("HUP");
    broker.line("SIGHUP received and ignored").await;
    let (status, _) = Endpoint::new(addr)
        .http("GET", "/healthz", None, None)
        .await;
    assert_eq!(status, 200, "still serving");
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
async fn the_worker_threads_are_the_configs_or_the_flags() {
    let threads = |at: Endpoint| async move {
        let text = scrape(&at).await;
        value(&text, "casebroker_worker_threads")
    };
    // By default, one per core the broker may use.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let default = Process::start(
        BROKER,
        Some(&config_text("")),
        &["--listen", "127.0.0.1:0"],
        &[],
    );
    assert_eq!(
        threads(Endpoint::new(default.listening().await)).await,
        cores
    );
    let config = Process::start(
        BROKER,
        Some(&config_text("workers = 3")),
        &["--listen", "127.0.0.1:0"],
        &[],
    );
    assert_eq!(threads(Endpoint::new(config.listening().await)).await, 3.0);
    // The flag overrides the config.
    let flag = Process::start(
        BROKER,
        Some(&config_text("workers = 3")),
        &["--listen", "127.0.0.1:0", "--workers", "1"],
        &[],
    );
    assert_eq!(threads(Endpoint::new(flag.listening().await)).await, 1.0);
    for bad in ["0", "1025", "many"] {
        let broker = Process::start(
            BROKER,
            None,
            &["--listen", "127.0.0.1:0", "--workers", bad],
            &[],
        );
        let status = broker.exit(WAIT * 2).await;
        assert_eq!(
            status.code(),
            Some(64),
            "--workers {bad}: {}",
            broker.output()
        );
        let out = broker.output();
        assert!(out.contains("workers"), "--workers {bad}: {out}");
        assert!(!out.contains("listening"), "--workers {bad}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_without_companies_is_refused_before_listening() {
    let broker = Process::start(
        BROKER,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_data_directory_says_so_and_a_used_one_is_restored() {
    let config = config_text("data_dir = \"data\"");
    let first = Process::start(BROKER, Some(&config), &["--listen", "127.0.0.1:0"], &[]);
    first.line("a new data directory: no cases yet").await;
    let at = Endpoint::new(first.listening().await);
    create_over_http(&at, ALICE, json!({"group": "support", "name": "Kept"})).await;
    let dir = first.stop().await;
    let second = Process::start_in(
        BROKER,
        dir,
        Some(&config),
        &["--listen", "127.0.0.1:0"],
        &[],
    );
    second.line("cases restored from the data directory").await;
    assert!(!second.output().contains("a new data directory"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_prints_the_pages_of_every_company() {
    let broker = Process::start(
        BROKER,
        Some(&config_text("")),
        &["--listen", "127.0.0.1:0"],
        &[],
    );
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
        BROKER,
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
    let node = Process::start(
        BROKER,
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
