//! The waiting line: `max_cases` holds and closing a case hands over the
//! oldest waiting one; the line drains oldest first; waiting customers are
//! told their position; orphaned automatic cases return to the line;
//! assigning to null returns a case to the line, and not to the agent who
//! returned it.

use std::collections::HashMap;

use super::*;

/// Checks over `dur` that `pred` keeps holding for the case.
async fn case_stays(
    server: &TestServer,
    code: &str,
    dur: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) {
    let until = Instant::now() + dur;
    while Instant::now() < until {
        let case = get_case(server, code).await;
        assert!(pred(&case), "case {code}: expected {what}; got {case}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// Waits on a dashboard for the next queue event about `code`.
async fn event_for(ws: &mut WsClient, code: &str) -> Value {
    let code = code.to_string();
    ws.wait_for(&format!("event for {code}"), move |v| {
        v["type"] == "event" && v["case"]["code"] == code.as_str()
    })
    .await
}

// 3. max_cases.

#[tokio::test]
async fn max_cases_holds_and_closing_a_case_hands_over_the_oldest_waiting() {
    let server = TestServer::with_config(config("round_robin", 2, "")).await;
    let mut alice = server.agent(ALICE).await;
    let mut bob = server.agent(BOB).await;
    let mut dave = server.agent(DAVE).await;

    let mut cases = Vec::new();
    for _ in 0..6 {
        cases.push(new_case(&mut alice).await);
    }
    let mut per_agent: HashMap<String, Vec<String>> = HashMap::new();
    for c in &cases[..4] {
        assert_eq!(c["assigned_by"], "auto", "{c}");
        per_agent
            .entry(c["assignee"].as_str().unwrap().to_string())
            .or_default()
            .push(code_of(c));
    }
    assert_eq!(per_agent["bob"].len(), 2, "{per_agent:?}");
    assert_eq!(per_agent["dave"].len(), 2, "{per_agent:?}");
    assert_waiting(&cases[4]);
    assert_waiting(&cases[5]);

    for a in agents_as(&server, ALICE).await {
        assert!(
            a["open_cases"].as_u64().unwrap() <= a["max_cases"].as_u64().unwrap(),
            "{a}"
        );
    }
    assert_eq!(agent_status(&server, "bob").await["open_cases"], 2);
    assert_eq!(open_cases_of(&server, "bob").await.len(), 2);
    assert_eq!(open_cases_of(&server, "dave").await.len(), 2);

    // Bob closes one of his: the oldest waiting case (the 5th) is his.
    bob.ok(
        json!({"type": "close", "code": per_agent["bob"][0]}),
        "case",
    )
    .await;
    let c5 = get_case(&server, &code_of(&cases[4])).await;
    assert_auto(&c5, "bob");
    assert_waiting(&get_case(&server, &code_of(&cases[5])).await);
    assert_eq!(open_cases_of(&server, "bob").await.len(), 2);

    // Dave closes one of his: the 6th is his.
    dave.ok(
        json!({"type": "close", "code": per_agent["dave"][1]}),
        "case",
    )
    .await;
    let c6 = get_case(&server, &code_of(&cases[5])).await;
    assert_auto(&c6, "dave");
    for a in agents_as(&server, ALICE).await {
        assert!(
            a["open_cases"].as_u64().unwrap() <= a["max_cases"].as_u64().unwrap(),
            "{a}"
        );
    }
}

// 4. Oldest first.

#[tokio::test]
async fn the_line_drains_oldest_first() {
    let server = TestServer::with_config(config("round_robin", 1, "")).await;
    let mut alice = server.agent(ALICE).await;

    // Nobody eligible: four cases wait, created by different paths.
    let mut codes = Vec::new();
    codes.push(code_of(&new_case(&mut alice).await));
    let (status, body) = server
        .http(
            "POST",
            "/v1/help",
            None,
            Some(json!({"module": MODULE, "name": "Ana"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    codes.push(body["code"].as_str().unwrap().to_string());
    codes.push(code_of(&new_case(&mut alice).await));
    codes.push(code_of(&new_case(&mut alice).await));
    for code in &codes {
        assert_waiting(&get_case(&server, code).await);
    }

    let mut bob = server.agent(BOB).await;
    for (i, code) in codes.iter().enumerate() {
        assert_auto(&get_case(&server, code).await, "bob");
        for later in &codes[i + 1..] {
            assert_waiting(&get_case(&server, later).await);
        }
        bob.ok(json!({"type": "close", "code": code}), "case").await;
    }
    assert_eq!(agent_status(&server, "bob").await["open_cases"], 0);
}

// 7. Queue positions.

#[tokio::test]
async fn waiting_customers_are_told_their_position() {
    let server = TestServer::with_config(config("round_robin", 1, "")).await;

    let mut customers = Vec::new();
    for want in 1..=3 {
        let (mut c, joined) = request_help(&server, MODULE).await;
        let code = joined["code"].as_str().unwrap().to_string();
        let q = c.wait_type("queue").await;
        assert_eq!(q["code"], code.as_str(), "{q}");
        assert_eq!(q["position"], want, "{q}");
        customers.push((c, code));
    }
    // Positions are pushed only when they change: nobody got a second one.
    for (c, _) in customers.iter_mut() {
        c.sync().await;
        assert!(
            !c.pending().iter().any(|v| v["type"] == "queue"),
            "{:?}",
            c.pending()
        );
        c.clear();
    }

    // Bob (max 1) comes online and takes the first.
    let mut bob = server.agent(BOB).await;
    let first = customers[0].1.clone();
    let st = customers[0]
        .0
        .wait_for("status after assignment", |v| v["type"] == "status")
        .await;
    assert_eq!(st["code"], first.as_str(), "{st}");
    assert_auto(&get_case(&server, &first).await, "bob");
    for (i, want) in [(1, 1), (2, 2)] {
        let (c, code) = &mut customers[i];
        let q = c.wait_type("queue").await;
        assert_eq!(q["code"], code.as_str(), "{q}");
        assert_eq!(q["position"], want, "{q}");
    }
    customers[0].0.sync().await;
    assert!(
        !customers[0]
            .0
            .pending()
            .iter()
            .any(|v| v["type"] == "queue"),
        "the assigned customer is out of the line: {:?}",
        customers[0].0.pending()
    );

    // Bob closes it: the second is his, the third moves to 1.
    bob.ok(json!({"type": "close", "code": first}), "case")
        .await;
    let second = customers[1].1.clone();
    customers[1]
        .0
        .wait_for("status after assignment", |v| v["type"] == "status")
        .await;
    assert_auto(&get_case(&server, &second).await, "bob");
    let q = customers[2].0.wait_type("queue").await;
    assert_eq!(q["position"], 1, "{q}");
}

// 8. Orphans.

#[tokio::test]
async fn orphaned_automatic_cases_return_to_the_line() {
    let timeout = Duration::from_millis(300);
    let server =
        TestServer::with_config(config("round_robin", 5, r#"orphan_timeout = "300ms""#)).await;
    let mut alice = dashboard(&server).await;
    let mut bob = server.agent(BOB).await;

    // A: automatic, never joined. B: automatic, joined. C: manual.
    let (mut customer_a, ja) = request_help(&server, MODULE).await;
    let a = ja["code"].as_str().unwrap().to_string();
    let (_customer_b, jb) = request_help(&server, MODULE).await;
    let b = jb["code"].as_str().unwrap().to_string();
    assert_auto(&get_case(&server, &a).await, "bob");
    assert_auto(&get_case(&server, &b).await, "bob");
    bob.ok(json!({"type": "join", "code": b}), "joined").await;
    let c = code_of(&new_case_for(&mut alice, "bob").await);
    customer_a.sync().await;
    customer_a.clear();
    alice.sync().await;
    alice.clear();

    let gone = Instant::now();
    bob.close().await;

    let ev = alice
        .wait_for("A back in the line", |v| {
            v["type"] == "event"
                && v["case"]["code"] == a.as_str()
                && v["case"]["assignee"].is_null()
        })
        .await;
    assert!(
        gone.elapsed() >= timeout,
        "returned after {:?}, before orphan_timeout",
        gone.elapsed()
    );
    assert_eq!(ev["action"], "updated", "{ev}");
    assert!(ev["case"]["assigned_by"].is_null(), "{ev}");
    assert_waiting(&get_case(&server, &a).await);
    let q = customer_a.wait_type("queue").await;
    assert_eq!(q["position"], 1, "{q}");

    // The joined and the manual case stay with bob.
    alice.sync().await;
    for v in alice.pending() {
        if v["type"] == "event"
            && (v["case"]["code"] == b.as_str() || v["case"]["code"] == c.as_str())
        {
            assert_eq!(v["case"]["assignee"], "bob", "{v}");
        }
    }
    for code in [&b, &c] {
        case_stays(&server, code, 2 * timeout, "still bob's", |c| {
            c["assignee"] == "bob"
        })
        .await;
    }
    assert_eq!(get_case(&server, &c).await["assigned_by"], "alice");

    // Back in the line: the next eligible agent gets A.
    let _dave = server.agent(DAVE).await;
    let a_case = wait_case(&server, &a, "assigned to dave", |c| c["assignee"] == "dave").await;
    assert_auto(&a_case, "dave");
    assert_eq!(get_case(&server, &b).await["assignee"], "bob");
}

// 10. assign null.

#[tokio::test]
async fn assign_null_returns_the_case_to_the_line_and_not_to_the_returner() {
    let server = TestServer::with_config(config("least_loaded", 5, "")).await;
    let mut alice = dashboard(&server).await;
    let mut bob = server.agent(BOB).await;
    let _dave = server.agent(DAVE).await;

    let c1 = new_case(&mut alice).await;
    assert_auto(&c1, "bob");
    let c2 = new_case(&mut alice).await;
    assert_auto(&c2, "dave");
    let code = code_of(&c1);
    alice.sync().await;
    alice.clear();

    // Bob gives c1 back: he then has 0 open cases and dave 1, so least
    // loaded alone would hand it straight back to bob.
    let reply = bob
        .request(json!({"type": "assign", "code": code, "assignee": null}))
        .await;
    assert_eq!(reply["type"], "case", "{reply}");

    let back = event_for(&mut alice, &code).await;
    assert_eq!(back["action"], "updated", "{back}");
    assert_waiting(&back["case"]);
    let next = event_for(&mut alice, &code).await;
    assert_eq!(next["action"], "updated", "{next}");
    assert_auto(&next["case"], "dave");
    assert_eq!(next["seq"], back["seq"].as_u64().unwrap() + 1, "{next}");

    assert_auto(&get_case(&server, &code).await, "dave");
    assert_eq!(agent_status(&server, "bob").await["open_cases"], 0);
    assert_eq!(agent_status(&server, "dave").await["open_cases"], 2);
}
