//! The directory at run time through the admin API: agents added, changed,
//! given a new token, disabled and deleted, with every error code, the
//! effects at once (sign-out with 4500, cases back in the line), and a
//! restart of a journaled broker that keeps every change.

#[path = "admin/agents.rs"]
mod agents;
#[path = "admin/modules.rs"]
mod modules;
#[path = "admin/persistence.rs"]
mod persistence;

use serde_json::{Value, json};

use crate::util::*;

/// A new agent in `support`; its answer and token.
async fn add(server: &TestServer, id: &str) -> (Value, String) {
    let (st, body) = server
        .http(
            "POST",
            "/v1/admin/agents",
            Some(ALICE),
            Some(json!({"id": id, "name": format!("Agent {id}"), "groups": ["support"]})),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let token = body["token"].as_str().expect("a token").to_string();
    assert_eq!(token.len(), 64, "{body}");
    (body["agent"].clone(), token)
}

/// `PATCH /v1/admin/agents/{id}` as alice.
async fn patch(server: &TestServer, id: &str, body: Value) -> (u16, Value) {
    server
        .http(
            "PATCH",
            &format!("/v1/admin/agents/{id}"),
            Some(ALICE),
            Some(body),
        )
        .await
}

/// Signs in with `token`: the welcome, or the error that refused it.
async fn hello(server: &TestServer, token: &str) -> Value {
    let mut ws = server.ws().await;
    ws.send(json!({"type": "hello", "role": "agent", "token": token}))
        .await;
    ws.next().await
}

/// A help request with `module` over HTTP; the status and the answer.
async fn ask_help(server: &TestServer, module: &str) -> (u16, Value) {
    server
        .http(
            "POST",
            "/v1/help",
            None,
            Some(json!({"module": module, "name": "Ana"})),
        )
        .await
}
