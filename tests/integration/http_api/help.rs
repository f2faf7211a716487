//! `POST /v1/help`: a case created without a seat that the customer then
//! joins by code, an unknown module refused, a help request `via` `sos`,
//! and a module with a default assignee.

use serde_json::json;

use super::*;

/// The customer's reduced view.
const CUSTOMER_FIELDS: [&str; 7] = [
    "code",
    "status",
    "name",
    "customer_connected",
    "supporter_connected",
    "supporter",
    "expires_at",
];

// 2. POST /v1/help -----------------------------------------------------------

#[tokio::test]
async fn help_creates_a_case_without_a_seat_and_the_customer_joins_by_code() {
    let server = TestServer::start().await;
    let (status, body) = server
        .http(
            "POST",
            "/v1/help",
            None,
            Some(
                json!({"module": MODULE, "name": "Ana", "email": "ana@example.com",
                        "description": "Cannot print"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(is_code(&body["code"]), "{body}");
    let code = code_of(&body);
    let view = &body["case"];
    let obj = view.as_object().expect("case is an object");
    for f in CUSTOMER_FIELDS {
        assert!(obj.contains_key(f), "customer view lacks {f}: {view}");
    }
    for f in [
        "company",
        "group",
        "customer",
        "description",
        "created_by",
        "assignee",
    ] {
        assert!(!obj.contains_key(f), "customer view shows {f}: {view}");
    }
    assert_eq!(view["code"], code.as_str());
    assert_eq!(view["status"], "new", "no seat taken: {view}");
    assert_eq!(view["customer_connected"], false);
    assert_eq!(view["supporter_connected"], false);
    assert_eq!(view["supporter"], Value::Null);
    assert!(view["name"].is_string(), "{view}");
    assert!(is_time(&view["expires_at"]), "{view}");

    // The agent view of the same case.
    let (status, case) = server
        .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
        .await;
    assert_eq!(status, 200, "{case}");
    assert_eq!(case["source"], "quicksupport", "{case}");
    assert_eq!(case["group"], "support");
    assert_eq!(
        case["customer"],
        json!({"name": "Ana", "email": "ana@example.com"})
    );
    assert_eq!(case["description"], "Cannot print");
    assert_eq!(case["status"], "new");
    assert_eq!(case["customer_connected"], false);

    // The customer then joins by code over WebSocket.
    let mut customer = server.customer().await;
    let joined = customer
        .ok(json!({"type": "join", "code": code}), "joined")
        .await;
    assert_eq!(joined["code"], code.as_str(), "{joined}");
    assert_eq!(joined["case"]["status"], "pending", "{joined}");
    assert_eq!(joined["case"]["customer_connected"], true, "{joined}");
    assert!(joined["resume_token"].is_string(), "{joined}");
    let (_, case) = server
        .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
        .await;
    assert_eq!(case["status"], "pending", "{case}");
    assert_eq!(case["customer_connected"], true, "{case}");
}

#[tokio::test]
async fn help_with_unknown_module_is_unauthorized() {
    let server = TestServer::start().await;
    assert_error(
        &server
            .http(
                "POST",
                "/v1/help",
                None,
                Some(json!({"module": "no-such-module", "name": "Ana"})),
            )
            .await,
        401,
        "unauthorized",
    );
    assert!(list(&server, ALICE, "").await.is_empty());
}

#[tokio::test]
async fn help_via_sos_and_default_assignee() {
    let server = TestServer::start().await;
    let (status, body) = server
        .http(
            "POST",
            "/v1/help",
            None,
            Some(json!({"module": MODULE, "via": "sos", "name": "Ben"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (_, case) = server
        .http(
            "GET",
            &format!("/v1/cases/{}", code_of(&body)),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(case["source"], "sos", "{case}");

    // A module with a default assignee: assigned at creation, and the
    // customer sees the supporter's name.
    let (status, body) = server
        .http(
            "POST",
            "/v1/help",
            None,
            Some(json!({"module": MODULE_BOB})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["case"]["supporter"], json!({"name": "Bob"}), "{body}");
    let (_, case) = server
        .http(
            "GET",
            &format!("/v1/cases/{}", code_of(&body)),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(case["assignee"], "bob", "{case}");
    assert_eq!(case["source"], "quicksupport", "{case}");
    assert!(is_time(&case["assigned_at"]), "{case}");
}
