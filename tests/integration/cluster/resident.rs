//! Nodes hold what they serve: a company is in a node's memory only while
//! the node decides it or serves one of its connections; it is let go
//! once unused for `company_idle` and loaded again, from Redis, by a
//! session code, a token or a module key another node just made; a
//! company nobody decides is taken by a live node.

use crate::util::process::{BROKER, Process};
use crate::util::{ALICE, BOB, DAVE, Endpoint, GINA, config_text, create_over_http, scrape, value};

use super::*;

const LOADED: &str = "casebroker_cluster_companies_loaded";
const LOADS: &str = "casebroker_cluster_company_loads_total";
const TAKEN: &str = "casebroker_cluster_leases_taken_total";

/// A node that lets a company go after a second unused.
async fn idle_node(redis: &RedisServer, name: &str) -> TestServer {
    TestServer::with_config(config_with(&idle_table(redis, name))).await
}

fn idle_table(redis: &RedisServer, name: &str) -> String {
    idle_table_for(redis, name, "1s")
}

fn idle_table_for(redis: &RedisServer, name: &str, idle: &str) -> String {
    format!(
        "[cluster]\nredis_url = \"{}\"\nnode_id = \"{name}\"\nnode_timeout = \"3s\"\ncompany_idle = \"{idle}\"\n",
        redis.url()
    )
}

async fn metric_of(node: &TestServer, series: &str) -> f64 {
    value(&scrape(node).await, series)
}

/// Waits until `node` holds `n` companies in memory.
async fn loaded(node: &Endpoint, n: f64, what: &str) {
    settles(node, LOADED, n, what).await;
}

/// Waits until `series` on `node` is `n`: for longer than `wait_metric`,
/// since a free company is taken once free for `node_timeout` (3 s here)
/// and a dead node's lease runs out after 3 s.
async fn settles(node: &Endpoint, series: &str, n: f64, what: &str) {
    let limit = Duration::from_secs(20);
    crate::util::wait_metric_within(node, series, what, limit, |v| v == n).await;
}

/// A case made over `at`'s HTTP API; its code.
async fn new_case(at: &Endpoint, token: &str) -> String {
    let body = json!({"group": "support", "name": "Kim"});
    crate::util::code_of(&create_over_http(at, token, body).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_holds_only_what_it_serves_and_loads_a_company_from_its_names() {
    let redis = RedisServer::start();
    // `a` takes both companies (nobody decides them) and keeps them.
    let a = idle_node(&redis, "a").await;
    loaded(&a, 2.0, "both companies, taken by the first node").await;
    assert_eq!(metric_of(&a, TAKEN).await, 2.0);
    let b = idle_node(&redis, "b").await;
    let code = new_case(&a, BOB).await;
    assert_eq!(metric_of(&b, LOADED).await, 0.0, "b serves nothing yet");

    // A read on b loads acme, with the case a made.
    let (st, v) = b
        .http("GET", &format!("/v1/cases/{code}"), Some(BOB), None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["name"], "Kim", "{v}");
    assert_eq!(metric_of(&b, LOADS).await, 1.0);
    loaded(&b, 0.0, "acme let go once unused").await;

    // Made on a while b holds nothing of acme: an agent, a module key, a
    // case. Each is found from b through Redis.
    let (st, v) = a
        .http(
            "POST",
            "/v1/admin/agents",
            Some(ALICE),
            Some(json!({"id": "erin", "name": "Erin", "groups": ["support"]})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let erin = v["token"].as_str().expect("a token").to_string();
    let (st, v) = a
        .http(
            "POST",
            "/v1/admin/modules",
            Some(ALICE),
            Some(json!({"key": "acme-late", "group": "support"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let code = new_case(&a, BOB).await;

    // The help page and the key's public face on b.
    let (st, v) = b.http("GET", "/v1/modules/acme-late", None, None).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["group"], "support", "{v}");
    let (st, _, _) = b.page("/help/acme-late", &[]).await;
    assert_eq!(st, 200);
    assert_eq!(metric_of(&b, LOADS).await, 2.0);
    loaded(&b, 0.0, "acme let go after the help page").await;

    let mut ws = b.agent(&erin).await;
    let snapshot = subscribe(&mut ws).await;
    assert!(
        snapshot.to_string().contains(&code),
        "erin's snapshot on b holds the case: {snapshot}"
    );
    assert_eq!(metric_of(&b, LOADS).await, 3.0);
    drop(ws);
    loaded(&b, 0.0, "acme let go once erin left").await;

    let (st, v) = b
        .http(
            "POST",
            "/v1/help",
            None,
            Some(json!({"module": "acme-late", "name": "Lee"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(metric_of(&b, LOADS).await, 4.0);
    loaded(&b, 0.0, "acme let go after the help request").await;

    let mut kim = b.customer().await;
    let joined = kim
        .ok(
            json!({"type": "join", "code": code, "name": "Kim"}),
            "joined",
        )
        .await;
    assert_eq!(joined["case"]["code"], code.as_str(), "{joined}");
    assert_eq!(metric_of(&b, LOADS).await, 5.0);

    // Kim's connection keeps acme on b: globex, loaded after it and
    // unused, goes first, and Kim still hears what a decides.
    let (st, _) = b.http("GET", "/v1/cases", Some(GINA), None).await;
    assert_eq!(st, 200);
    loaded(&b, 2.0, "acme and globex").await;
    loaded(&b, 1.0, "globex let go, acme kept for Kim").await;
    let path = format!("/v1/cases/{code}/assign");
    let (st, v) = a
        .http("POST", &path, Some(BOB), Some(json!({"assignee": "dave"})))
        .await;
    assert_eq!(st, 200, "{v}");
    let mut dave = a.agent(DAVE).await;
    dave.ok(json!({"type": "join", "code": code}), "joined")
        .await;
    let status = kim
        .wait_for("in progress", |m| {
            m["type"] == "status" && m["status"] == "in_progress"
        })
        .await;
    assert_eq!(status["supporter"]["name"], "Dave", "{status}");

    // Unknown names load nothing.
    let (st, _) = b
        .http("GET", "/v1/cases", Some("no-such-token-000"), None)
        .await;
    assert_eq!(st, 401);
    let (st, v) = b
        .http(
            "POST",
            "/v1/help",
            None,
            Some(json!({"module": "no-such-key", "name": "Lee"})),
        )
        .await;
    assert_eq!((st, &v["code"]), (401, &json!("unauthorized")), "{v}");
    let mut guess = b.customer().await;
    let refused = guess
        .request(json!({"type": "join", "code": "s99-999-999", "name": "X"}))
        .await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "not_found", "{refused}");
    let (st, _) = b.http("GET", "/v1/modules/no-such-key", None, None).await;
    assert_eq!(st, 404);
    let (st, _, _) = b.page("/help/no-such-key", &[]).await;
    assert_eq!(st, 404);
    assert_eq!(metric_of(&b, LOADS).await, 6.0, "only globex loaded since");
    // b never decided anything: a did, all along.
    assert_eq!(metric_of(&b, TAKEN).await, 0.0);
    assert_eq!(metric_of(&a, TAKEN).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_company_nobody_decides_is_taken_by_a_live_node_which_does_its_work() {
    let redis = RedisServer::start();
    // `a` is a process, to be killed; it takes both companies.
    let text = config_text(&idle_table(&redis, "a"));
    let a = Process::start(BROKER, Some(&text), &["--listen", "127.0.0.1:0"], &[]);
    let a_at = Endpoint::new(a.listening().await);
    loaded(&a_at, 2.0, "both companies on a").await;
    let b = idle_node(&redis, "b").await;
    // A customer seated on a: once a is dead, only the node deciding acme
    // releases that seat.
    let code = new_case(&a_at, BOB).await;
    let mut kim = a_at.customer().await;
    let joined = kim
        .ok(
            json!({"type": "join", "code": code, "name": "Kim"}),
            "joined",
        )
        .await;
    assert_eq!(joined["case"]["status"], "pending", "{joined}");
    assert_eq!(metric_of(&b, LOADED).await, 0.0);

    a.kill9().await;
    // Nothing is asked of b: its heartbeat finds both leases free once
    // they run out, takes them, loads the companies and lets a's seat go.
    settles(&b, TAKEN, 2.0, "both companies taken by b").await;
    loaded(&b, 2.0, "both companies in memory on b").await;
    let until = Instant::now() + RELEASE_WAIT;
    loop {
        let (st, v) = b
            .http("GET", &format!("/v1/cases/{code}"), Some(BOB), None)
            .await;
        assert_eq!(st, 200, "{v}");
        if v["customer_connected"] == false {
            // Waiting for a supporter again, Kim gone.
            assert_eq!(v["status"], "pending", "{v}");
            break;
        }
        assert!(Instant::now() < until, "a's seat never released: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_away_a_node_reads_what_it_holds_and_refuses_what_it_does_not() {
    let mut redis = RedisServer::start();
    let a = idle_node(&redis, "a").await;
    loaded(&a, 2.0, "both companies on a").await;
    // b keeps what it loads for a minute: acme, read once; not globex.
    let b = TestServer::with_config(config_with(&idle_table_for(&redis, "b", "1m"))).await;
    let code = new_case(&a, BOB).await;
    let (st, v) = b
        .http("GET", &format!("/v1/cases/{code}"), Some(BOB), None)
        .await;
    assert_eq!(st, 200, "{v}");
    loaded(&b, 1.0, "acme on b").await;

    redis.kill();
    assert!(
        super::failures::health_becomes(&b, 503, Duration::from_secs(10)).await,
        "b reports the outage"
    );
    // acme is read from b's copy; globex, not in b's memory, cannot be.
    let (st, v) = b
        .http("GET", &format!("/v1/cases/{code}"), Some(BOB), None)
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = b.http("GET", "/v1/cases", Some(GINA), None).await;
    assert_eq!((st, &v["code"]), (503, &json!("unavailable")), "{v}");
    assert_eq!(metric_of(&b, LOADED).await, 1.0);

    redis.restart();
    assert!(
        super::failures::health_becomes(&b, 200, Duration::from_secs(15)).await,
        "b recovers"
    );
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let (st, v) = b.http("GET", "/v1/cases", Some(GINA), None).await;
        if st == 200 {
            break;
        }
        assert_eq!(v["code"], "unavailable", "{v}");
        assert!(Instant::now() < until, "globex never loaded on b: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loaded(&b, 2.0, "acme and globex on b").await;
}

/// A company's log notices go only to the nodes that hold it in memory,
/// never back to the node that appended: a node holding nothing of a
/// company hears nothing of its commits, and hears them once it loads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_notices_go_only_to_the_nodes_following_the_company() {
    const NOTICES: &str = "casebroker_cluster_log_notices_total";
    let redis = RedisServer::start();
    let a = TestServer::with_config(config_with(&idle_table_for(&redis, "a", "1h"))).await;
    loaded(&a, 2.0, "both companies, taken by the first node").await;
    let b = TestServer::with_config(config_with(&idle_table_for(&redis, "b", "1h"))).await;

    // Commits while b holds nothing of acme: none of their notices is
    // sent to b (nor to a, which appended them).
    let mut code = String::new();
    for _ in 0..5 {
        code = new_case(&a, BOB).await;
    }
    // b loads acme, then one more commit on a: its notice reaches b (and
    // any notice sent to b before it would have been heard first).
    let (st, v) = b
        .http("GET", &format!("/v1/cases/{code}"), Some(BOB), None)
        .await;
    assert_eq!(st, 200, "{v}");
    let after = new_case(&a, BOB).await;
    let heard = crate::util::wait_metric(
        &b,
        NOTICES,
        "the notice of a commit made after b loaded acme",
        |v| v >= 1.0,
    )
    .await;
    assert!(
        heard < 5.0,
        "b heard {heard} notices: some were of commits made while it held nothing of acme"
    );
    // b applied that commit from its notice: the case is there.
    let (st, v) = b
        .http("GET", &format!("/v1/cases/{after}"), Some(BOB), None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        metric_of(&a, NOTICES).await,
        0.0,
        "the appending node hears none of its own notices"
    );
}
