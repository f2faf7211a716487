//! Several brokers on one real `redis-server`: any node serves anyone,
//! one ordered stream per company, claims with one winner, dead nodes and
//! a Redis that goes away.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::redis::RedisServer;
use crate::util::{
    ALICE, BOB, DAVE, MODULE, TestServer, WsClient, config_text, config_with, scrape,
};

/// How long a dead node's seats may take to be released: its timeout
/// (3 s here), a heartbeat, and slack for a loaded machine.
const RELEASE_WAIT: Duration = Duration::from_secs(15);

/// A node run as its own process, killed with SIGKILL when dropped.
struct ProcessNode {
    child: Child,
    port: u16,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl ProcessNode {
    /// Starts the broker binary as a node of `redis` and waits until its
    /// `/healthz` answers.
    async fn start(redis: &RedisServer, name: &str) -> ProcessNode {
        let dir =
            std::env::temp_dir().join(format!("casebroker-node-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("casebroker.toml");
        std::fs::write(&config, config_text(&cluster_table(redis, name, ""))).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_casebroker"))
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the binary");
        let node = ProcessNode {
            child,
            port,
            _dir: TempDir(dir),
        };
        let http = reqwest::Client::new();
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let r = http
                .get(format!("http://127.0.0.1:{port}/healthz"))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if r.is_ok_and(|r| r.status() == 200) {
                return node;
            }
            assert!(Instant::now() < until, "the node process did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/v1/ws", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ProcessNode {
    fn drop(&mut self) {
        self.kill();
    }
}

fn cluster_table(redis: &RedisServer, name: &str, extra: &str) -> String {
    format!(
        "{extra}\n[cluster]\nredis_url = \"{}\"\nnode_id = \"{name}\"\nnode_timeout = \"3s\"\n",
        redis.url()
    )
}

/// The node's `/metrics` text (answered 200).
/// Polls `/healthz` until it answers `want`, for at most `limit`.
async fn health_becomes(node: &TestServer, want: u16, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        let resp = reqwest::Client::new()
            .get(node.url("/healthz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if resp.is_ok_and(|r| r.status().as_u16() == want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Waits for a message, for longer than the usual wait.
async fn wait_long(
    ws: &mut WsClient,
    what: &str,
    limit: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let until = Instant::now() + limit;
    loop {
        match tokio::time::timeout(Duration::from_millis(200), ws.wait_for(what, &pred)).await {
            Ok(v) => return v,
            Err(_) => assert!(
                Instant::now() < until,
                "no {what} within {limit:?}; pending {:?}",
                ws.pending()
            ),
        }
    }
}

/// A node of the cluster on `redis`, on a free loopback port.
async fn node(redis: &RedisServer, name: &str) -> TestServer {
    node_with(redis, name, "").await
}

async fn node_with(redis: &RedisServer, name: &str, extra: &str) -> TestServer {
    // The companies follow the `[cluster]` table in config_with.
    TestServer::with_config(config_with(&cluster_table(redis, name, extra))).await
}

/// A Redis and two nodes on it, `a` and `b`.
async fn two_nodes() -> (RedisServer, TestServer, TestServer) {
    let redis = RedisServer::start();
    let a = node(&redis, "a").await;
    let b = node(&redis, "b").await;
    (redis, a, b)
}

async fn subscribe(ws: &mut WsClient) -> Value {
    ws.ok(json!({"type": "subscribe"}), "snapshot").await
}

/// Subscribes `ws` (already connected) again with `resume` from `epoch`
/// and `seq`, and asserts that the stream still holds that position: the
/// reply is `resumed`, in the same epoch.
async fn resume_on(ws: &mut WsClient, epoch: &Value, seq: u64) {
    let resumed = ws
        .ok(
            json!({"type": "subscribe", "resume": {"epoch": epoch, "seq": seq}}),
            "resumed",
        )
        .await;
    assert_eq!(&resumed["epoch"], epoch, "{resumed}");
}

async fn create(ws: &mut WsClient, name: &str) -> String {
    let reply = ws
        .ok(
            json!({"type": "create_case", "group": "support", "name": name}),
            "case",
        )
        .await;
    reply["case"]["code"].as_str().expect("a code").to_string()
}

/// The next `event` for `code` with this action.
async fn event(ws: &mut WsClient, code: &str, action: &str) -> Value {
    let (code, action) = (code.to_string(), action.to_string());
    ws.wait_for(&format!("{action} of {code}"), move |m| {
        m["type"] == "event" && m["case"]["code"] == code.as_str() && m["action"] == action.as_str()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_on_one_node_and_an_agent_on_another_meet_in_one_case() {
    let (_redis, a, b) = two_nodes().await;

    let mut bob = b.agent(BOB).await;
    let code = create(&mut bob, "Cross").await;

    // The customer joins on the other node, by the code made on b.
    let mut customer = a.customer().await;
    let joined = customer
        .ok(
            json!({"type": "join", "code": code, "name": "Ann"}),
            "joined",
        )
        .await;
    assert!(joined["resume_token"].is_string(), "{joined}");

    bob.ok(json!({"type": "join", "code": code}), "joined")
        .await;
    let status = customer
        .wait_for("in_progress", |m| {
            m["type"] == "status" && m["status"] == "in_progress"
        })
        .await;
    assert_eq!(status["supporter_connected"], true, "{status}");

    // Chat both ways, across the nodes.
    customer
        .ok(json!({"type": "chat", "text": "hello from a"}), "sent")
        .await;
    let line = bob.wait_type("chat").await;
    assert_eq!(line["text"], "hello from a", "{line}");
    bob.ok(
        json!({"type": "chat", "code": code, "text": "hello from b"}),
        "sent",
    )
    .await;
    let line = customer.wait_type("chat").await;
    assert_eq!(line["text"], "hello from b", "{line}");

    // Signalling data is relayed to the other node's seat.
    customer
        .send(json!({"type": "signal", "data": {"sdp": "offer"}}))
        .await;
    let signal = bob.wait_type("signal").await;
    assert_eq!(signal["data"]["sdp"], "offer", "{signal}");
    assert_eq!(signal["from"]["role"], "customer", "{signal}");

    // The agent closes on b; the customer on a is told and closed.
    bob.ok(json!({"type": "close", "code": code}), "case").await;
    let ended = customer.wait_type("ended").await;
    assert_eq!(ended["reason"], "closed", "{ended}");
    let (how, after) = customer.closed().await;
    assert_eq!(
        how,
        crate::util::Closed::Code(1000),
        "the customer's end: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_on_every_node_see_one_stream_and_resume_anywhere() {
    let (_redis, a, b) = two_nodes().await;

    let mut on_a = a.agent(ALICE).await;
    let mut on_b = b.agent(ALICE).await;
    let snap_a = subscribe(&mut on_a).await;
    let snap_b = subscribe(&mut on_b).await;
    assert_eq!(
        snap_a["epoch"], snap_b["epoch"],
        "one epoch: {snap_a} {snap_b}"
    );

    // Changes made on both nodes, in turn.
    let mut bob = a.agent(BOB).await;
    let mut dave = b.agent(DAVE).await;
    let mut codes = Vec::new();
    for i in 0..10 {
        let ws = if i % 2 == 0 { &mut bob } else { &mut dave };
        codes.push(create(ws, &format!("case {i}")).await);
    }
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    for code in &codes {
        let ea = event(&mut on_a, code, "created").await;
        let eb = event(&mut on_b, code, "created").await;
        seen_a.push(ea["seq"].as_u64().unwrap());
        seen_b.push(eb["seq"].as_u64().unwrap());
        assert_eq!(ea["epoch"], eb["epoch"]);
    }
    assert_eq!(seen_a, seen_b, "the same seqs on both nodes");
    assert!(
        seen_a.windows(2).all(|w| w[0] < w[1]),
        "in order: {seen_a:?}"
    );

    // A dashboard of a resumes on b with exactly what it missed.
    let epoch = snap_a["epoch"].clone();
    let last = *seen_a.last().unwrap();
    drop(on_a);
    let more = [
        create(&mut bob, "missed 1").await,
        create(&mut dave, "missed 2").await,
    ];
    let mut again = b.agent(ALICE).await;
    resume_on(&mut again, &epoch, last).await;
    for code in &more {
        let e = event(&mut again, code, "created").await;
        assert!(e["seq"].as_u64().unwrap() > last, "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_from_two_nodes_have_one_winner() {
    let (_redis, a, b) = two_nodes().await;
    let mut bob = a.agent(BOB).await;
    for round in 0..10 {
        let code = create(&mut bob, &format!("race {round}")).await;
        let mut c1 = a.customer().await;
        let mut c2 = b.customer().await;
        let j1 = json!({"type": "join", "code": code, "id": "j"});
        let j2 = j1.clone();
        c1.send(j1).await;
        c2.send(j2).await;
        let r1 = c1.wait_for("reply", |m| m["id"] == "j").await;
        let r2 = c2.wait_for("reply", |m| m["id"] == "j").await;
        let wins = [&r1, &r2].iter().filter(|r| r["type"] == "joined").count();
        assert_eq!(wins, 1, "exactly one customer sits down: {r1} {r2}");
        let loser = if r1["type"] == "joined" { &r2 } else { &r1 };
        assert_eq!(loser["code"], "conflict", "{loser}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_requests_on_any_node_land_in_one_line() {
    let (_redis, a, b) = two_nodes().await;
    let (s1, v1) = a
        .http("POST", "/v1/help", None, Some(json!({"module": MODULE})))
        .await;
    let (s2, v2) = b
        .http("POST", "/v1/help", None, Some(json!({"module": MODULE})))
        .await;
    assert_eq!((s1, s2), (201, 201), "{v1} {v2}");
    let (st, page) = a
        .http("GET", "/v1/cases?status=new", Some(ALICE), None)
        .await;
    assert_eq!(st, 200, "{page}");
    let codes: Vec<&str> = page["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["code"].as_str())
        .collect();
    assert!(codes.contains(&v1["code"].as_str().unwrap()), "{page}");
    assert!(codes.contains(&v2["code"].as_str().unwrap()), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_lets_go_of_its_seats_and_its_customer_resumes_elsewhere() {
    let redis = RedisServer::start();
    let a = node(&redis, "a").await;
    let mut k = ProcessNode::start(&redis, "k").await;

    let mut bob = a.agent(BOB).await;
    let mut dash = a.agent(ALICE).await;
    subscribe(&mut dash).await;
    let code = create(&mut bob, "On a doomed node").await;

    // The customer and Dave sit on k; Bob on a.
    let mut customer = WsClient::connect(&k.ws_url()).await;
    customer
        .send(json!({"type": "hello", "role": "customer"}))
        .await;
    customer.wait_type("welcome").await;
    let joined = customer
        .ok(
            json!({"type": "join", "code": code, "name": "Kim"}),
            "joined",
        )
        .await;
    let token = joined["resume_token"].as_str().unwrap().to_string();
    let mut dave = WsClient::connect(&k.ws_url()).await;
    dave.send(json!({"type": "hello", "role": "agent", "token": DAVE}))
        .await;
    dave.wait_type("welcome").await;
    // A dashboard on k, to resume on a once k is gone.
    let mut dash_k = WsClient::connect(&k.ws_url()).await;
    dash_k
        .send(json!({"type": "hello", "role": "agent", "token": ALICE}))
        .await;
    dash_k.wait_type("welcome").await;
    let snap_k = subscribe(&mut dash_k).await;
    let (epoch, seen) = (snap_k["epoch"].clone(), snap_k["seq"].as_u64().unwrap());
    bob.ok(json!({"type": "join", "code": code}), "joined")
        .await;
    bob.wait_for("in_progress", |m| {
        m["type"] == "status" && m["status"] == "in_progress"
    })
    .await;
    let (_, agents) = a.http("GET", "/v1/agents", Some(ALICE), None).await;
    let dave_online = |v: &Value| {
        v["agents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == "dave" && x["online"] == true)
    };
    assert!(dave_online(&agents), "dave is online through k: {agents}");

    k.kill();

    // Within the node timeout, a releases the customer's seat: Bob and the
    // dashboard are told, as when a customer leaves.
    let status = wait_long(&mut bob, "pending after the kill", RELEASE_WAIT, |m| {
        m["type"] == "status" && m["status"] == "pending" && m["customer_connected"] == false
    })
    .await;
    assert_eq!(status["supporter_connected"], true, "{status}");
    let c = code.clone();
    wait_long(
        &mut dash,
        "customer_connected false",
        RELEASE_WAIT,
        move |m| {
            m["type"] == "event"
                && m["case"]["code"] == c.as_str()
                && m["case"]["customer_connected"] == false
        },
    )
    .await;
    let (_, agents) = a.http("GET", "/v1/agents", Some(ALICE), None).await;
    assert!(!dave_online(&agents), "dave went offline with k: {agents}");

    // The dashboard that was on k resumes on a with exactly what it
    // missed: Bob's join and the release of the customer's seat.
    let mut dash_again = a.agent(ALICE).await;
    resume_on(&mut dash_again, &epoch, seen).await;
    dash_again.sync().await;
    let missed: Vec<u64> = dash_again
        .pending()
        .iter()
        .filter(|m| m["type"] == "event")
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert!(!missed.is_empty(), "{:?}", dash_again.pending());
    let expected: Vec<u64> = (seen + 1..=seen + missed.len() as u64).collect();
    assert_eq!(missed, expected, "every missed seq, in order, once");
    let last = dash_again
        .pending()
        .iter()
        .rev()
        .find(|m| m["type"] == "event")
        .unwrap();
    assert_eq!(last["case"]["customer_connected"], false, "{last}");

    // The customer comes back through a with its resume token.
    let mut back = a.customer().await;
    back.ok(
        json!({"type": "join", "code": code, "resume_token": token}),
        "joined",
    )
    .await;
    bob.wait_for("in_progress again", |m| {
        m["type"] == "status" && m["status"] == "in_progress"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_answer_unavailable_while_redis_is_away_and_recover_by_themselves() {
    let mut redis = RedisServer::start();
    let a = node(&redis, "a").await;
    let b = node(&redis, "b").await;
    let mut bob = a.agent(BOB).await;
    let mut dash = b.agent(ALICE).await;
    subscribe(&mut dash).await;
    let before = create(&mut bob, "Before the outage").await;
    event(&mut dash, &before, "created").await;

    redis.kill();
    // Changes are refused with `unavailable`; sockets stay open.
    bob.err(
        json!({"type": "create_case", "group": "support", "name": "During"}),
        "unavailable",
    )
    .await;
    assert!(
        health_becomes(&a, 503, Duration::from_secs(10)).await,
        "a reports the outage"
    );
    let metrics = scrape(&a).await;
    assert!(
        metrics.contains("casebroker_cluster_redis_up 0"),
        "{metrics}"
    );
    // Reads still answer from the node's copy.
    let (st, case) = a
        .http("GET", &format!("/v1/cases/{before}"), Some(ALICE), None)
        .await;
    assert_eq!(st, 200, "{case}");

    redis.restart();
    assert!(
        health_becomes(&a, 200, Duration::from_secs(15)).await,
        "a recovers"
    );
    assert!(
        health_becomes(&b, 200, Duration::from_secs(15)).await,
        "b recovers"
    );
    // The same sockets work again, and what was stored before is there.
    let until = Instant::now() + Duration::from_secs(15);
    let after = loop {
        let r = bob
            .request(json!({"type": "create_case", "group": "support", "name": "After"}))
            .await;
        if r["type"] == "case" {
            break r["case"]["code"].as_str().unwrap().to_string();
        }
        assert_eq!(r["code"], "unavailable", "{r}");
        assert!(Instant::now() < until, "changes are accepted again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    event(&mut dash, &after, "created").await;
    let (st, case) = b
        .http("GET", &format!("/v1/cases/{before}"), Some(ALICE), None)
        .await;
    assert_eq!(st, 200, "the case from before the restart is kept: {case}");
    let metrics = scrape(&a).await;
    assert!(
        metrics.contains("casebroker_cluster_redis_up 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automated_assignment_counts_agents_on_every_node() {
    let redis = RedisServer::start();
    let configure = |name: &str| {
        let mut c = config_with(&cluster_table(&redis, name, ""));
        c.companies[0].assignment = casebroker::config::Assignment::LeastLoaded;
        c
    };
    let a = TestServer::with_config(configure("a")).await;
    let b = TestServer::with_config(configure("b")).await;
    // Bob is online on b alone; help is asked for on a.
    let _bob = b.agent(BOB).await;
    let mut codes = Vec::new();
    for _ in 0..3 {
        let (st, v) = a
            .http("POST", "/v1/help", None, Some(json!({"module": MODULE})))
            .await;
        assert_eq!(st, 201, "{v}");
        codes.push(v["code"].as_str().unwrap().to_string());
    }
    for code in &codes {
        let (_, case) = b
            .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
            .await;
        assert_eq!(
            case["assignee"], "bob",
            "assigned to the agent online on the other node: {case}"
        );
        assert_eq!(case["assigned_by"], "auto", "{case}");
    }
    // Dave comes online on a: the least loaded gets the next one, once.
    let _dave = a.agent(DAVE).await;
    let (_, v) = b
        .http("POST", "/v1/help", None, Some(json!({"module": MODULE})))
        .await;
    let code = v["code"].as_str().unwrap();
    let (_, case) = a
        .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
        .await;
    assert_eq!(case["assignee"], "dave", "{case}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_joins_and_help_requests_are_limited_across_nodes() {
    let redis = RedisServer::start();
    let limits = "failed_joins_per_minute = 3\nhelp_per_ip_per_minute = 2";
    let a = node_with(&redis, "a", limits).await;
    let b = node_with(&redis, "b", limits).await;

    // Two failures on a and one on b use up the address's budget: a
    // blocks it although a alone saw only two.
    let mut on_a = a.customer().await;
    let mut on_b = b.customer().await;
    for on_b_now in [false, false, true] {
        let ws = if on_b_now { &mut on_b } else { &mut on_a };
        ws.err(json!({"type": "join", "code": "s00-000-001"}), "not_found")
            .await;
    }
    let mut again = a.customer().await;
    let e = again
        .err(
            json!({"type": "join", "code": "s00-000-002"}),
            "rate_limited",
        )
        .await;
    assert!(e["message"].as_str().unwrap().contains("retry in"), "{e}");
    let mut other = b.customer().await;
    other
        .err(
            json!({"type": "join", "code": "s00-000-003"}),
            "rate_limited",
        )
        .await;

    // Help requests: two in the minute from one address, whichever node.
    let help = || Some(json!({"module": MODULE}));
    assert_eq!(a.http("POST", "/v1/help", None, help()).await.0, 201);
    assert_eq!(b.http("POST", "/v1/help", None, help()).await.0, 201);
    let (st, v) = a.http("POST", "/v1/help", None, help()).await;
    assert_eq!(st, 429, "{v}");
    assert_eq!(v["code"], "rate_limited", "{v}");
}

/// Starts a node that must refuse to start; its error.
async fn refused(config: casebroker::Config) -> std::io::Error {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let run = casebroker::run(listener, config, std::future::pending());
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the node gives up within its connection timeout")
        .expect_err("the node refuses to start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_to_start_without_redis_or_with_another_config() {
    // A port that is held but never answers: no other test's Redis can
    // take it meanwhile.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut config = config_with("");
    config.cluster = Some(casebroker::config::ClusterConfig::new(format!(
        "redis://127.0.0.1:{port}"
    )));
    let e = refused(config).await;
    assert!(
        e.to_string()
            .contains("cannot reach Redis at redis://127.0.0.1"),
        "{e}"
    );
    drop(silent);

    // A second node whose company has other agents than the first's.
    let redis = RedisServer::start();
    let a = node(&redis, "a").await;
    // Only once a has stored its companies is there something to differ from.
    assert!(health_becomes(&a, 200, Duration::from_secs(10)).await);
    let mut other = config_with(&cluster_table(&redis, "b", ""));
    other.companies[0].agents.pop();
    let e = refused(other).await;
    assert!(
        e.to_string()
            .contains("company acme is stored in Redis with other agents or groups"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_expires_once_for_every_node() {
    let redis = RedisServer::start();
    let a = node_with(&redis, "a", "case_ttl = \"1s\"").await;
    let b = node_with(&redis, "b", "case_ttl = \"1s\"").await;
    let mut on_a = a.agent(ALICE).await;
    let mut on_b = b.agent(ALICE).await;
    subscribe(&mut on_a).await;
    subscribe(&mut on_b).await;
    let mut bob = a.agent(BOB).await;
    let code = create(&mut bob, "Short-lived").await;
    let expired = |code: &str| {
        let code = code.to_string();
        move |m: &Value| {
            m["type"] == "event"
                && m["case"]["code"] == code.as_str()
                && m["case"]["status"] == "expired"
        }
    };
    let ea = wait_long(&mut on_a, "expired on a", RELEASE_WAIT, expired(&code)).await;
    let eb = wait_long(&mut on_b, "expired on b", RELEASE_WAIT, expired(&code)).await;
    assert_eq!(ea["seq"], eb["seq"], "one expiry, one seq: {ea} {eb}");
    // Nothing more about it follows on either node: a ping's pong comes
    // after anything already sent, and no second expiry is among it.
    for ws in [&mut on_a, &mut on_b] {
        ws.sync().await;
        let again = ws.pending().iter().filter(|m| expired(&code)(m)).count();
        assert_eq!(again, 0, "expired twice: {:?}", ws.pending());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_from_both_nodes_at_once_keep_one_order() {
    let (_redis, a, b) = two_nodes().await;
    let mut dash_a = a.agent(ALICE).await;
    let mut dash_b = b.agent(ALICE).await;
    subscribe(&mut dash_a).await;
    subscribe(&mut dash_b).await;

    // Four agents, two on each node, create cases at the same time: the
    // lease goes back and forth between the nodes.
    const EACH: usize = 25;
    let writers = vec![
        a.agent(BOB).await,
        a.agent(ALICE).await,
        b.agent(DAVE).await,
        b.agent(ALICE).await,
    ];
    let tasks: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(w, mut ws)| {
            tokio::spawn(async move {
                let mut codes = Vec::new();
                for i in 0..EACH {
                    codes.push(create(&mut ws, &format!("w{w} #{i}")).await);
                }
                codes
            })
        })
        .collect();
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("a writer"));
    }
    assert_eq!(acked.len(), 4 * EACH);

    // Both dashboards see every acknowledged case once, with the same seq
    // on both nodes, in one order.
    let mut order = Vec::new();
    for dash in [&mut dash_a, &mut dash_b] {
        let mut seen = std::collections::BTreeMap::new();
        while seen.len() < acked.len() {
            let e = dash
                .wait_for("created", |m| {
                    m["type"] == "event" && m["action"] == "created"
                })
                .await;
            let code = e["case"]["code"].as_str().unwrap().to_string();
            let seq = e["seq"].as_u64().unwrap();
            assert!(seen.insert(seq, code).is_none(), "one event per seq");
        }
        order.push(seen);
    }
    assert_eq!(
        order[0], order[1],
        "the same code at every seq on both nodes"
    );
    let mut codes: Vec<&String> = order[0].values().collect();
    codes.sort();
    let mut want: Vec<&String> = acked.iter().collect();
    want.sort();
    assert_eq!(codes, want, "every acknowledged case, once");
}

/// One string value in Redis (for the image tests).
async fn redis_get(redis: &RedisServer, key: &str) -> Option<String> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// Waits until the company's image stands past commit `after`; its commit.
async fn image_beyond(redis: &RedisServer, after: u64) -> u64 {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let at: u64 = redis_get(redis, "casebroker:{acme}:image-at")
            .await
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if at > after {
            return at;
        }
        assert!(
            Instant::now() < until,
            "no image past {after} within 20 s (at {at})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn redis_xlen(redis: &RedisServer, key: &str) -> u64 {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("XLEN")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_trimmed_behind_an_image_and_a_new_node_starts_from_it() {
    let redis = RedisServer::start();
    let extra = format!("snapshot_interval = \"1s\"\n{}", crate::util::UNLIMITED);
    let a = node_with(&redis, "a", &extra).await;
    let mut bob = a.agent(BOB).await;
    let _dave = a.agent(DAVE).await;
    // More commits than the log keeps behind an image (1,000).
    let mut codes = Vec::new();
    for i in 0..1100 {
        codes.push(create(&mut bob, &format!("image {i}")).await);
    }
    let closed = codes[3].clone();
    bob.ok(json!({"type": "close", "code": closed}), "case")
        .await;
    let seated = codes[7].clone();
    let mut customer = a.customer().await;
    customer
        .ok(
            json!({"type": "join", "code": seated, "name": "Ivy"}),
            "joined",
        )
        .await;
    let mut dash_a = a.agent(ALICE).await;
    let snap_a = subscribe(&mut dash_a).await;

    // The image comes within a few intervals; the log before it is gone.
    let at = image_beyond(&redis, 1100).await;
    let kept = redis_xlen(&redis, "casebroker:{acme}:log").await;
    assert!(
        kept < at,
        "the log is trimmed: {kept} commits kept, image at {at}"
    );

    // A node started now begins from the image: the same cases, seats,
    // agents and stream.
    let b = node_with(&redis, "b", &extra).await;
    for code in [&codes[0], &closed, &seated, codes.last().unwrap()] {
        let on_a = a
            .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
            .await;
        let on_b = b
            .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
            .await;
        assert_eq!(on_a, on_b, "case {code} on both nodes");
    }
    let (_, seat) = b
        .http("GET", &format!("/v1/cases/{seated}"), Some(ALICE), None)
        .await;
    assert_eq!(seat["customer_connected"], true, "{seat}");
    let (_, agents) = b.http("GET", "/v1/agents", Some(ALICE), None).await;
    let online: Vec<&str> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["online"] == true)
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert!(
        online.contains(&"bob") && online.contains(&"dave"),
        "{agents}"
    );
    let mut dash_b = b.agent(ALICE).await;
    let snap_b = subscribe(&mut dash_b).await;
    assert_eq!(snap_a["epoch"], snap_b["epoch"]);
    // b's copy goes on with the same stream: a change made on b reaches
    // a's dashboard with the next seq, and b's with the same.
    let mut dave_on_b = b.agent(DAVE).await;
    let next = create(&mut dave_on_b, "after the image").await;
    let ea = event(&mut dash_a, &next, "created").await;
    let eb = event(&mut dash_b, &next, "created").await;
    assert_eq!(ea["seq"], eb["seq"], "{ea} {eb}");
    // The customer who sat down on a is still seated for b: it leaves,
    // and b's dashboard is told.
    drop(customer);
    let s = seated.clone();
    wait_long(&mut dash_b, "the seat left", RELEASE_WAIT, move |m| {
        m["type"] == "event"
            && m["case"]["code"] == s.as_str()
            && m["case"]["customer_connected"] == false
    })
    .await;

    // A case deleted on a, and at once a change on b: b takes the company
    // over before a writes another image, so only b's first image (written
    // whole, since b followed what a decided) can drop the deleted record.
    // A third node started from it must not bring the case back.
    let gone = codes[0].clone();
    bob.ok(json!({"type": "delete", "code": gone}), "deleted")
        .await;
    create(&mut dave_on_b, "takeover").await;
    image_beyond(&redis, at + 1).await;
    let c = node_with(&redis, "c", &extra).await;
    let (st, _) = c
        .http("GET", &format!("/v1/cases/{gone}"), Some(ALICE), None)
        .await;
    assert_eq!(st, 404, "a deleted case stays deleted");
    let (st, _) = c
        .http("GET", &format!("/v1/cases/{}", codes[1]), Some(ALICE), None)
        .await;
    assert_eq!(st, 200);
    let snap_c = subscribe(&mut c.agent(ALICE).await).await;
    let snap_b_now = subscribe(&mut b.agent(ALICE).await).await;
    assert_eq!(snap_c["seq"], snap_b_now["seq"], "the same stream on c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_start_afresh_when_redis_loses_its_data() {
    let (redis, a, b) = two_nodes().await;
    let mut bob = a.agent(BOB).await;
    let code = create(&mut bob, "Before the loss").await;
    let mut dash_a = a.agent(ALICE).await;
    let mut dash_b = b.agent(ALICE).await;
    let before = subscribe(&mut dash_a).await;
    subscribe(&mut dash_b).await;

    // Redis forgets everything (as a restart without persistence would).
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();

    // Both nodes notice within a few heartbeats, start the company afresh
    // and close their dashboards with 4001, so they subscribe again.
    for dash in [&mut dash_a, &mut dash_b] {
        let closed = tokio::time::timeout(RELEASE_WAIT, dash.closed())
            .await
            .expect("the dashboard is closed");
        assert!(
            matches!(closed.0, crate::util::Closed::Code(4001)),
            "{:?}",
            closed.0
        );
    }
    for node in [&a, &b] {
        let mut dash = node.agent(ALICE).await;
        let snap = subscribe(&mut dash).await;
        assert_ne!(snap["epoch"], before["epoch"], "a new epoch: {snap}");
        let (st, _) = node
            .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
            .await;
        assert_eq!(st, 404);
    }
    // And they take changes again.
    let mut dave = b.agent(DAVE).await;
    create(&mut dave, "After the loss").await;
}

/// The `[cluster]` extras of the sustained-load tests: a heartbeat every
/// 10 ms, so that heartbeats race appends all the time, an image every
/// second, and no per-connection or help limits in the way.
fn busy_extra() -> String {
    format!(
        "snapshot_interval = \"1s\"\nhelp_per_ip_per_minute = 1000000\nhelp_per_module_per_minute = 1000000\n{}",
        crate::util::UNLIMITED
    )
}

async fn busy_node(redis: &RedisServer, name: &str) -> TestServer {
    let table = format!(
        "{}heartbeat = \"10ms\"\n",
        cluster_table(redis, name, &busy_extra())
    );
    TestServer::with_config(config_with(&table)).await
}

/// A dashboard that reads everything until the case named `end` is
/// created: panics on a close (4001 among them) or on a seq out of order;
/// returns its epoch and the events it saw.
async fn watch_until(mut dash: WsClient, end: String) -> (Value, usize) {
    let snap = subscribe(&mut dash).await;
    let epoch = snap["epoch"].clone();
    let mut last = snap["seq"].as_u64().expect("a seq");
    let mut seen = 0;
    loop {
        let m = dash.next().await;
        if m["type"] != "event" {
            continue;
        }
        assert_eq!(m["epoch"], epoch, "one epoch all along: {m}");
        let seq = m["seq"].as_u64().expect("a seq");
        assert!(seq > last, "in order: {seq} after {last}");
        last = seq;
        seen += 1;
        if m["action"] == "created" && m["case"]["name"] == end.as_str() {
            dash.sync().await;
            return (epoch, seen);
        }
    }
}

/// Whole case lifecycles from `workers` agents for `run`, spread over
/// `nodes` (each lifecycle's customer on another node than its agent when
/// there are several): create, the customer joins, the agent joins and
/// closes, the customer is told. Every reply must be a success.
async fn lifecycles(nodes: &[&TestServer], workers: usize, run: Duration) -> usize {
    let until = Instant::now() + run;
    let tokens = [BOB, DAVE, ALICE];
    let mut tasks = Vec::new();
    for w in 0..workers {
        let agent_url = nodes[w % nodes.len()].ws_url();
        let customer_url = nodes[(w + 1) % nodes.len()].ws_url();
        let token = tokens[w % tokens.len()];
        tasks.push(tokio::spawn(async move {
            let mut agent = WsClient::connect(&agent_url).await;
            agent
                .ok(
                    json!({"type": "hello", "role": "agent", "token": token}),
                    "welcome",
                )
                .await;
            let mut done = 0;
            while Instant::now() < until {
                let code = create(&mut agent, &format!("load {w}.{done}")).await;
                let mut customer = WsClient::connect(&customer_url).await;
                customer
                    .ok(json!({"type": "hello", "role": "customer"}), "welcome")
                    .await;
                customer
                    .ok(
                        json!({"type": "join", "code": code, "name": "Load"}),
                        "joined",
                    )
                    .await;
                agent
                    .ok(json!({"type": "join", "code": code}), "joined")
                    .await;
                agent
                    .ok(json!({"type": "close", "code": code}), "case")
                    .await;
                let ended = customer.wait_type("ended").await;
                assert_eq!(ended["reason"], "closed", "{ended}");
                agent.clear();
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("a worker");
    }
    total
}

/// Sustained lifecycles through `nodes` for longer than several heartbeats
/// and images: no `unavailable`, no rebuild, no dashboard closed, one
/// epoch.
async fn no_false_alarm_under_load(redis: &RedisServer, nodes: &[&TestServer]) {
    let mut watchers = Vec::new();
    for node in nodes {
        let dash = node.agent(ALICE).await;
        watchers.push(tokio::spawn(watch_until(dash, "the end".into())));
    }
    let image_before: u64 = redis_get(redis, "casebroker:{acme}:image-at")
        .await
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let done = lifecycles(nodes, 8, Duration::from_secs(4)).await;
    assert!(done >= 8, "every worker got through: {done}");
    // An image was written during the load.
    image_beyond(redis, image_before).await;
    let mut last = nodes[0].agent(BOB).await;
    create(&mut last, "the end").await;
    let mut epochs = Vec::new();
    for w in watchers {
        let (epoch, seen) = w.await.expect("a dashboard kept up");
        assert!(seen >= done, "{seen} events for {done} lifecycles");
        epochs.push(epoch);
    }
    for node in nodes {
        let text = scrape(node).await;
        assert_eq!(
            crate::util::value(&text, "casebroker_cluster_rebuilds_total"),
            0.0,
            "no company was rebuilt"
        );
        assert_eq!(
            crate::util::metric(&text, "casebroker_errors_total{code=\"unavailable\"}")
                .unwrap_or(0.0),
            0.0,
            "no command was answered unavailable"
        );
        let snap = subscribe(&mut node.agent(ALICE).await).await;
        epochs.push(snap["epoch"].clone());
    }
    assert!(epochs.windows(2).all(|w| w[0] == w[1]), "{epochs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_node_never_takes_its_appends_for_lost_data() {
    let redis = RedisServer::start();
    let a = busy_node(&redis, "a").await;
    no_false_alarm_under_load(&redis, &[&a]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_busy_nodes_never_take_their_appends_for_lost_data() {
    let redis = RedisServer::start();
    let a = busy_node(&redis, "a").await;
    let b = busy_node(&redis, "b").await;
    no_false_alarm_under_load(&redis, &[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_last_commits_starts_the_stream_anew() {
    let redis = RedisServer::start();
    let a = node(&redis, "a").await;
    let mut bob = a.agent(BOB).await;
    create(&mut bob, "Kept").await;
    let mut dash = a.agent(ALICE).await;
    let before = subscribe(&mut dash).await;
    let code = create(&mut bob, "Lost").await;
    let lost = event(&mut dash, &code, "created").await;
    let seen = lost["seq"].as_u64().unwrap();

    // Redis loses its last commit (as an fsync-everysec AOF may on a power
    // loss): the log and its head go back by one.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let head: u64 = redis::cmd("GET")
        .arg("casebroker:{acme}:head")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::pipe()
        .cmd("XDEL")
        .arg("casebroker:{acme}:log")
        .arg(format!("{head}-1"))
        .cmd("XSETID")
        .arg("casebroker:{acme}:log")
        .arg(format!("{}-1", head - 1))
        .cmd("SET")
        .arg("casebroker:{acme}:head")
        .arg(head - 1)
        .query_async(&mut conn)
        .await
        .unwrap();

    // The node notices, closes its dashboards with 4001, and a dashboard
    // that resumes from what it saw gets a snapshot of a new epoch: the
    // seqs it saw are never given to other events.
    let closed = tokio::time::timeout(RELEASE_WAIT, dash.closed())
        .await
        .expect("the dashboard is closed");
    assert_eq!(closed.0, crate::util::Closed::Code(4001), "{:?}", closed.1);
    let mut again = a.agent(ALICE).await;
    let snap = again
        .ok(
            json!({"type": "subscribe", "resume": {"epoch": before["epoch"], "seq": seen}}),
            "snapshot",
        )
        .await;
    assert_ne!(snap["epoch"], before["epoch"], "a new epoch: {snap}");
    let names: Vec<&str> = snap["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"Kept"), "{snap}");
    let text = scrape(&a).await;
    assert!(crate::util::value(&text, "casebroker_cluster_rebuilds_total") >= 1.0);
    // And the company takes changes again.
    create(&mut bob, "After").await;
}
