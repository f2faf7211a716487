//! Offers (`offer_timeout`): automated assignment offers a case to one
//! agent, who must `accept` in time; a decline, a timeout, or the agent
//! going away or offline offers it to the next eligible agent, never to the
//! same agent again while another is eligible. Each step is an event on the
//! stream and a decision in the case's routing; in each storage mode,
//! across a kill -9 and across the nodes of a cluster.

use serde_json::{Value, json};

use crate::util::process::{BROKER, Process};
use crate::util::*;

/// The test config with assignment by load and offers of `timeout`.
fn offers(text: String, timeout: &str) -> String {
    text.replacen(
        "name = \"ACME\"\n",
        &format!("name = \"ACME\"\nassignment = \"least_loaded\"\noffer_timeout = \"{timeout}\"\n"),
        1,
    )
}

fn offers_60s(text: String) -> String {
    offers(text, "60s")
}

fn offers_1s(text: String) -> String {
    offers(text, "1s")
}

/// Alice (an admin of both groups) subscribed to the queue, away so that
/// automation leaves her out.
async fn lead(server: &TestServer) -> WsClient {
    let mut alice = server.agent(ALICE).await;
    alice
        .ok(json!({"type": "presence", "state": "away"}), "presence")
        .await;
    alice.ok(json!({"type": "subscribe"}), "snapshot").await;
    alice
}

/// The lead (away, subscribed) and the two other agents of support, both
/// online and available.
async fn team(server: &TestServer) -> (WsClient, WsClient, WsClient) {
    let alice = lead(server).await;
    let mut bob = server.agent(BOB).await;
    let mut dave = server.agent(DAVE).await;
    bob.sync().await;
    dave.sync().await;
    (alice, bob, dave)
}

/// Waits for the `offer` of `code`; checks that its case says so.
async fn offer_of(ws: &mut WsClient, code: &str, agent: &str) -> Value {
    let want = code.to_string();
    let offer = ws
        .wait_for("offer", move |m| m["type"] == "offer" && m["code"] == want)
        .await;
    assert_eq!(offer["case"]["offer"]["agent"], agent, "{offer}");
    assert_eq!(
        offer["case"]["offer"]["expires_at"], offer["expires_at"],
        "{offer}"
    );
    assert!(offer["case"]["assignee"].is_null(), "{offer}");
    offer
}

/// Waits for the queue event of `code` whose case is offered to `agent`
/// (`None`: no longer offered).
async fn offered_event(ws: &mut WsClient, code: &str, agent: Option<&str>) -> Value {
    // In order: the events before it are dropped.
    loop {
        let m = ws.next().await;
        let offered = m["case"]["offer"]["agent"].as_str();
        if m["type"] == "event" && m["case"]["code"] == code && offered == agent {
            return m;
        }
    }
}

async fn routing(server: &TestServer, code: &str) -> Vec<Value> {
    let (st, body) = server
        .http(
            "GET",
            &format!("/v1/cases/{code}/routing"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(st, 200, "{body}");
    body["decisions"].as_array().unwrap().clone()
}

fn reason_of<'a>(decision: &'a Value, agent: &str) -> &'a str {
    decision["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["agent"] == agent)
        .and_then(|c| c["reason"].as_str())
        .unwrap_or("")
}

async fn an_offer_is_declined_passed_on_and_accepted(mode: Mode) {
    let server = TestServer::with_text_in(mode, "", offers_60s).await;
    let (mut alice, mut bob, mut dave) = team(&server).await;
    let (mut ana, joined) = request_help(&server, MODULE).await;
    let code = joined["code"].as_str().unwrap().to_string();
    // Offered, not given: nobody helps the customer yet.
    assert!(joined["case"]["supporter"].is_null(), "{joined}");
    offer_of(&mut bob, &code, "bob").await;
    offered_event(&mut alice, &code, Some("bob")).await;

    // Dave has nothing to answer.
    let e = dave
        .err(json!({"type": "accept", "code": code}), "conflict")
        .await;
    assert!(e["message"].as_str().unwrap().contains("no offer"), "{e}");
    dave.err(json!({"type": "decline", "code": code}), "conflict")
        .await;

    // Bob declines: Dave gets it.
    let reply = bob
        .ok(json!({"type": "decline", "code": code}), "case")
        .await;
    assert_eq!(reply["case"]["offer"]["agent"], "dave", "{reply}");
    offer_of(&mut dave, &code, "dave").await;
    offered_event(&mut alice, &code, Some("dave")).await;
    // Dave declines too: nobody else is eligible, so Bob again.
    let reply = dave
        .ok(json!({"type": "decline", "code": code}), "case")
        .await;
    assert_eq!(reply["case"]["offer"]["agent"], "bob", "{reply}");
    offer_of(&mut bob, &code, "bob").await;

    let reply = bob
        .ok(json!({"type": "accept", "code": code}), "case")
        .await;
    let case = &reply["case"];
    assert_eq!(case["assignee"], "bob", "{reply}");
    assert_eq!(case["assigned_by"], "auto", "{reply}");
    assert!(case.get("offer").is_none(), "{reply}");
    ana.wait_for("Bob helps", |m| {
        m["type"] == "status" && m["supporter"]["name"] == "Bob"
    })
    .await;
    // The decline, then the accept, each an event.
    let declined = offered_event(&mut alice, &code, None).await;
    assert!(declined["case"]["assignee"].is_null(), "{declined}");
    offered_event(&mut alice, &code, Some("bob")).await;
    let event = offered_event(&mut alice, &code, None).await;
    assert_eq!(event["case"]["assignee"], "bob", "{event}");
    // Taken: nothing left to accept.
    bob.err(json!({"type": "accept", "code": code}), "conflict")
        .await;
    // Bob may join as the assignee.
    bob.ok(json!({"type": "join", "code": code}), "joined")
        .await;

    // Each offer kept its reasons.
    let decisions = routing(&server, &code).await;
    let chosen: Vec<&str> = decisions
        .iter()
        .map(|d| d["chosen"].as_str().unwrap())
        .collect();
    assert_eq!(chosen, ["bob", "dave", "bob"], "{decisions:?}");
    assert!(
        decisions.iter().all(|d| d["offered"] == true),
        "{decisions:?}"
    );
    assert_eq!(
        reason_of(&decisions[1], "bob"),
        "passed on this case's offer: others come first",
        "{decisions:?}"
    );

    let m = scrape(&server).await;
    assert_eq!(
        value(&m, r#"casebroker_offers_total{outcome="declined"}"#),
        2.0
    );
    assert_eq!(
        value(&m, r#"casebroker_offers_total{outcome="accepted"}"#),
        1.0
    );
}

async fn an_offer_that_runs_out_goes_to_the_next_agent(mode: Mode) {
    let server = TestServer::with_text_in(mode, "", offers_1s).await;
    let (mut alice, mut bob, mut dave) = team(&server).await;
    let (_ana, joined) = request_help(&server, MODULE).await;
    let code = joined["code"].as_str().unwrap().to_string();
    offer_of(&mut bob, &code, "bob").await;
    // A second later, without an answer, Dave gets it.
    offer_of(&mut dave, &code, "dave").await;
    offered_event(&mut alice, &code, Some("dave")).await;
    let e = bob
        .err(json!({"type": "accept", "code": code}), "conflict")
        .await;
    assert!(e["message"].as_str().unwrap().contains("no offer"), "{e}");
    let decisions = routing(&server, &code).await;
    assert_eq!(decisions[1]["chosen"], "dave", "{decisions:?}");
    assert_eq!(
        reason_of(&decisions[1], "bob"),
        "passed on this case's offer: others come first"
    );
    let m = scrape(&server).await;
    assert!(value(&m, r#"casebroker_offers_total{outcome="timed_out"}"#) >= 1.0);
}

async fn an_agent_who_goes_away_or_offline_gives_up_its_offer(mode: Mode) {
    let server = TestServer::with_text_in(mode, "", offers_60s).await;
    let (mut alice, mut bob, mut dave) = team(&server).await;
    let (mut ana, joined) = request_help(&server, MODULE).await;
    let code = joined["code"].as_str().unwrap().to_string();
    offer_of(&mut bob, &code, "bob").await;
    // Away: the offer goes to Dave at once.
    bob.ok(json!({"type": "presence", "state": "away"}), "presence")
        .await;
    offer_of(&mut dave, &code, "dave").await;
    // Offline: nobody is left, so the case waits in the line, first.
    dave.close().await;
    offered_event(&mut alice, &code, None).await;
    ana.wait_for("position 1", |m| m["type"] == "queue" && m["position"] == 1)
        .await;
    let m = scrape(&server).await;
    assert_eq!(
        value(&m, r#"casebroker_offers_total{outcome="withdrawn"}"#),
        2.0
    );
    // Bob back: offered again, the only one eligible.
    bob.ok(
        json!({"type": "presence", "state": "available"}),
        "presence",
    )
    .await;
    offer_of(&mut bob, &code, "bob").await;
    // A second connection of Bob's is told of the pending offer.
    let mut bob2 = server.agent(BOB).await;
    offer_of(&mut bob2, &code, "bob").await;
    bob2.ok(json!({"type": "accept", "code": code}), "case")
        .await;
}

async fn one_offer_at_a_time_and_the_oldest_case_first(mode: Mode) {
    let server = TestServer::with_text_in(mode, "", offers_60s).await;
    let (_alice, mut bob, mut dave) = team(&server).await;
    let (_c1, j1) = request_help(&server, MODULE).await;
    let code1 = j1["code"].as_str().unwrap().to_string();
    offer_of(&mut bob, &code1, "bob").await;
    let (_c2, j2) = request_help(&server, MODULE).await;
    let code2 = j2["code"].as_str().unwrap().to_string();
    // Bob holds an offer: the next case goes to Dave.
    offer_of(&mut dave, &code2, "dave").await;
    let decisions = routing(&server, &code2).await;
    assert_eq!(
        reason_of(&decisions[0], "bob"),
        "another offer waits for its answer"
    );
    // Both hold one: the third case waits, first in line.
    let (mut c3, j3) = request_help(&server, MODULE).await;
    let code3 = j3["code"].as_str().unwrap().to_string();
    c3.wait_for("position 1", |m| m["type"] == "queue" && m["position"] == 1)
        .await;
    bob.sync().await;
    assert!(
        !bob.pending().iter().any(|m| m["type"] == "offer"),
        "{:?}",
        bob.pending()
    );
    // Bob answers: the waiting case is offered to him.
    bob.ok(json!({"type": "accept", "code": code1}), "case")
        .await;
    offer_of(&mut bob, &code3, "bob").await;
}

async fn every_bad_accept_and_decline_gets_its_code(mode: Mode) {
    let server = TestServer::with_text_in(mode, "", offers_60s).await;
    let mut bob = server.agent(BOB).await;
    let mut carol = server.agent(CAROL).await;
    bob.sync().await;
    let (mut ana, joined) = request_help(&server, MODULE).await;
    let code = joined["code"].as_str().unwrap().to_string();
    offer_of(&mut bob, &code, "bob").await;
    for ty in ["accept", "decline"] {
        bob.err(json!({"type": ty, "code": "nope"}), "bad_request")
            .await;
        bob.err(json!({"type": ty}), "bad_request").await;
        bob.err(json!({"type": ty, "code": "s99-999-999"}), "not_found")
            .await;
        // A case of another group is no case at all to Carol.
        carol
            .err(json!({"type": ty, "code": code}), "not_found")
            .await;
        ana.err(json!({"type": ty, "code": code}), "forbidden")
            .await;
        let path = format!("/v1/cases/{code}/{ty}");
        assert_error(
            server.http("POST", &path, None, None).await,
            401,
            "unauthorized",
            "",
        );
        assert_error(
            server.http("POST", &path, Some(ALICE), None).await,
            409,
            "conflict",
            "no offer",
        );
        assert_error(
            server.http("POST", &path, Some(CAROL), None).await,
            404,
            "not_found",
            "",
        );
        assert_error(
            server
                .http("POST", "/v1/cases/s99-999-999/accept", Some(BOB), None)
                .await,
            404,
            "not_found",
            "",
        );
    }
    // The offer is untouched by all of that; over HTTP Bob takes it.
    let (st, case) = server
        .http("POST", &format!("/v1/cases/{code}/accept"), Some(BOB), None)
        .await;
    assert_eq!((st, &case["assignee"]), (200, &json!("bob")), "{case}");
}

in_every_mode!(
    an_offer_is_declined_passed_on_and_accepted,
    an_offer_that_runs_out_goes_to_the_next_agent,
    an_agent_who_goes_away_or_offline_gives_up_its_offer,
    one_offer_at_a_time_and_the_oldest_case_first,
    every_bad_accept_and_decline_gets_its_code,
);

#[test]
fn an_offer_timeout_must_be_one_second_to_an_hour() {
    for (value, ok) in [
        ("0s", false),
        ("500ms", false),
        ("2h", false),
        ("1s", true),
        ("1h", true),
    ] {
        for (at, text) in [
            ("companies[0].offer_timeout", offers(config_text(""), value)),
            (
                "companies[0].groups[1].offer_timeout",
                config_text("").replacen(
                    r#"{ id = "sales" }"#,
                    &format!(r#"{{ id = "sales", offer_timeout = "{value}" }}"#),
                    1,
                ),
            ),
        ] {
            match casebroker::config::Config::from_toml(&text) {
                Ok(_) => assert!(ok, "{value} was taken at {at}"),
                Err(e) => {
                    assert!(!ok, "{value} was refused at {at}: {e}");
                    assert!(e.to_string().contains(at), "{e}");
                }
            }
        }
    }
}

/// A group's own `offer_timeout` wins; a group without one follows the
/// company (here: none, so sales cases are given straight away).
async fn a_group_may_offer_while_another_assigns(mode: Mode) {
    fn edit(text: String) -> String {
        text.replacen(
            "name = \"ACME\"\n",
            "name = \"ACME\"\nassignment = \"least_loaded\"\n",
            1,
        )
        .replacen(
            r#"{ id = "support" }"#,
            r#"{ id = "support", offer_timeout = "30s" }"#,
            1,
        )
    }
    let server = TestServer::with_text_in(mode, "", edit).await;
    let mut bob = server.agent(BOB).await;
    let mut carol = server.agent(CAROL).await;
    bob.sync().await;
    carol.sync().await;
    let (_a, support) = request_help(&server, MODULE).await;
    let code = support["code"].as_str().unwrap().to_string();
    offer_of(&mut bob, &code, "bob").await;
    let (_b, sales) = request_help(&server, MODULE_SALES).await;
    assert_eq!(sales["case"]["supporter"]["name"], "Carol", "{sales}");
}

in_every_mode!(a_group_may_offer_while_another_assigns);

/// Waits up to `limit` for the `offer` of `code` on `ws`, answering pings
/// meanwhile (an offer's deadline may be further off than one read's).
async fn offer_within(ws: &mut WsClient, code: &str, limit: std::time::Duration) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        ws.sync().await;
        if let Some(m) = ws
            .pending()
            .iter()
            .find(|m| m["type"] == "offer" && m["code"] == code)
        {
            return m.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no offer of {code} within {limit:?}: {:?}",
            ws.pending()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_offer_survives_kill_9_and_a_restart_and_runs_out_after() {
    let config = offers(config_text(""), "8s");
    let args = ["--data-dir", "data", "--listen", "127.0.0.1:0"];
    let broker = Process::start_in(BROKER, TempDir::new("offers"), Some(&config), &args, &[]);
    let at = Endpoint::new(broker.listening().await);
    let mut bob = at.agent(BOB).await;
    let (_ana, joined) = request_help(&at, MODULE).await;
    let code = code_of(&joined);
    let offer = offer_of(&mut bob, &code, "bob").await;
    // From the journal alone, then from the image a clean stop writes:
    // still Bob's, with its deadline, and out of the line.
    let dir = broker.kill9().await;
    let broker = Process::start_in(BROKER, dir, Some(&config), &args, &[]);
    let at = Endpoint::new(broker.listening().await);
    let case = get_case(&at, &code).await;
    assert_eq!(case["offer"], offer["case"]["offer"], "{case}");
    let dir = broker.stop().await;
    let broker = Process::start_in(BROKER, dir, Some(&config), &args, &[]);
    let at = Endpoint::new(broker.listening().await);
    let case = get_case(&at, &code).await;
    assert_eq!(case["offer"], offer["case"]["offer"], "{case}");
    let stats = at.get("/v1/stats", ALICE).await;
    assert_eq!(stats["groups"][0]["waiting"], 0, "{stats}");
    // Past the deadline, the next eligible agent gets the case.
    let mut dave = at.agent(DAVE).await;
    let next = offer_within(&mut dave, &code, std::time::Duration::from_secs(20)).await;
    assert_eq!(next["case"]["offer"]["agent"], "dave", "{next}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_reaches_an_agent_on_another_node() {
    let redis = redis::RedisServer::start();
    let a = TestServer::node_with(&redis, "a", "", offers_60s).await;
    let b = TestServer::node_with(&redis, "b", "", offers_60s).await;
    let mut bob = b.agent(BOB).await;
    let mut dave = a.agent(DAVE).await;
    bob.sync().await;
    dave.sync().await;
    dave.ok(json!({"type": "presence", "state": "away"}), "presence")
        .await;
    let (mut ana, joined) = request_help(&a, MODULE).await;
    let code = joined["code"].as_str().unwrap().to_string();
    // The customer is on node a, Bob on node b.
    offer_of(&mut bob, &code, "bob").await;
    // Dave, on a, is back; Bob declines on b: Dave is offered the case;
    // he declines, and it comes back to Bob on b, who accepts.
    dave.ok(
        json!({"type": "presence", "state": "available"}),
        "presence",
    )
    .await;
    bob.ok(json!({"type": "decline", "code": code}), "case")
        .await;
    offer_of(&mut dave, &code, "dave").await;
    dave.ok(json!({"type": "decline", "code": code}), "case")
        .await;
    offer_of(&mut bob, &code, "bob").await;
    bob.ok(json!({"type": "accept", "code": code}), "case")
        .await;
    ana.wait_for("Bob helps", |m| {
        m["type"] == "status" && m["supporter"]["name"] == "Bob"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_to_an_agent_whose_node_dies_goes_to_the_next_one_at_once() {
    let redis = redis::RedisServer::start();
    let a = TestServer::node_with(&redis, "a", "", offers_60s).await;
    // Node k as its own process, to be killed with SIGKILL.
    let table = format!(
        "snapshot_interval = \"1s\"\n[cluster]\nredis_url = \"{}\"\nnode_id = \"k\"\nnode_timeout = \"3s\"\n",
        redis.url()
    );
    let config = offers_60s(config_text(&table));
    let k = Process::start(BROKER, Some(&config), &["--listen", "127.0.0.1:0"], &[]);
    let k_at = Endpoint::new(k.listening().await);
    let mut alice = lead(&a).await;
    let mut dave = a.agent(DAVE).await;
    dave.ok(json!({"type": "presence", "state": "away"}), "presence")
        .await;
    // Bob, the only one eligible, is on k: the case is offered to him.
    let mut bob = k_at.agent(BOB).await;
    bob.sync().await;
    let (_ana, joined) = request_help(&a, MODULE).await;
    let code = code_of(&joined);
    offer_of(&mut bob, &code, "bob").await;
    dave.ok(
        json!({"type": "presence", "state": "available"}),
        "presence",
    )
    .await;
    // Bob's node dies. Once the cluster finds it dead (node_timeout, 3 s)
    // and lets go of its connections, Bob is offline: his offer is
    // withdrawn and Dave is offered the case, long before its 60 s.
    k.kill(WAIT).await.expect("SIGKILL the node");
    let next = offer_within(&mut dave, &code, std::time::Duration::from_secs(20)).await;
    assert_eq!(next["case"]["offer"]["agent"], "dave", "{next}");
    let withdrawn = offered_event(&mut alice, &code, Some("dave")).await;
    assert!(withdrawn["case"]["assignee"].is_null(), "{withdrawn}");
    let decisions = routing(&a, &code).await;
    let chosen: Vec<&str> = decisions
        .iter()
        .map(|d| d["chosen"].as_str().unwrap())
        .collect();
    assert_eq!(chosen, ["bob", "dave"], "{decisions:?}");
    let m = scrape(&a).await;
    assert_eq!(
        value(&m, r#"casebroker_offers_total{outcome="withdrawn"}"#),
        1.0
    );
}
