//! All of it on one broker: garbage until closed, an oversized frame, bad
//! hellos and a silent socket, sockets that vanish, every kind of bad
//! message and forbidden and cross-company command; a normal meeting still
//! works afterwards.

use super::*;

#[tokio::test]
async fn the_broker_survives_the_abuse() {
    let server = TestServer::with_config(config_with("hello_timeout = \"300ms\"")).await;

    // A company's own case, which gina goes after.
    let mut alice = server.agent(ALICE).await;
    let acme = create_case(&mut alice, "support").await;
    let acme_code = acme["code"].as_str().unwrap().to_string();

    // Garbage until closed.
    let mut garbage = server.agent(BOB).await;
    for i in 0..25 {
        garbage.send_text(&format!("{{not json {i}")).await;
    }
    assert_eq!(garbage.closed().await.0, Closed::Code(4002));

    // Oversized.
    let mut big = server.customer().await;
    big.send_text(&chat_of_size(80_000)).await;
    assert_eq!(big.closed().await.0, Closed::Code(1009));

    // Bad hellos and a silent socket.
    bad_hello(&server, Message::text("]]"), "bad_request", 4502).await;
    bad_hello(
        &server,
        Message::text(json!({"type": "hello", "role": "agent", "token": "x"}).to_string()),
        "unauthorized",
        4500,
    )
    .await;
    let mut silent = server.ws().await;
    assert_eq!(silent.closed().await.0, Closed::Code(4501));

    // A socket that just vanishes after hello, and one mid-session.
    drop(server.customer().await);
    let (vanishing, _) = request_help(&server, MODULE).await;
    drop(vanishing);

    // Each kind of bad message once, and the forbidden and cross-company.
    let mut customer = server.customer().await;
    for (text, id) in malformed() {
        expect_error(&mut customer, &text, "bad_request", id).await;
    }
    customer
        .err(json!({"type": "delete", "code": acme_code}), "forbidden")
        .await;
    let mut gina = server.agent(GINA).await;
    gina.err(json!({"type": "delete", "code": acme_code}), "not_found")
        .await;

    // A normal meeting still works on the same server.
    let (mut ana, joined) = request_help(&server, MODULE).await;
    let code = joined["code"].as_str().unwrap().to_string();
    let mut bob = server.agent(BOB).await;
    let j = bob
        .ok(json!({"type": "join", "code": code}), "joined")
        .await;
    assert_eq!(j["case"]["status"], "in_progress");
    bob.ok(
        json!({"type": "chat", "code": code, "text": "Hi Ana"}),
        "sent",
    )
    .await;
    assert_eq!(ana.wait_type("chat").await["text"], "Hi Ana");
    ana.ok(json!({"type": "chat", "text": "Thanks"}), "sent")
        .await;
    assert_eq!(bob.wait_type("chat").await["text"], "Thanks");
    assert_eq!(get_case(&server, &acme_code).await["status"], "new");
    let (status, _) = server.http("GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    alice.sync().await;
}
