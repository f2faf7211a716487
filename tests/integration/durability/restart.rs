//! What a restart keeps: cases with every field, their assignments and
//! transcripts, the company's epoch and seq; a dashboard resuming exactly
//! across it, with the seats left at the stop as its only news; a customer
//! taking its seat back with its resume token.

use super::*;

// 1. Cases, assignments, transcripts and the epoch ---------------------------

#[tokio::test]
async fn restart_keeps_cases_assignments_transcripts_and_the_epoch() {
    let scratch = Scratch::new("restart");
    let server = TestServer::with_config(scratch.config("")).await;

    // A case over HTTP with every field, one over WebSocket assigned at
    // creation, and a customer's request for help.
    let (status, by_http) = server
        .http(
            "POST",
            "/v1/cases",
            Some(BOB),
            Some(json!({
                "group": "support",
                "name": "VPN drops",
                "description": "every hour, on the hour",
                "customer": {"name": "Ola", "email": "ola@example.com"},
            })),
        )
        .await;
    assert_eq!(status, 201, "{by_http}");
    let http_code = code_of(&by_http);
    let mut alice = server.agent(ALICE).await;
    let by_ws = alice
        .ok(
            json!({"type": "create_case", "group": "sales", "name": "Invoice", "assignee": "carol"}),
            "case",
        )
        .await["case"]
        .clone();
    assert_eq!(by_ws["assigned_by"], "alice", "{by_ws}");
    let ws_code = code_of(&by_ws);
    let (mut ana, joined) = request_help(&server, MODULE).await;
    let help_code = joined["code"].as_str().unwrap().to_string();

    // Bob joins the help case; they chat both ways.
    let mut bob = server.agent(BOB).await;
    bob.ok(json!({"type": "join", "code": help_code}), "joined")
        .await;
    ana.wait_for("status in_progress", |m| {
        m["type"] == "status" && m["status"] == "in_progress"
    })
    .await;
    bob.ok(
        json!({"type": "chat", "code": help_code, "text": "Hello Ana, Bob here."}),
        "sent",
    )
    .await;
    ana.wait_type("chat").await;
    ana.ok(
        json!({"type": "chat", "text": "My printer is on fire."}),
        "sent",
    )
    .await;
    bob.wait_type("chat").await;

    // The HTTP case is assigned to dave by alice; the WebSocket case closed.
    let (status, assigned) = server
        .http(
            "POST",
            &format!("/v1/cases/{http_code}/assign"),
            Some(ALICE),
            Some(json!({"assignee": "dave"})),
        )
        .await;
    assert_eq!(status, 200, "{assigned}");
    assert_eq!(assigned["assignee"], "dave", "{assigned}");
    assert_eq!(assigned["assigned_by"], "alice", "{assigned}");
    let closed = alice
        .ok(json!({"type": "close", "code": ws_code}), "case")
        .await["case"]
        .clone();
    assert_eq!(closed["status"], "closed", "{closed}");
    assert_eq!(closed["closed_by"], "alice", "{closed}");

    let transcript = get_transcript(&server, &help_code).await;
    assert_eq!(
        transcript["messages"].as_array().unwrap().len(),
        2,
        "{transcript}"
    );
    let (dash, snap) = dashboard(&server).await;
    let epoch = snap["epoch"].as_str().unwrap().to_string();
    let seq = seq_of(&snap);
    assert_eq!(
        seq, 6,
        "3 creations, a join, an assignment, a close: {snap}"
    );

    stop(server, vec![alice, ana, bob, dash]).await;
    let server = TestServer::with_config(scratch.config("")).await;

    // Nothing touched these two since: they come back exactly.
    assert_eq!(get_case(&server, &http_code).await, assigned);
    assert_eq!(get_case(&server, &ws_code).await, closed);
    assert_eq!(
        assigned["status"], "new",
        "nobody ever connected: {assigned}"
    );
    assert_eq!(assigned["name"], "VPN drops");
    assert_eq!(assigned["description"], "every hour, on the hour");
    assert_eq!(
        assigned["customer"],
        json!({"name": "Ola", "email": "ola@example.com"})
    );
    assert_eq!(assigned["created_by"], "bob");
    assert_eq!(closed["assignee"], "carol");
    assert_eq!(closed["assigned_by"], "alice");

    // The help case: its seats were left, it was connected once: pending.
    let help = get_case(&server, &help_code).await;
    assert_eq!(help["status"], "pending", "{help}");
    assert_eq!(help["assignee"], "bob", "{help}");
    assert_eq!(help["assigned_by"], "bob", "{help}");
    assert_eq!(help["customer_connected"], false, "{help}");
    assert_eq!(help["supporter_connected"], false, "{help}");
    assert_eq!(help["source"], "quicksupport", "{help}");
    assert_eq!(help["created_by"], "customer", "{help}");
    assert_eq!(help["name"], "Help request: Ana", "{help}");
    assert_eq!(help["closed_by"], Value::Null, "{help}");
    assert_eq!(help["closed_at"], Value::Null, "{help}");
    let messages = transcript["messages"].as_array().unwrap();
    assert_eq!(messages[0]["from"], json!({"role": "agent", "name": "Bob"}));
    assert_eq!(messages[0]["text"], "Hello Ana, Bob here.");
    assert_eq!(
        messages[1]["from"],
        json!({"role": "customer", "name": "Ana"})
    );
    assert_eq!(messages[1]["text"], "My printer is on fire.");
    assert_eq!(get_transcript(&server, &help_code).await, transcript);

    // The same stream: same epoch, seq where it was or further.
    let (dash, snap2) = dashboard(&server).await;
    assert_eq!(snap2["epoch"], epoch.as_str(), "{snap2}");
    assert!(seq_of(&snap2) >= seq, "seq went back: {seq} -> {snap2}");
    let cases = snap2["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3, "{snap2}");
    for code in [&http_code, &ws_code, &help_code] {
        let c = cases
            .iter()
            .find(|c| c["code"] == code.as_str())
            .unwrap_or_else(|| panic!("{code} not in {snap2}"));
        assert_eq!(*c, get_case(&server, code).await);
    }
    let (status, list) = server.http("GET", "/v1/cases", Some(ALICE), None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["cases"].as_array().unwrap().len(), 3, "{list}");

    stop(server, vec![dash]).await;
}

// 2. Resume across a restart -------------------------------------------------

#[tokio::test]
async fn a_dashboard_resumes_exactly_across_a_restart() {
    let scratch = Scratch::new("resume");
    let server = TestServer::with_config(scratch.config("")).await;
    let mut maker = server.agent(ALICE).await;
    create_case(&mut maker, "support").await;

    let (mut dash, snap) = dashboard(&server).await;
    let epoch = snap["epoch"].as_str().unwrap().to_string();
    let seq0 = seq_of(&snap);
    assert_eq!(seq0, 1, "{snap}");

    // Five changes while the dashboard watches.
    let a = code_of(&create_case(&mut maker, "support").await);
    maker
        .ok(
            json!({"type": "assign", "code": a, "assignee": "dave"}),
            "case",
        )
        .await;
    let (mut ana, joined) = request_help(&server, MODULE).await;
    let help = joined["code"].as_str().unwrap().to_string();
    let mut bob = server.agent(BOB).await;
    bob.ok(json!({"type": "join", "code": help}), "joined")
        .await;
    ana.wait_for("status in_progress", |m| {
        m["type"] == "status" && m["status"] == "in_progress"
    })
    .await;
    maker.ok(json!({"type": "close", "code": a}), "case").await;
    let mut seen = Vec::new();
    for k in 0..5u64 {
        let ev = dash.wait_type("event").await;
        assert_eq!(seq_of(&ev), seq0 + 1 + k, "{ev}");
        assert_eq!(ev["epoch"], epoch.as_str(), "{ev}");
        seen.push(ev);
    }
    let codes: Vec<Value> = seen.iter().map(|e| e["case"]["code"].clone()).collect();
    assert_eq!(codes, [&a, &a, &help, &help, &a].map(|c| json!(c)));
    assert_quiet(&mut dash, "dashboard").await;
    // The dashboard left off after the second of them.
    let from = seq_of(&seen[1]);

    stop(server, vec![maker, dash, ana, bob]).await;
    let server = TestServer::with_config(scratch.config("")).await;

    let (mut dash, first) = connect_resuming(&server, ALICE, &epoch, from).await;
    assert_eq!(first["type"], "resumed", "{first}");
    assert_eq!(first["epoch"], epoch.as_str(), "{first}");
    // The events after `from`, exactly as they went out the first time...
    for ev in &seen[2..] {
        let got = next_msg(&mut dash).await;
        assert_eq!(got, *ev, "replayed event");
    }
    // ...then the two seats of the help case being left (ana's and bob's),
    // and nothing else.
    let last = seq_of(seen.last().unwrap());
    assert_eq!(seq_of(&first), last + 2, "{first}");
    let left1 = next_msg(&mut dash).await;
    let left2 = next_msg(&mut dash).await;
    for (k, ev) in [&left1, &left2].into_iter().enumerate() {
        assert_eq!(ev["type"], "event", "{ev}");
        assert_eq!(ev["epoch"], epoch.as_str(), "{ev}");
        assert_eq!(seq_of(ev), last + 1 + k as u64, "{ev}");
        assert_eq!(ev["action"], "updated", "{ev}");
        assert_eq!(ev["case"]["code"], help.as_str(), "{ev}");
    }
    let seats = |ev: &Value| {
        (
            ev["case"]["customer_connected"].as_bool().unwrap(),
            ev["case"]["supporter_connected"].as_bool().unwrap(),
        )
    };
    assert!(
        matches!(seats(&left1), (true, false) | (false, true)),
        "one seat left first: {left1}"
    );
    assert_eq!(seats(&left2), (false, false), "{left2}");
    assert_eq!(left2["case"]["status"], "pending", "{left2}");
    assert_eq!(left2["case"], get_case(&server, &help).await);
    assert_quiet(&mut dash, "resumed dashboard").await;

    // A fresh snapshot stands where the resume did.
    let (other, snap2) = dashboard(&server).await;
    assert_eq!(snap2["epoch"], epoch.as_str(), "{snap2}");
    assert_eq!(seq_of(&snap2), seq_of(&first), "{snap2}");

    stop(server, vec![dash, other]).await;
}

// 3. A customer's resume token ----------------------------------------------

#[tokio::test]
async fn a_customer_rejoins_with_its_resume_token_after_a_restart() {
    let scratch = Scratch::new("token");
    let server = TestServer::with_config(scratch.config("")).await;
    let (ana, joined) = request_help(&server, MODULE).await;
    let code = joined["code"].as_str().unwrap().to_string();
    let token = joined["resume_token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 32, "{joined}");

    stop(server, vec![ana]).await;
    let server = TestServer::with_config(scratch.config("")).await;

    // Within seat_grace, the code alone, or a wrong token, is refused.
    let mut other = server.customer().await;
    other
        .err(json!({"type": "join", "code": code}), "conflict")
        .await;
    other
        .err(
            json!({"type": "join", "code": code, "resume_token": "0".repeat(32)}),
            "conflict",
        )
        .await;

    // The token takes the seat back and is returned unchanged.
    let mut ana = server.customer().await;
    let rejoined = ana
        .ok(
            json!({"type": "join", "code": code, "resume_token": token}),
            "joined",
        )
        .await;
    assert_eq!(rejoined["code"], code.as_str(), "{rejoined}");
    assert_eq!(rejoined["resume_token"], token.as_str(), "{rejoined}");
    assert_eq!(rejoined["case"]["status"], "pending", "{rejoined}");
    assert_eq!(rejoined["case"]["customer_connected"], true, "{rejoined}");
    let case = get_case(&server, &code).await;
    assert_eq!(case["customer_connected"], true, "{case}");
    assert_eq!(case["customer"]["name"], "Ana", "{case}");

    // The session goes on: an agent joins and they talk.
    let mut bob = server.agent(BOB).await;
    bob.ok(json!({"type": "join", "code": code}), "joined")
        .await;
    ana.wait_for("status in_progress", |m| {
        m["type"] == "status" && m["status"] == "in_progress"
    })
    .await;
    ana.ok(json!({"type": "chat", "text": "I'm back."}), "sent")
        .await;
    let line = bob.wait_type("chat").await;
    assert_eq!(line["text"], "I'm back.", "{line}");

    stop(server, vec![ana, bob, other]).await;
}
