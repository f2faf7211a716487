//! `request_help` and role checks: the case it fills in, one case per
//! customer connection, and the commands of the other role forbidden.

use serde_json::json;

use super::*;

// 12. request_help and role checks.

async fn request_help_fills_the_case(mode: Mode) {
    let server = TestServer::start_in(mode).await;

    let mut sos = server.customer().await;
    let joined = sos
        .ok(
            json!({"type": "request_help", "module": MODULE, "via": "sos",
                   "name": "Ana", "email": "ana@example.com", "description": "Screen is black"}),
            "joined",
        )
        .await;
    assert!(is_hex_token(&joined["resume_token"]), "{joined}");
    let view = &joined["case"];
    assert_eq!(view["code"], joined["code"], "{joined}");
    assert_eq!(view["status"], "pending", "{joined}");
    assert_eq!(view["customer_connected"], true, "{joined}");
    assert_eq!(view["supporter_connected"], false, "{joined}");
    assert_eq!(view["supporter"], Value::Null, "{joined}");
    wire_time(&view["expires_at"]);
    let case = get_case(&server, &code_of(&joined)).await;
    assert_eq!(case["source"], "sos", "{case}");
    assert_eq!(case["created_by"], "customer", "{case}");
    assert_eq!(case["company"], "acme", "{case}");
    assert_eq!(case["group"], "support", "{case}");
    assert_eq!(case["assignee"], Value::Null, "{case}");
    assert_eq!(case["customer"]["name"], "Ana", "{case}");
    assert_eq!(case["customer"]["email"], "ana@example.com", "{case}");
    assert_eq!(case["description"], "Screen is black", "{case}");

    let (_qs, joined) = request_help(&server, MODULE).await;
    let case = get_case(&server, &code_of(&joined)).await;
    assert_eq!(case["source"], "quicksupport", "{case}");
    assert_eq!(case["created_by"], "customer", "{case}");
    assert_eq!(case["customer"]["name"], "Ana", "{case}");

    let (_routed, joined) = request_help(&server, MODULE_BOB).await;
    assert_eq!(joined["case"]["supporter"]["name"], "Bob", "{joined}");
    let case = get_case(&server, &code_of(&joined)).await;
    assert_eq!(case["assignee"], "bob", "{case}");
    wire_time(&case["assigned_at"]);
    assert_eq!(case["status"], "pending", "{case}");

    let (_sales, joined) = request_help(&server, MODULE_SALES).await;
    assert_eq!(get_case(&server, &code_of(&joined)).await["group"], "sales");

    // A customer `join` with a name fills an empty customer.name only.
    let mut alice = server.agent(ALICE).await;
    let code = code_of(&create_case(&mut alice, "support").await);
    assert_eq!(
        get_case(&server, &code).await["customer"]["name"],
        Value::Null
    );
    let mut zoe = server.customer().await;
    let j = zoe
        .ok(
            json!({"type": "join", "code": code, "name": "Zoe"}),
            "joined",
        )
        .await;
    assert_eq!(get_case(&server, &code).await["customer"]["name"], "Zoe");
    let mut other = server.customer().await;
    other
        .ok(
            json!({"type": "join", "code": code, "name": "Other",
                   "resume_token": j["resume_token"]}),
            "joined",
        )
        .await;
    assert_eq!(get_case(&server, &code).await["customer"]["name"], "Zoe");
}

async fn one_customer_connection_serves_one_case(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let (mut customer, joined) = request_help(&server, MODULE).await;
    let code = code_of(&joined);
    let token = joined["resume_token"].clone();
    let mut alice = server.agent(ALICE).await;
    let other = code_of(&create_case(&mut alice, "support").await);

    customer
        .err(
            json!({"type": "request_help", "module": MODULE}),
            "conflict",
        )
        .await;
    customer
        .err(json!({"type": "join", "code": code}), "conflict")
        .await;
    customer
        .err(
            json!({"type": "join", "code": code, "resume_token": token}),
            "conflict",
        )
        .await;
    customer
        .err(json!({"type": "join", "code": other}), "conflict")
        .await;

    // Nothing was created or taken by the refused commands.
    let (status, list) = server.http("GET", "/v1/cases", Some(ALICE), None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["cases"].as_array().unwrap().len(), 2, "{list}");
    let o = get_case(&server, &other).await;
    assert_eq!(o["status"], "new", "{o}");
    assert_eq!(o["customer_connected"], false, "{o}");

    // The connection still serves its first case.
    let sent = customer
        .ok(json!({"type": "chat", "text": "hello?"}), "sent")
        .await;
    assert_eq!(sent["code"], code);
}

async fn commands_of_the_other_role_are_forbidden(mode: Mode) {
    let server = TestServer::start_in(mode).await;
    let mut bob = server.agent(BOB).await;
    bob.err(
        json!({"type": "request_help", "module": MODULE}),
        "forbidden",
    )
    .await;

    let (mut seated, joined) = request_help(&server, MODULE).await;
    let code = code_of(&joined);
    let mut fresh = server.customer().await;
    let agent_commands = [
        json!({"type": "create_case", "group": "support", "name": "x"}),
        json!({"type": "subscribe"}),
        json!({"type": "assign", "code": code, "assignee": "bob"}),
        json!({"type": "delete", "code": code}),
        json!({"type": "presence", "state": "away"}),
    ];
    for customer in [&mut seated, &mut fresh] {
        for cmd in &agent_commands {
            customer.err(cmd.clone(), "forbidden").await;
        }
    }

    let (status, list) = server.http("GET", "/v1/cases", Some(ALICE), None).await;
    assert_eq!(status, 200, "{list}");
    let cases = list["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 1, "no case was created: {list}");
    assert_eq!(cases[0]["code"], code, "{list}");
    assert_eq!(cases[0]["assignee"], Value::Null, "{list}");
    seated.sync().await;
    assert!(
        !has_type(seated.pending(), "snapshot"),
        "{:?}",
        seated.pending()
    );
}

in_every_mode!(
    request_help_fills_the_case,
    one_customer_connection_serves_one_case,
    commands_of_the_other_role_are_forbidden,
);
