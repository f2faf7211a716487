//! Nodes and Redis failing: a node killed with SIGKILL lets go of its seats
//! and its customer resumes on another node; while Redis is away nodes
//! answer `unavailable` and recover by themselves; a node refuses to start
//! without Redis, or with a company other than the one stored there.

use crate::util::process::{BROKER, Process};
use crate::util::{ALICE, BOB, DAVE, Endpoint, WAIT, config_text, scrape};

use super::*;

/// Polls `/healthz` until it answers `want`, for at most `limit`.
pub(super) async fn health_becomes(node: &Endpoint, want: u16, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        let answer = node.try_http("GET", "/healthz", None, None).await;
        if answer.is_some_and(|(status, _)| status == want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_lets_go_of_its_seats_and_its_customer_resumes_elsewhere() {
    let redis = RedisServer::start();
    let a = node(&redis, "a").await;
    // Node k as its own process, to be killed with SIGKILL.
    let k_config = config_text(&cluster_table(&redis, "k", ""));
    let k = Process::start(BROKER, Some(&k_config), &["--listen", "127.0.0.1:0"], &[]);
    let k_at = Endpoint::new(k.listening().await);
    assert!(
        health_becomes(&k_at, 200, Duration::from_secs(20)).await,
        "the node process did not start"
    );

    let mut bob = a.agent(BOB).await;
    let mut dash = a.agent(ALICE).await;
    subscribe(&mut dash).await;
    let code = create(&mut bob, "On a doomed node").await;

    // The customer and Dave sit on k; Bob on a.
    let mut customer = WsClient::connect(&k_at.ws_url()).await;
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
    let mut dave = WsClient::connect(&k_at.ws_url()).await;
    dave.send(json!({"type": "hello", "role": "agent", "token": DAVE}))
        .await;
    dave.wait_type("welcome").await;
    // A dashboard on k, to resume on a once k is gone.
    let mut dash_k = WsClient::connect(&k_at.ws_url()).await;
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

    k.kill(WAIT).await.expect("SIGKILL the node");

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
