//! Floods: a connection flooding messages is rate-limited, then closed with
//! 4002; help requests are limited per address and per module.

use super::*;

// 5. Message flood ---------------------------------------------------------------

#[tokio::test]
async fn a_message_flood_is_rate_limited_then_closed_with_4002() {
    let server =
        TestServer::with_config(config_with("messages_per_second = 5\nmessage_burst = 5")).await;
    let mut bystander = server.customer().await;
    let mut flooder = customer_from(&server, None, &[]).await;

    // Ten pings at once: the burst passes, the rest is refused, and every
    // answer echoes its id, in order.
    flooder
        .burst((0..10).map(|i| json!({"type": "ping", "id": format!("p{i}")})))
        .await;
    let mut answers = Vec::new();
    for _ in 0..10 {
        let m = flooder.next().await;
        answers.push((m["id"].as_str().unwrap_or("").to_string(), outcome(&m)));
    }
    let ids: Vec<_> = answers.iter().map(|(id, _)| id.clone()).collect();
    let want: Vec<_> = (0..10).map(|i| format!("p{i}")).collect();
    assert_eq!(ids, want, "{answers:?}");
    let pongs = answers.iter().filter(|(_, o)| o == "pong").count();
    let limited = answers.iter().filter(|(_, o)| o == "rate_limited").count();
    assert_eq!(pongs + limited, 10, "{answers:?}");
    assert!(pongs >= 5, "the burst of 5 passes: {answers:?}");
    assert!(limited >= 1, "some are refused: {answers:?}");
    assert!(answers[..5].iter().all(|(_, o)| o == "pong"), "{answers:?}");

    // Keeping on: closed with 4002.
    flooder
        .burst((0..100).map(|i| json!({"type": "ping", "id": i})))
        .await;
    let (how, seen) = flooder.closed().await;
    assert_eq!(
        how,
        Closed::Code(4002),
        "messages before the close: {seen:?}"
    );
    assert!(
        seen.iter().any(|m| outcome(m) == "rate_limited"),
        "{seen:?}"
    );

    // Others are unaffected.
    bystander.sync().await;
    let mut newcomer = server.customer().await;
    newcomer.sync().await;
    wait_metric(&server, &disconnects("rate_limited"), ">= 1", |v| v >= 1.0).await;
}

// 11. Help requests -------------------------------------------------------------------------

async fn help_http(server: &TestServer, from: IpAddr, module: &str) -> (u16, Value) {
    let body = json!({"module": module, "name": "Ana"});
    server
        .sending_from(from)
        .http("POST", "/v1/help", None, Some(body))
        .await
}

async fn help_ws(server: &TestServer, from: IpAddr, module: &str) -> Value {
    let mut c = customer_from(server, Some(from), &[]).await;
    c.request(json!({"type": "request_help", "module": module, "name": "Ana"}))
        .await
}

#[tokio::test]
async fn help_requests_are_limited_per_address() {
    let server = TestServer::with_config(config_with("help_per_ip_per_minute = 2")).await;

    // Over HTTP, then WebSocket, from 127.0.0.1: two pass.
    for _ in 0..2 {
        let (status, body) = help_http(&server, LOCAL, MODULE).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = help_http(&server, LOCAL, MODULE).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "rate_limited", "{body}");
    let reply = help_ws(&server, LOCAL, MODULE).await;
    assert_eq!(outcome(&reply), "rate_limited", "{reply}");

    // Over WebSocket, then HTTP, from 127.0.0.2: its own two.
    for _ in 0..2 {
        let reply = help_ws(&server, OTHER, MODULE).await;
        assert_eq!(reply["type"], "joined", "{reply}");
    }
    let reply = help_ws(&server, OTHER, MODULE).await;
    assert_eq!(outcome(&reply), "rate_limited", "{reply}");
    let (status, body) = help_http(&server, OTHER, MODULE).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "rate_limited", "{body}");

    // Only the four that passed made cases.
    let (_, list) = server.http("GET", "/v1/cases", Some(ALICE), None).await;
    assert_eq!(list["cases"].as_array().unwrap().len(), 4, "{list}");
}

#[tokio::test]
async fn help_requests_are_limited_per_module() {
    let server = TestServer::with_config(config_with("help_per_module_per_minute = 2")).await;
    let (status, body) = help_http(&server, LOCAL, MODULE).await;
    assert_eq!(status, 201, "{body}");
    let reply = help_ws(&server, OTHER, MODULE).await;
    assert_eq!(reply["type"], "joined", "{reply}");

    // A third address still gets its fair share of the spent module (the
    // others cannot lock it out)...
    for _ in 0..casebroker::transport::guard::HELP_FAIR_SHARE {
        let reply = help_ws(&server, THIRD, MODULE).await;
        assert_eq!(reply["type"], "joined", "{reply}");
    }
    // ...and nothing more.
    let reply = help_ws(&server, THIRD, MODULE).await;
    assert_eq!(outcome(&reply), "rate_limited", "{reply}");
    let (status, body) = help_http(&server, THIRD, MODULE).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "rate_limited", "{body}");
    // ...but may use another module.
    let reply = help_ws(&server, THIRD, MODULE_SALES).await;
    assert_eq!(reply["type"], "joined", "{reply}");
}
