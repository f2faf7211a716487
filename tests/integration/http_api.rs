//! The HTTP API of PROTOCOL.md over a real socket: cases end to end, help
//! requests, listing and paging, visibility and isolation, error bodies,
//! transcripts, health and metrics, field limits.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::*;

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

/// A code that no test creates (one chance in 10^8 per case drawn).
const UNKNOWN_CODE: &str = "s00-000-000";

/// RFC 3339 UTC with milliseconds and `Z`: `2024-05-01T12:34:56.789Z`.
fn is_time(v: &Value) -> bool {
    let Some(s) = v.as_str() else {
        return false;
    };
    s.len() == 24
        && s.bytes().enumerate().all(|(i, c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            23 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// `s12-345-678`.
fn is_code(v: &Value) -> bool {
    let Some(s) = v.as_str() else {
        return false;
    };
    s.len() == 11
        && s.bytes().enumerate().all(|(i, c)| match i {
            0 => c == b's',
            3 | 7 => c == b'-',
            _ => c.is_ascii_digit(),
        })
}

fn digits_of(code: &str) -> String {
    code.chars().filter(char::is_ascii_digit).collect()
}

/// Asserts an HTTP error: this status and a body of exactly
/// `{"code": code, "message": "<non-empty>"}`.
#[track_caller]
fn assert_error(got: &(u16, Value), status: u16, code: &str) {
    let (s, body) = got;
    assert_eq!(*s, status, "status; body {body}");
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("error body is not a JSON object: {body}"));
    assert_eq!(
        obj.keys().map(String::as_str).collect::<HashSet<_>>(),
        HashSet::from(["code", "message"]),
        "error body keys: {body}"
    );
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message is a non-empty string: {body}"
    );
}

/// `POST /v1/cases`, asserting 201; returns the case.
async fn create(server: &TestServer, token: &str, body: Value) -> Value {
    let (status, case) = server
        .http("POST", "/v1/cases", Some(token), Some(body.clone()))
        .await;
    assert_eq!(status, 201, "POST /v1/cases {body} -> {case}");
    case
}

/// `GET /v1/cases{query}`, asserting 200 and a single page; returns the
/// cases.
async fn list(server: &TestServer, token: &str, query: &str) -> Vec<Value> {
    let (status, body) = server
        .http("GET", &format!("/v1/cases{query}"), Some(token), None)
        .await;
    assert_eq!(status, 200, "GET /v1/cases{query} -> {body}");
    assert!(
        body.as_object()
            .is_some_and(|o| o.contains_key("next_cursor")),
        "next_cursor is always present: {body}"
    );
    assert_eq!(body["next_cursor"], Value::Null, "one page: {body}");
    body["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("cases is an array: {body}"))
        .clone()
}

fn codes(cases: &[Value]) -> HashSet<String> {
    cases.iter().map(code_of).collect()
}

fn set(codes: &[&String]) -> HashSet<String> {
    codes.iter().map(|c| (*c).clone()).collect()
}

/// Percent-encodes a query value (all but the unreserved characters).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

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

// 3. Listing -----------------------------------------------------------------

#[tokio::test]
async fn list_filters_by_status_group_and_assignee() {
    let server = TestServer::start().await;
    let one = code_of(&create(&server, ALICE, json!({"group": "support", "name": "one"})).await);
    let bobs = code_of(
        &create(
            &server,
            ALICE,
            json!({"group": "support", "name": "two", "assignee": "bob"}),
        )
        .await,
    );
    let sales = code_of(&create(&server, ALICE, json!({"group": "sales"})).await);
    let closed = code_of(&create(&server, ALICE, json!({"group": "support"})).await);
    let (status, body) = server
        .http(
            "POST",
            &format!("/v1/cases/{closed}/close"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");

    assert_eq!(
        codes(&list(&server, ALICE, "").await),
        set(&[&one, &bobs, &sales, &closed])
    );
    assert_eq!(
        codes(&list(&server, ALICE, "?group=sales").await),
        set(&[&sales])
    );
    assert_eq!(
        codes(&list(&server, ALICE, "?group=support").await),
        set(&[&one, &bobs, &closed])
    );
    assert_eq!(
        codes(&list(&server, ALICE, "?assignee=bob").await),
        set(&[&bobs])
    );
    assert_eq!(
        codes(&list(&server, ALICE, "?status=closed").await),
        set(&[&closed])
    );
    assert_eq!(
        codes(&list(&server, ALICE, "?status=new").await),
        set(&[&one, &bobs, &sales])
    );
    assert_eq!(
        codes(&list(&server, ALICE, "?status=new&group=support&assignee=bob").await),
        set(&[&bobs])
    );
    assert!(list(&server, ALICE, "?status=in_progress").await.is_empty());
    let cases = list(&server, ALICE, "?group=support&status=new").await;
    assert!(
        cases
            .iter()
            .all(|c| c["group"] == "support" && c["status"] == "new"),
        "{cases:?}"
    );
    assert_error(
        &server
            .http("GET", "/v1/cases?status=bogus", Some(ALICE), None)
            .await,
        400,
        "bad_request",
    );
}

#[tokio::test]
async fn list_pages_with_limit_and_cursor() {
    let server = TestServer::start().await;
    let mut created = HashSet::new();
    for i in 0..7 {
        let case = create(
            &server,
            ALICE,
            json!({"group": "support", "name": format!("case {i}")}),
        )
        .await;
        created.insert(code_of(&case));
    }
    assert_eq!(created.len(), 7);

    let mut seen: Vec<String> = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/v1/cases?limit=3".to_string(),
            Some(c) => format!("/v1/cases?limit=3&cursor={}", enc(c)),
        };
        let (status, body) = server.http("GET", &path, Some(ALICE), None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        let page = body["cases"].as_array().expect("cases array").clone();
        assert!(page.len() <= 3, "limit respected: {body}");
        sizes.push(page.len());
        seen.extend(page.iter().map(code_of));
        match &body["next_cursor"] {
            Value::Null => break,
            Value::String(c) => cursor = Some(c.clone()),
            other => panic!("next_cursor is a string or null, got {other}"),
        }
        assert!(sizes.len() < 10, "paging does not end: {sizes:?}");
    }
    assert_eq!(sizes, vec![3, 3, 1], "pages");
    assert_eq!(seen.len(), 7, "each case once: {seen:?}");
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), created);

    // Defaults and bounds.
    assert_eq!(codes(&list(&server, ALICE, "").await), created);
    assert_eq!(codes(&list(&server, ALICE, "?limit=1000").await), created);
    for bad in ["limit=0", "limit=1001", "limit=abc", "limit=-1"] {
        assert_error(
            &server
                .http("GET", &format!("/v1/cases?{bad}"), Some(ALICE), None)
                .await,
            400,
            "bad_request",
        );
    }
    for bad in ["not-a-cursor", "abc.123", "1.x"] {
        assert_error(
            &server
                .http(
                    "GET",
                    &format!("/v1/cases?cursor={}", enc(bad)),
                    Some(ALICE),
                    None,
                )
                .await,
            400,
            "bad_request",
        );
    }
}

// 4. Visibility and isolation ------------------------------------------------

#[tokio::test]
async fn agents_see_only_their_groups_and_company() {
    let server = TestServer::start().await;
    let support = code_of(&create(&server, ALICE, json!({"group": "support"})).await);
    let sales = code_of(&create(&server, ALICE, json!({"group": "sales"})).await);
    let globex = code_of(&create(&server, GINA, json!({"group": "support"})).await);

    assert_eq!(codes(&list(&server, BOB, "").await), set(&[&support]));
    assert_eq!(codes(&list(&server, CAROL, "").await), set(&[&sales]));
    assert_eq!(
        codes(&list(&server, ALICE, "").await),
        set(&[&support, &sales])
    );
    assert!(
        list(&server, BOB, "?group=sales").await.is_empty(),
        "a group filter does not widen visibility"
    );

    let unknown = server
        .http("GET", &format!("/v1/cases/{UNKNOWN_CODE}"), Some(BOB), None)
        .await;
    assert_error(&unknown, 404, "not_found");

    // Bob and a sales case: not_found everywhere, indistinguishable from
    // a code that does not exist.
    let hidden = server
        .http("GET", &format!("/v1/cases/{sales}"), Some(BOB), None)
        .await;
    assert_error(&hidden, 404, "not_found");
    assert_eq!(hidden.1, unknown.1, "an invisible case looks like none");
    let (_, c) = server
        .http("GET", &format!("/v1/cases/{support}"), Some(BOB), None)
        .await;
    assert_eq!(c["code"], support.as_str(), "bob sees his group's case");

    // Gina (globex) and acme codes.
    for code in [&support, &sales] {
        let attempts = [
            ("GET", format!("/v1/cases/{code}"), None),
            (
                "POST",
                format!("/v1/cases/{code}/assign"),
                Some(json!({"assignee": "gina"})),
            ),
            ("POST", format!("/v1/cases/{code}/close"), None),
            ("DELETE", format!("/v1/cases/{code}"), None),
            ("GET", format!("/v1/cases/{code}/transcript"), None),
        ];
        for (method, path, body) in attempts {
            let got = server.http(method, &path, Some(GINA), body).await;
            assert_error(&got, 404, "not_found");
            assert_eq!(got.1, unknown.1, "{method} {path} as gina");
        }
    }
    let gina_cases = list(&server, GINA, "").await;
    assert_eq!(codes(&gina_cases), set(&[&globex]));
    assert!(
        gina_cases.iter().all(|c| c["company"] == "globex"),
        "{gina_cases:?}"
    );
    assert!(!codes(&list(&server, ALICE, "").await).contains(&globex));
    let got = server
        .http("GET", &format!("/v1/cases/{globex}"), Some(ALICE), None)
        .await;
    assert_error(&got, 404, "not_found");

    // Gina's attempts changed nothing.
    let (status, c) = server
        .http("GET", &format!("/v1/cases/{support}"), Some(ALICE), None)
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["status"], "new");
    assert_eq!(c["assignee"], Value::Null);
}

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

// 7. Health and metrics ------------------------------------------------------

#[tokio::test]
async fn metrics_track_connections_cases_and_events() {
    let server = TestServer::start().await;
    const AGENTS: &str = "casebroker_connections{role=\"agent\"}";
    const NEW: &str = "casebroker_cases{status=\"new\"}";
    const CLOSED: &str = "casebroker_cases{status=\"closed\"}";
    const EVENTS: &str = "casebroker_events_total";

    let text = scrape(&server).await;
    assert_eq!(metric(&text, AGENTS), Some(0.0), "{text}");
    assert_eq!(metric(&text, NEW), Some(0.0), "{text}");
    let events0 = metric(&text, EVENTS).unwrap_or_else(|| panic!("no {EVENTS}:\n{text}"));

    let bob = server.agent(BOB).await;
    wait_metric(&server, AGENTS, "1", |v| v == 1.0).await;

    let a = code_of(&create(&server, ALICE, json!({"group": "support"})).await);
    let b = code_of(&create(&server, ALICE, json!({"group": "sales"})).await);
    let text = scrape(&server).await;
    assert_eq!(metric(&text, NEW), Some(2.0), "{text}");
    let events1 = metric(&text, EVENTS).expect("events counter");
    assert!(
        events1 > events0,
        "events_total grew: {events0} -> {events1}"
    );

    let (status, body) = server
        .http("POST", &format!("/v1/cases/{a}/close"), Some(ALICE), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let text = scrape(&server).await;
    assert_eq!(metric(&text, NEW), Some(1.0), "{text}");
    assert_eq!(metric(&text, CLOSED), Some(1.0), "{text}");
    let events2 = metric(&text, EVENTS).expect("events counter");
    assert!(
        events2 > events1,
        "events_total grew: {events1} -> {events2}"
    );

    for secret in [
        "acme".to_string(),
        "alice".to_string(),
        a.clone(),
        digits_of(&a),
        b.clone(),
        digits_of(&b),
    ] {
        assert!(!text.contains(&secret), "metrics mention {secret}:\n{text}");
    }

    bob.close().await;
    wait_metric(&server, AGENTS, "0", |v| v == 0.0).await;
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

/// `metrics_listen`: `/metrics` alone on its own listener, moving with the
/// main one's traffic; nothing else is served there, and the main listener
/// no longer serves it.
#[tokio::test]
async fn metrics_can_be_served_on_their_own_listener() {
    let main = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (main_addr, metrics_addr) = (main.local_addr().unwrap(), metrics.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let broker = tokio::spawn(casebroker::run_with_metrics(
        main,
        Some(metrics),
        config_with(""),
        async {
            let _ = stopped.await;
        },
    ));
    let http = reqwest::Client::new();
    let created = http
        .post(format!("http://{main_addr}/v1/cases"))
        .bearer_auth(ALICE)
        .json(&json!({"group": "support"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let text = http
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("casebroker_cases{status=\"new\"} 1"),
        "{text}"
    );
    let other = http
        .get(format!("http://{metrics_addr}/v1/cases"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        404,
        "the metrics listener serves /metrics alone"
    );
    let public = http
        .get(format!("http://{main_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        public.status(),
        404,
        "with a listener of its own, /metrics is off the main one"
    );
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(15), broker)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();
}
