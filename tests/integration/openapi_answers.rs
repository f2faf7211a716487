//! Real answers of a real broker, errors included, held to
//! `proto/openapi.json`: each status is one the document lists for its
//! operation, and each JSON body fits that answer's schema.

use serde_json::{Value, json};

use super::openapi::{document, resolve};
use crate::util::*;

const OPERATOR: &str = "operator-token-000001";
const WITH_OPERATOR: &str = "operator_token = \"operator-token-000001\"";

/// Holds the document to one real answer: `status` is one it lists for
/// `method` on `template`, and a JSON body fits that answer's schema.
fn check(doc: &Value, method: &str, template: &str, status: u16, body: &Value) {
    let operation = &doc["paths"][template][method.to_lowercase()];
    assert!(
        operation.is_object(),
        "{method} {template} is not in the document"
    );
    let response = &operation["responses"][status.to_string()];
    assert!(
        !response.is_null(),
        "{method} {template} answered {status}, which the document does not list: {body}"
    );
    let response = resolve(doc, response);
    let Some(schema) = response.pointer("/content/application~1json/schema") else {
        assert!(
            body.is_null(),
            "{method} {template} {status}: a body the document does not describe: {body}"
        );
        return;
    };
    // The document itself is the root schema, so its `#/components/...`
    // references resolve; the answer's own schema is what it is held to.
    let mut root = doc.clone();
    root["x-answer"] = schema.clone();
    root["$ref"] = json!("#/x-answer");
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("{method} {template} {status}: bad schema: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {template} {status}: {body}\ndoes not fit the document: {errors:#?}"
    );
}

/// Sends one request and holds its answer to the document.
async fn call(
    server: &TestServer,
    doc: &Value,
    (method, path, template): (&str, &str, &str),
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, answer) = server.http(method, path, token, body).await;
    check(doc, method, template, status, &answer);
    (status, answer)
}

#[tokio::test]
async fn real_answers_fit_the_document() {
    let server = TestServer::with_config(config_with(WITH_OPERATOR)).await;
    let doc = document(&server).await;
    let doc = &doc;
    let s = &server;

    // Cases.
    let new_case = json!({"group": "support", "name": "Printer",
        "customer": {"name": "Zoe", "email": "zoe@example.com"}});
    let (st, case) = call(
        s,
        doc,
        ("POST", "/v1/cases", "/v1/cases"),
        Some(ALICE),
        Some(new_case),
    )
    .await;
    assert_eq!(st, 201, "{case}");
    let code = case["code"].as_str().unwrap().to_string();
    let digits: String = code.chars().filter(char::is_ascii_digit).collect();
    let one = "/v1/cases/{code}";
    for (path, want) in [
        (format!("/v1/cases/{code}"), 200),
        (format!("/v1/cases/S{digits}"), 200),
        ("/v1/cases/s12-34".to_string(), 400),
        ("/v1/cases/s00-000-000".to_string(), 404),
    ] {
        let (st, _) = call(s, doc, ("GET", &path, one), Some(ALICE), None).await;
        assert_eq!(st, want, "{path}");
    }
    let (st, _) = call(
        s,
        doc,
        ("GET", &format!("/v1/cases/{code}"), one),
        None,
        None,
    )
    .await;
    assert_eq!(st, 401);
    let (st, _) = call(
        s,
        doc,
        ("GET", &format!("/v1/cases/{code}"), one),
        Some(CAROL),
        None,
    )
    .await;
    assert_eq!(st, 404);
    for (query, want) in [
        ("", 200),
        ("?status=new&limit=1", 200),
        ("?limit=0", 400),
        ("?status=busy", 400),
    ] {
        let path = format!("/v1/cases{query}");
        let (st, _) = call(s, doc, ("GET", &path, "/v1/cases"), Some(BOB), None).await;
        assert_eq!(st, want, "{path}");
    }
    let bad = json!({"group": "nope"});
    let (st, _) = call(
        s,
        doc,
        ("POST", "/v1/cases", "/v1/cases"),
        Some(ALICE),
        Some(bad),
    )
    .await;
    assert_eq!(st, 400);
    let long = json!({"group": "support", "name": "x".repeat(101)});
    let (st, _) = call(
        s,
        doc,
        ("POST", "/v1/cases", "/v1/cases"),
        Some(ALICE),
        Some(long),
    )
    .await;
    assert_eq!(st, 413);
    let path = format!("/v1/cases/{code}/transcript");
    let t = "/v1/cases/{code}/transcript";
    assert_eq!(
        call(s, doc, ("GET", &path, t), Some(BOB), None).await.0,
        200
    );
    let path = format!("/v1/cases/{code}/assign");
    let t = "/v1/cases/{code}/assign";
    let to_bob = Some(json!({"assignee": "bob"}));
    assert_eq!(
        call(s, doc, ("POST", &path, t), Some(ALICE), to_bob.clone())
            .await
            .0,
        200
    );
    assert_eq!(
        call(s, doc, ("POST", &path, t), Some(DAVE), to_bob).await.0,
        403
    );
    assert_eq!(
        call(s, doc, ("POST", &path, t), Some(ALICE), Some(json!({})))
            .await
            .0,
        400
    );
    let path = format!("/v1/cases/{code}/close");
    let t = "/v1/cases/{code}/close";
    assert_eq!(
        call(s, doc, ("POST", &path, t), Some(BOB), None).await.0,
        200
    );
    assert_eq!(
        call(s, doc, ("POST", &path, t), Some(BOB), None).await.0,
        409
    );
    let path = format!("/v1/cases/{code}");
    assert_eq!(
        call(s, doc, ("DELETE", &path, one), Some(CAROL), None)
            .await
            .0,
        404
    );
    assert_eq!(
        call(s, doc, ("DELETE", &path, one), Some(ALICE), None)
            .await
            .0,
        204
    );

    // The caller's company, and the customers' side.
    for path in ["/v1/agents", "/v1/groups"] {
        assert_eq!(
            call(s, doc, ("GET", path, path), Some(BOB), None).await.0,
            200
        );
    }
    let help = "/v1/help";
    let asked = Some(json!({"module": MODULE, "name": "Zoe", "via": "sos"}));
    assert_eq!(call(s, doc, ("POST", help, help), None, asked).await.0, 201);
    let unknown = Some(json!({"module": "no-such-key"}));
    assert_eq!(
        call(s, doc, ("POST", help, help), None, unknown).await.0,
        401
    );
    let not_email = Some(json!({"module": MODULE, "email": "zoe"}));
    assert_eq!(
        call(s, doc, ("POST", help, help), None, not_email).await.0,
        400
    );
    let t = "/v1/modules/{key}";
    let path = format!("/v1/modules/{MODULE}");
    assert_eq!(call(s, doc, ("GET", &path, t), None, None).await.0, 200);
    assert_eq!(
        call(s, doc, ("GET", "/v1/modules/nope", t), None, None)
            .await
            .0,
        404
    );
    assert_eq!(
        call(s, doc, ("GET", "/v1/ws", "/v1/ws"), None, None)
            .await
            .0,
        400
    );

    // The admin API.
    let agents = "/v1/admin/agents";
    assert_eq!(
        call(s, doc, ("GET", agents, agents), Some(ALICE), None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(s, doc, ("GET", agents, agents), Some(BOB), None)
            .await
            .0,
        403
    );
    let erin = json!({"id": "erin", "name": "Erin", "groups": ["support"], "max_cases": 3});
    assert_eq!(
        call(
            s,
            doc,
            ("POST", agents, agents),
            Some(ALICE),
            Some(erin.clone())
        )
        .await
        .0,
        201
    );
    assert_eq!(
        call(s, doc, ("POST", agents, agents), Some(ALICE), Some(erin))
            .await
            .0,
        409
    );
    let typo = json!({"id": "fred", "name": "Fred", "groups": ["support"], "admn": true});
    assert_eq!(
        call(s, doc, ("POST", agents, agents), Some(ALICE), Some(typo))
            .await
            .0,
        400
    );
    let t = "/v1/admin/agents/{id}";
    let change = Some(json!({"name": "Erin E.", "disabled": true}));
    assert_eq!(
        call(
            s,
            doc,
            ("PATCH", "/v1/admin/agents/erin", t),
            Some(ALICE),
            change
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(
            s,
            doc,
            ("PATCH", "/v1/admin/agents/bob", t),
            Some(ALICE),
            Some(json!({}))
        )
        .await
        .0,
        409
    );
    let t = "/v1/admin/agents/{id}/token";
    assert_eq!(
        call(
            s,
            doc,
            ("POST", "/v1/admin/agents/erin/token", t),
            Some(ALICE),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(
            s,
            doc,
            ("POST", "/v1/admin/agents/zed/token", t),
            Some(ALICE),
            None
        )
        .await
        .0,
        404
    );
    let t = "/v1/admin/agents/{id}";
    assert_eq!(
        call(
            s,
            doc,
            ("DELETE", "/v1/admin/agents/erin", t),
            Some(ALICE),
            None
        )
        .await
        .0,
        204
    );
    let groups = "/v1/admin/groups";
    let billing = Some(json!({"id": "billing", "name": "Billing"}));
    assert_eq!(
        call(s, doc, ("POST", groups, groups), Some(ALICE), billing)
            .await
            .0,
        201
    );
    assert_eq!(
        call(s, doc, ("GET", groups, groups), Some(ALICE), None)
            .await
            .0,
        200
    );
    let t = "/v1/admin/groups/{id}";
    let rename = Some(json!({"name": "Bills"}));
    assert_eq!(
        call(
            s,
            doc,
            ("PATCH", "/v1/admin/groups/billing", t),
            Some(ALICE),
            rename
        )
        .await
        .0,
        200
    );
    let modules = "/v1/admin/modules";
    let key = Some(json!({"key": "billing-qs", "group": "billing", "default_assignee": null}));
    assert_eq!(
        call(s, doc, ("POST", modules, modules), Some(ALICE), key)
            .await
            .0,
        201
    );
    assert_eq!(
        call(s, doc, ("GET", modules, modules), Some(ALICE), None)
            .await
            .0,
        200
    );
    let t = "/v1/admin/modules/{key}";
    let moved = Some(json!({"group": "support"}));
    assert_eq!(
        call(
            s,
            doc,
            ("PATCH", "/v1/admin/modules/billing-qs", t),
            Some(ALICE),
            moved
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(
            s,
            doc,
            ("DELETE", "/v1/admin/modules/billing-qs", t),
            Some(ALICE),
            None
        )
        .await
        .0,
        204
    );
    let t = "/v1/admin/groups/{id}";
    assert_eq!(
        call(
            s,
            doc,
            ("DELETE", "/v1/admin/groups/billing", t),
            Some(ALICE),
            None
        )
        .await
        .0,
        204
    );

    // The operator.
    let companies = "/v1/admin/companies";
    assert_eq!(
        call(s, doc, ("GET", companies, companies), Some(OPERATOR), None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(s, doc, ("GET", companies, companies), Some(ALICE), None)
            .await
            .0,
        403
    );
    assert_eq!(
        call(s, doc, ("GET", companies, companies), Some("nobody"), None)
            .await
            .0,
        401
    );
    let initech =
        json!({"id": "initech", "name": "Initech", "admin": {"id": "peter", "name": "Peter"}});
    assert_eq!(
        call(
            s,
            doc,
            ("POST", companies, companies),
            Some(OPERATOR),
            Some(initech)
        )
        .await
        .0,
        201
    );
    let t = "/v1/admin/companies/{id}";
    assert_eq!(
        call(
            s,
            doc,
            ("DELETE", "/v1/admin/companies/acme", t),
            Some(OPERATOR),
            None
        )
        .await
        .0,
        409
    );
    assert_eq!(
        call(
            s,
            doc,
            ("DELETE", "/v1/admin/companies/initech", t),
            Some(OPERATOR),
            None
        )
        .await
        .0,
        204
    );
}
