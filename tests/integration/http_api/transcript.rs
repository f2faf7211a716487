//! The transcript: the chat of a case in order, as `GET
//! /v1/cases/{code}/transcript` gives it.

use serde_json::json;

use super::*;

// 6. Transcript --------------------------------------------------------------

#[tokio::test]
async fn transcript_holds_the_chat_in_order() {
    let server = TestServer::start().await;
    let (mut customer, joined) = request_help(&server, MODULE).await;
    let code = code_of(&joined);

    // Empty before any chat.
    let (status, t) = server
        .http(
            "GET",
            &format!("/v1/cases/{code}/transcript"),
            Some(BOB),
            None,
        )
        .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t, json!({"code": code, "messages": []}));

    let mut bob = server.agent(BOB).await;
    bob.ok(json!({"type": "join", "code": code}), "joined")
        .await;
    bob.ok(
        json!({"type": "chat", "code": code, "text": "Hi Ana"}),
        "sent",
    )
    .await;
    customer.wait_type("chat").await;
    customer
        .ok(json!({"type": "chat", "text": "Thanks"}), "sent")
        .await;
    bob.wait_type("chat").await;
    bob.ok(
        json!({"type": "chat", "code": code, "text": "Restart it, please"}),
        "sent",
    )
    .await;

    let digits = digits_of(&code);
    let (status, t) = server
        .http(
            "GET",
            &format!("/v1/cases/S{digits}/transcript"),
            Some(BOB),
            None,
        )
        .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["code"], code.as_str(), "{t}");
    let messages = t["messages"].as_array().expect("messages array");
    let got: Vec<(Value, Value, Value)> = messages
        .iter()
        .map(|m| {
            (
                m["from"]["role"].clone(),
                m["from"]["name"].clone(),
                m["text"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (json!("agent"), json!("Bob"), json!("Hi Ana")),
            (json!("customer"), json!("Ana"), json!("Thanks")),
            (json!("agent"), json!("Bob"), json!("Restart it, please")),
        ],
        "{t}"
    );
    for m in messages {
        assert!(is_time(&m["at"]), "at is RFC 3339 ms Z: {m}");
    }
    assert!(
        messages
            .windows(2)
            .all(|w| w[0]["at"].as_str() <= w[1]["at"].as_str()),
        "in order: {t}"
    );

    // The admin sees it too; another company does not.
    let (status, ta) = server
        .http(
            "GET",
            &format!("/v1/cases/{code}/transcript"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(ta, t);
    assert_error(
        &server
            .http(
                "GET",
                &format!("/v1/cases/{code}/transcript"),
                Some(GINA),
                None,
            )
            .await,
        404,
        "not_found",
    );
    assert_error(
        &server
            .http(
                "GET",
                &format!("/v1/cases/{code}/transcript"),
                Some(CAROL),
                None,
            )
            .await,
        404,
        "not_found",
    );
}
