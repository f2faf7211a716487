//! Error bodies: a missing or wrong token, bad bodies, permission errors,
//! malformed and unknown codes, an oversized body, an unknown path, and
//! fields over their limits, each with its status and `{code, message}`.

use serde_json::json;

use super::*;

// 5. Errors ------------------------------------------------------------------

#[tokio::test]
async fn missing_or_wrong_token_is_unauthorized() {
    let server = TestServer::start().await;
    let body = json!({"group": "support"});
    assert_error(
        &server.http("GET", "/v1/cases", None, None).await,
        401,
        "unauthorized",
    );
    assert_error(
        &server
            .http("POST", "/v1/cases", None, Some(body.clone()))
            .await,
        401,
        "unauthorized",
    );
    assert_error(
        &server
            .http("GET", "/v1/cases", Some("not-a-real-token"), None)
            .await,
        401,
        "unauthorized",
    );
    assert_error(
        &server
            .http("POST", "/v1/cases", Some("not-a-real-token"), Some(body))
            .await,
        401,
        "unauthorized",
    );
    assert_error(
        &server
            .http(
                "GET",
                &format!("/v1/cases/{UNKNOWN_CODE}"),
                Some("not-a-real-token"),
                None,
            )
            .await,
        401,
        "unauthorized",
    );
    assert!(list(&server, ALICE, "").await.is_empty(), "nothing created");
}

#[tokio::test]
async fn bad_bodies_are_bad_requests() {
    let server = TestServer::start().await;
    assert_error(
        &server
            .http_raw("POST", "/v1/cases", Some(ALICE), "{\"group\": ")
            .await,
        400,
        "bad_request",
    );
    assert_error(
        &server.http_raw("POST", "/v1/help", None, "not json").await,
        400,
        "bad_request",
    );
    assert_error(
        &server
            .http("POST", "/v1/cases", Some(ALICE), Some(json!({"name": "x"})))
            .await,
        400,
        "bad_request",
    );
    assert_error(
        &server
            .http(
                "POST",
                "/v1/cases",
                Some(ALICE),
                Some(json!({"group": "billing"})),
            )
            .await,
        400,
        "bad_request",
    );

    let code = code_of(&create(&server, ALICE, json!({"group": "support"})).await);
    let assign = format!("/v1/cases/{code}/assign");
    assert_error(
        &server
            .http("POST", &assign, Some(ALICE), Some(json!({})))
            .await,
        400,
        "bad_request",
    );
    assert_error(
        &server
            .http(
                "POST",
                &assign,
                Some(ALICE),
                Some(json!({"assignee": "zed"})),
            )
            .await,
        400,
        "bad_request",
    );
    let (_, c) = server
        .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
        .await;
    assert_eq!(
        c["assignee"],
        Value::Null,
        "refused assigns changed nothing"
    );
    assert_eq!(
        codes(&list(&server, ALICE, "").await),
        set(&[&code]),
        "refused creations created nothing"
    );
}

#[tokio::test]
async fn permission_errors_are_forbidden() {
    let server = TestServer::start().await;
    assert_error(
        &server
            .http(
                "POST",
                "/v1/cases",
                Some(BOB),
                Some(json!({"group": "sales"})),
            )
            .await,
        403,
        "forbidden",
    );
    // Alice's unassigned support case: bob neither created nor holds it.
    let code = code_of(&create(&server, ALICE, json!({"group": "support"})).await);
    assert_error(
        &server
            .http("POST", &format!("/v1/cases/{code}/close"), Some(BOB), None)
            .await,
        403,
        "forbidden",
    );
    let (_, c) = server
        .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
        .await;
    assert_eq!(c["status"], "new", "still open: {c}");
    assert!(
        list(&server, ALICE, "?group=sales").await.is_empty(),
        "no sales case was created"
    );
}

#[tokio::test]
async fn malformed_and_unknown_codes() {
    let server = TestServer::start().await;
    let attempts = |code: &str| {
        [
            ("GET", format!("/v1/cases/{code}"), None),
            (
                "POST",
                format!("/v1/cases/{code}/assign"),
                Some(json!({"assignee": "bob"})),
            ),
            ("POST", format!("/v1/cases/{code}/close"), None),
            ("DELETE", format!("/v1/cases/{code}"), None),
            ("GET", format!("/v1/cases/{code}/transcript"), None),
        ]
    };
    for (method, path, body) in attempts("xyz") {
        let got = server.http(method, &path, Some(ALICE), body).await;
        assert_eq!(got.0, 400, "{method} {path}: {}", got.1);
        assert_error(&got, 400, "bad_request");
    }
    for (method, path, body) in attempts(UNKNOWN_CODE) {
        let got = server.http(method, &path, Some(ALICE), body).await;
        assert_eq!(got.0, 404, "{method} {path}: {}", got.1);
        assert_error(&got, 404, "not_found");
    }
}

#[tokio::test]
async fn oversized_body_is_too_large() {
    let server = TestServer::start().await;
    let big = format!(
        "{{\"group\":\"support\",\"description\":\"{}\"}}",
        "x".repeat(70 * 1024)
    );
    assert_error(
        &server
            .http_raw("POST", "/v1/cases", Some(ALICE), &big)
            .await,
        413,
        "too_large",
    );
    let big = format!(
        "{{\"module\":\"{MODULE}\",\"description\":\"{}\"}}",
        "x".repeat(70 * 1024)
    );
    assert_error(
        &server.http_raw("POST", "/v1/help", None, &big).await,
        413,
        "too_large",
    );
    assert!(list(&server, ALICE, "").await.is_empty(), "nothing created");
}

#[tokio::test]
async fn unknown_path_is_a_json_404() {
    let server = TestServer::start().await;
    for path in ["/v1/nope", "/nope", "/v1/cases/s12-345-678/nope"] {
        assert_error(
            &server.http("GET", path, Some(ALICE), None).await,
            404,
            "not_found",
        );
    }
}

// 8. Field limits ------------------------------------------------------------

#[tokio::test]
async fn field_limits_over_http() {
    let server = TestServer::start().await;
    let too_long = [
        json!({"group": "support", "name": "n".repeat(101)}),
        json!({"group": "support", "name": "é".repeat(101)}),
        json!({"group": "support", "description": "d".repeat(4001)}),
        json!({"group": "support",
               "customer": {"email": format!("{}@example.com", "a".repeat(243))}}),
        json!({"group": "support", "customer": {"name": "c".repeat(101)}}),
    ];
    for body in too_long {
        let got = server
            .http("POST", "/v1/cases", Some(ALICE), Some(body.clone()))
            .await;
        assert_eq!(got.0, 413, "{body} -> {}", got.1);
        assert_error(&got, 413, "too_large");
    }
    assert!(list(&server, ALICE, "").await.is_empty(), "nothing created");

    // At the limits, counted in Unicode characters.
    let name = "é".repeat(100);
    let email = format!("{}@example.com", "a".repeat(242));
    assert_eq!(email.chars().count(), 254);
    let case = create(
        &server,
        ALICE,
        json!({"group": "support", "name": name, "description": "d".repeat(4000),
               "customer": {"name": "ü".repeat(100), "email": email}}),
    )
    .await;
    assert_eq!(case["name"], name.as_str());
    assert_eq!(case["customer"]["email"], email.as_str());

    // The same limits on POST /v1/help.
    for body in [
        json!({"module": MODULE, "description": "d".repeat(4001)}),
        json!({"module": MODULE, "name": "c".repeat(101)}),
        json!({"module": MODULE, "email": format!("{}@example.com", "a".repeat(243))}),
    ] {
        let got = server
            .http("POST", "/v1/help", None, Some(body.clone()))
            .await;
        assert_eq!(got.0, 413, "{body} -> {}", got.1);
        assert_error(&got, 413, "too_large");
    }
    let (status, body) = server
        .http(
            "POST",
            "/v1/help",
            None,
            Some(json!({"module": MODULE, "name": "é".repeat(100)})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}
