//! A customer and an agent meet: the path of the README's tour.

use serde_json::json;

use crate::util::*;

#[tokio::test]
async fn customer_and_agent_meet_and_chat() {
    let server = TestServer::start().await;
    let (mut customer, joined) = request_help(&server, MODULE).await;
    let code = joined["code"].as_str().unwrap().to_string();
    assert_eq!(joined["case"]["status"], "pending");
    assert!(joined["resume_token"].as_str().unwrap().len() >= 32);

    let mut bob = server.agent(BOB).await;
    let j = bob
        .ok(json!({"type": "join", "code": code}), "joined")
        .await;
    assert_eq!(j["case"]["assignee"], "bob");
    assert_eq!(j["case"]["status"], "in_progress");

    let st = customer
        .wait_for("in_progress", |v| {
            v["type"] == "status" && v["status"] == "in_progress"
        })
        .await;
    assert_eq!(st["supporter_connected"], true);
    assert_eq!(
        st["supporter"]["name"], "Bob",
        "the customer learns who took the case"
    );

    bob.ok(
        json!({"type": "chat", "code": code, "text": "Hi Ana"}),
        "sent",
    )
    .await;
    let chat = customer.wait_type("chat").await;
    assert_eq!(chat["text"], "Hi Ana");
    assert_eq!(chat["from"]["role"], "agent");
    assert_eq!(chat["from"]["name"], "Bob");

    customer
        .ok(json!({"type": "chat", "text": "Thanks"}), "sent")
        .await;
    let chat = bob.wait_type("chat").await;
    assert_eq!(chat["text"], "Thanks");
    assert_eq!(chat["from"]["role"], "customer");
}
