//! Commands the sender may not give: wrong codes (customers learn nothing,
//! agents are told a malformed code is malformed), forbidden commands that
//! change nothing, and another company that cannot touch a case.

use super::*;

/// A well-formed code that is not `taken`.
fn unknown_code(taken: &str) -> &'static str {
    let norm = |c: &str| c.chars().filter(char::is_ascii_digit).collect::<String>();
    if norm(taken) == "00000000" {
        "s11-111-111"
    } else {
        "s00-000-000"
    }
}

#[tokio::test]
async fn wrong_codes() {
    let server = TestServer::start().await;
    let mut alice = server.agent(ALICE).await;
    let case = create_case(&mut alice, "support").await;
    let closed = create_case(&mut alice, "support").await;
    let closed_code = closed["code"].as_str().unwrap();
    alice
        .ok(json!({"type": "close", "code": closed_code}), "case")
        .await;
    let unknown = unknown_code(case["code"].as_str().unwrap());
    assert_ne!(unknown_code(closed_code), closed_code);

    // Customers learn nothing: malformed, unknown and closed alike.
    let mut messages = Vec::new();
    for code in ["not-a-code", "s12-345", unknown, closed_code] {
        let mut customer = server.customer().await;
        let e = customer
            .err(json!({"type": "join", "code": code}), "not_found")
            .await;
        messages.push(e["message"].clone());
        customer.sync().await;
    }
    assert!(messages.windows(2).all(|w| w[0] == w[1]), "{messages:?}");

    // Agents are told a malformed code is malformed.
    let mut bob = server.agent(BOB).await;
    bob.err(json!({"type": "join", "code": "not-a-code"}), "bad_request")
        .await;
    bob.err(json!({"type": "join", "code": "s12-345"}), "bad_request")
        .await;
    bob.err(json!({"type": "join", "code": unknown}), "not_found")
        .await;
    bob.sync().await;

    // A case of a group the agent is not in does not exist for it.
    let mut carol = server.agent(CAROL).await;
    carol
        .err(json!({"type": "join", "code": case["code"]}), "not_found")
        .await;
    assert_eq!(
        get_case(&server, case["code"].as_str().unwrap()).await["assignee"],
        Value::Null
    );
}

#[tokio::test]
async fn forbidden_commands() {
    let server = TestServer::start().await;
    let mut alice = server.agent(ALICE).await;
    let case = create_case(&mut alice, "support").await;
    let code = case["code"].as_str().unwrap().to_string();
    let before = get_case(&server, &code).await;

    let mut customer = server.customer().await;
    for cmd in [
        json!({"type": "subscribe"}),
        json!({"type": "unsubscribe"}),
        json!({"type": "create_case", "group": "support", "name": "x"}),
        json!({"type": "assign", "code": code, "assignee": "bob"}),
        json!({"type": "assign", "code": code, "assignee": null}),
        json!({"type": "delete", "code": code}),
        json!({"type": "presence", "state": "away"}),
    ] {
        customer.err(cmd, "forbidden").await;
    }
    customer.sync().await;
    assert_eq!(get_case(&server, &code).await, before);
    let (_, list) = server.http("GET", "/v1/cases", Some(ALICE), None).await;
    assert_eq!(list["cases"].as_array().unwrap().len(), 1, "{list}");

    // Agents may not ask for help.
    alice
        .err(
            json!({"type": "request_help", "module": MODULE}),
            "forbidden",
        )
        .await;
    alice.sync().await;
    let (_, list) = server.http("GET", "/v1/cases", Some(ALICE), None).await;
    assert_eq!(list["cases"].as_array().unwrap().len(), 1, "{list}");

    // An unknown module key is unauthorized; the connection stays usable.
    customer
        .err(
            json!({"type": "request_help", "module": "no-such-module"}),
            "unauthorized",
        )
        .await;
    customer.sync().await;
    customer
        .ok(json!({"type": "request_help", "module": MODULE}), "joined")
        .await;
}

#[tokio::test]
async fn another_company_cannot_touch_a_case() {
    let server = TestServer::start().await;
    let mut alice = server.agent(ALICE).await;
    let made = alice
        .ok(
            json!({"type": "create_case", "group": "support", "name": "Acme only", "assignee": "bob"}),
            "case",
        )
        .await;
    let code = made["case"]["code"].as_str().unwrap().to_string();
    let before = get_case(&server, &code).await;
    assert_eq!(before["assignee"], "bob");

    let mut gina = server.agent(GINA).await;
    for cmd in [
        json!({"type": "join", "code": code}),
        json!({"type": "join", "code": code, "takeover": true}),
        json!({"type": "assign", "code": code, "assignee": "gina"}),
        json!({"type": "assign", "code": code, "assignee": null}),
        json!({"type": "close", "code": code}),
        json!({"type": "delete", "code": code}),
        json!({"type": "chat", "code": code, "text": "hi"}),
    ] {
        gina.err(cmd, "not_found").await;
    }
    let snapshot = gina.ok(json!({"type": "subscribe"}), "snapshot").await;
    assert!(
        !snapshot["cases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["code"] == code.as_str()),
        "{snapshot}"
    );
    for (method, path) in [
        ("GET", format!("/v1/cases/{code}")),
        ("POST", format!("/v1/cases/{code}/close")),
        ("DELETE", format!("/v1/cases/{code}")),
    ] {
        let (status, body) = server.http(method, &path, Some(GINA), None).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(body["code"], "not_found", "{method} {path}: {body}");
    }

    let after = get_case(&server, &code).await;
    assert_eq!(after, before);
    assert_eq!(after["status"], before["status"]);
    assert_eq!(after["assignee"], "bob");
    assert_eq!(after["closed_at"], Value::Null);
}
