//! `GET /v1/openapi.json` kept true: the served document is OpenAPI 3.1
//! and every `$ref` in it resolves, and its operations are exactly the
//! routes the broker registers (`transport::http::routes`). Real answers
//! are held to it in `openapi_answers.rs`.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::util::*;

/// The methods an OpenAPI path item may hold.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The served document, checked to be `application/json`.
pub(crate) async fn document(server: &TestServer) -> Value {
    let resp = reqwest::get(server.url("/v1/openapi.json"))
        .await
        .expect("HTTP request");
    assert_eq!(resp.status().as_u16(), 200);
    let ty = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert_eq!(ty, "application/json");
    resp.json().await.expect("the document is JSON")
}

/// Every `"$ref"` string in `v`, with the JSON pointer where it sits.
fn refs(v: &Value, at: String, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref"
                    && let Some(r) = v.as_str()
                {
                    out.push((at.clone(), r.to_string()));
                }
                let key = k.replace('~', "~0").replace('/', "~1");
                refs(v, format!("{at}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Follows `$ref`s (all local) until a value that is not one.
pub(crate) fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        v = doc
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("{r} does not resolve"));
    }
    v
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_every_ref_resolves() {
    let server = TestServer::start().await;
    let doc = document(&server).await;
    let version = doc["openapi"].as_str().expect("an openapi field");
    assert!(version.starts_with("3.1."), "openapi: {version}");
    let mut found = Vec::new();
    refs(&doc, String::new(), &mut found);
    assert!(found.len() > 100, "only {} refs", found.len());
    for (at, r) in &found {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{at}: {r} is not a local reference"));
        assert!(doc.pointer(pointer).is_some(), "{at}: {r} does not resolve");
    }
    // Every error status names its codes (one, or the few a status
    // shares) in the shared error body.
    for (name, response) in doc["components"]["responses"].as_object().unwrap() {
        let schema = &response["content"]["application/json"]["schema"];
        assert_eq!(schema["allOf"][0]["$ref"], "#/components/schemas/Error");
        let code = &schema["allOf"][1]["properties"]["code"];
        let named: Vec<&serde_json::Value> = match code.get("const") {
            Some(one) => vec![one],
            None => code["enum"]
                .as_array()
                .expect("const or enum")
                .iter()
                .collect(),
        };
        let codes = &doc["components"]["schemas"]["ErrorCode"]["enum"];
        for code in named {
            assert!(codes.as_array().unwrap().contains(code), "{name}: {code}");
        }
    }
}

#[tokio::test]
async fn the_document_is_revalidated_by_its_etag() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    let first = client
        .get(server.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.headers()["cache-control"], "no-cache");
    let etag = first.headers()["etag"].clone();
    let again = client
        .get(server.url("/v1/openapi.json"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 304);
}

#[tokio::test]
async fn the_document_describes_exactly_the_routes_served() {
    let server = TestServer::start().await;
    let doc = document(&server).await;
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (key, _) in item.as_object().unwrap() {
            if METHODS.contains(&key.as_str()) {
                documented.insert((key.to_uppercase(), path.clone()));
            }
        }
    }
    // The test broker serves `/metrics` on its one listener.
    let served: BTreeSet<(String, String)> = casebroker::transport::http::routes(true)
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let not_served: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && not_served.is_empty(),
        "served but not in proto/openapi.json: {undocumented:?}; \
         in proto/openapi.json but not served: {not_served:?}"
    );
}
