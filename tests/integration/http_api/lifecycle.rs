//! A case end to end over HTTP: created with every field of the agent view,
//! read by its code in any form, assigned, closed and deleted.

use serde_json::json;

use super::*;

/// Every field of the agent view ("Case object").
const CASE_FIELDS: [&str; 18] = [
    "code",
    "company",
    "group",
    "name",
    "description",
    "customer",
    "source",
    "created_by",
    "assignee",
    "status",
    "customer_connected",
    "supporter_connected",
    "created_at",
    "updated_at",
    "assigned_at",
    "expires_at",
    "closed_at",
    "closed_by",
];

// 1. End to end --------------------------------------------------------------

#[tokio::test]
async fn case_lifecycle_end_to_end() {
    let server = TestServer::start().await;
    let customer = json!({"name": "Ana", "email": "ana@example.com"});
    let case = create(
        &server,
        ALICE,
        json!({"group": "support", "name": "Printer down",
               "description": "Paper jam on floor 3", "customer": customer}),
    )
    .await;
    let obj = case.as_object().expect("case is an object");
    for f in CASE_FIELDS {
        assert!(obj.contains_key(f), "case lacks {f}: {case}");
    }
    assert!(is_code(&case["code"]), "code like s12-345-678: {case}");
    assert_eq!(case["company"], "acme");
    assert_eq!(case["group"], "support");
    assert_eq!(case["name"], "Printer down");
    assert_eq!(case["description"], "Paper jam on floor 3");
    assert_eq!(case["customer"], customer);
    assert_eq!(case["source"], "manual");
    assert_eq!(case["created_by"], "alice");
    assert_eq!(case["assignee"], Value::Null);
    assert_eq!(case["status"], "new");
    assert_eq!(case["customer_connected"], false);
    assert_eq!(case["supporter_connected"], false);
    for f in ["created_at", "updated_at", "expires_at"] {
        assert!(is_time(&case[f]), "{f} is RFC 3339 ms Z: {case}");
    }
    for f in ["assigned_at", "closed_at", "closed_by"] {
        assert_eq!(case[f], Value::Null, "{f}: {case}");
    }
    assert!(case["expires_at"].as_str() > case["created_at"].as_str());

    let code = code_of(&case);
    let digits = digits_of(&code);
    for form in [
        code.clone(),
        format!("s{digits}"),
        format!("S{digits}"),
        code.to_uppercase(),
    ] {
        let (status, got) = server
            .http("GET", &format!("/v1/cases/{form}"), Some(ALICE), None)
            .await;
        assert_eq!(status, 200, "GET /v1/cases/{form}: {got}");
        assert_eq!(got, case, "GET /v1/cases/{form}");
    }

    // Assign to bob (through the uppercase, dashless form of the code).
    let (status, assigned) = server
        .http(
            "POST",
            &format!("/v1/cases/S{digits}/assign"),
            Some(ALICE),
            Some(json!({"assignee": "bob"})),
        )
        .await;
    assert_eq!(status, 200, "{assigned}");
    assert_eq!(assigned["code"], code.as_str());
    assert_eq!(assigned["assignee"], "bob");
    assert!(is_time(&assigned["assigned_at"]), "{assigned}");
    assert!(is_time(&assigned["updated_at"]), "{assigned}");
    assert!(assigned["updated_at"].as_str() >= case["updated_at"].as_str());
    assert_eq!(assigned["status"], "new");
    let (_, got) = server
        .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
        .await;
    assert_eq!(got["assignee"], "bob", "{got}");

    // Back to the line.
    let (status, unassigned) = server
        .http(
            "POST",
            &format!("/v1/cases/{code}/assign"),
            Some(ALICE),
            Some(json!({"assignee": null})),
        )
        .await;
    assert_eq!(status, 200, "{unassigned}");
    assert_eq!(unassigned["assignee"], Value::Null, "{unassigned}");
    assert_eq!(unassigned["assigned_at"], Value::Null, "{unassigned}");

    // Close.
    let (status, closed) = server
        .http(
            "POST",
            &format!("/v1/cases/{code}/close"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["code"], code.as_str());
    assert_eq!(closed["status"], "closed", "{closed}");
    assert_eq!(closed["closed_by"], "alice", "{closed}");
    assert!(is_time(&closed["closed_at"]), "{closed}");
    let (_, got) = server
        .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
        .await;
    assert_eq!(got["status"], "closed", "{got}");

    assert_error(
        &server
            .http(
                "POST",
                &format!("/v1/cases/{code}/close"),
                Some(ALICE),
                None,
            )
            .await,
        409,
        "conflict",
    );

    // Delete.
    let (status, body) = server
        .http("DELETE", &format!("/v1/cases/{code}"), Some(ALICE), None)
        .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(body, Value::Null, "204 has no body");
    assert_error(
        &server
            .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
            .await,
        404,
        "not_found",
    );
    assert_error(
        &server
            .http("DELETE", &format!("/v1/cases/{code}"), Some(ALICE), None)
            .await,
        404,
        "not_found",
    );
    assert!(list(&server, ALICE, "").await.is_empty());
}
