//! Any node serves anyone, in one stream: a customer on one node and an
//! agent on another meet in one case, dashboards on every node see one
//! stream and resume on any, concurrent joins from two nodes have one
//! winner, help requests on any node land in one line, and changes from
//! both nodes at once keep one order.

use crate::util::{ALICE, BOB, DAVE, MODULE};

use super::*;

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
