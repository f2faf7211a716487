//! Listing cases: filters by status, group and assignee, paging with
//! `limit` and `cursor`, and what each agent sees: its own groups and
//! company only.

use serde_json::json;

use super::*;

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
