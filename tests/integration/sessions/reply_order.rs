//! Every command's reply comes before the connection is closed: a
//! customer's close, an agent's close and delete of a case it is seated in,
//! and the commands read before a shutdown.

use serde_json::json;

use super::*;

// 13. Every command's reply comes before its connection is closed.

/// The messages a connection received, in order, until it closed, and how.
async fn until_closed(ws: &mut WsClient) -> (Closed, Vec<Value>) {
    tokio::time::timeout(WAIT, ws.closed())
        .await
        .expect("the connection closes")
}

async fn every_reply_comes_before_the_close(mode: Mode) {
    let server = TestServer::start_in(mode).await;

    // request_help: the reply comes before the pushes it causes.
    let mut customer = server.customer().await;
    customer
        .send(json!({"type": "request_help", "module": MODULE, "name": "Ana", "id": 1}))
        .await;
    let first = customer.next().await;
    assert_eq!(first["type"], "joined", "the reply first: {first}");
    assert_eq!(first["id"], 1, "{first}");
    let code = code_of(&first);

    // The customer closes its case: the reply, then `ended`, then 1000.
    customer.send(json!({"type": "close", "id": 2})).await;
    let (how, seen) = until_closed(&mut customer).await;
    assert_eq!(how, Closed::Code(1000), "{seen:?}");
    let reply = seen
        .iter()
        .position(|m| m["id"] == 2)
        .unwrap_or_else(|| panic!("no reply to the close: {seen:?}"));
    assert_eq!(seen[reply]["type"], "case", "{seen:?}");
    assert_eq!(seen[reply]["case"]["status"], "closed", "{seen:?}");
    let ended = seen
        .iter()
        .position(|m| is_ended(m, &code, "closed"))
        .unwrap_or_else(|| panic!("no ended: {seen:?}"));
    assert!(reply < ended, "the reply before ended: {seen:?}");

    // An agent closes, and deletes, a case it is seated in: both replies
    // come, before the pushes they cause to its own connection.
    let mut bob = server.agent(BOB).await;
    for (command, reply) in [("close", "case"), ("delete", "deleted")] {
        let code = code_of(&create_case(&mut bob, "support").await);
        let mut customer = server.customer().await;
        customer
            .ok(json!({"type": "join", "code": code}), "joined")
            .await;
        bob.send(json!({"type": "join", "code": code, "id": "j"}))
            .await;
        let first = bob.next().await;
        assert_eq!(first["type"], "joined", "the reply first: {first}");
        bob.sync().await;
        bob.clear();
        bob.send(json!({"type": command, "code": code, "id": "c"}))
            .await;
        let first = bob.next().await;
        assert_eq!(first["type"], reply, "{command}: the reply first: {first}");
        assert_eq!(first["id"], "c", "{first}");
        bob.sync().await;
        bob.clear();
        let (how, seen) = until_closed(&mut customer).await;
        assert_eq!(how, Closed::Code(1000), "{seen:?}");
    }

    // Shutdown: the commands read before it are all answered, in order,
    // before the close with 4000.
    let (mut customer, _) = request_help(&server, MODULE).await;
    for i in 0..5 {
        customer
            .send(json!({"type": "chat", "text": format!("line {i}"), "id": i}))
            .await;
    }
    // The first reply shows the commands are being read.
    let first = customer.wait_for("the first reply", |m| m["id"] == 0).await;
    assert_eq!(first["type"], "sent", "{first}");
    let stopping = tokio::spawn(server.shutdown());
    let (how, seen) = until_closed(&mut customer).await;
    assert_eq!(how, Closed::Code(4000), "{seen:?}");
    let ids: Vec<i64> = seen.iter().filter_map(|m| m["id"].as_i64()).collect();
    let want: Vec<i64> = (1..=ids.len() as i64).collect();
    assert_eq!(ids, want, "replies in order, none lost: {seen:?}");
    assert!(
        seen.iter()
            .all(|m| m["id"].is_null() || m["type"] == "sent"),
        "{seen:?}"
    );
    stopping.await.expect("the broker stops");
}

in_every_mode!(every_reply_comes_before_the_close);
