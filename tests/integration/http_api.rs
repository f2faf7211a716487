//! The HTTP API of PROTOCOL.md over a real socket: cases end to end, help
//! requests, listing and paging, visibility and isolation, error bodies,
//! transcripts, health and metrics, field limits.

#[path = "http_api/errors.rs"]
mod errors;
#[path = "http_api/help.rs"]
mod help;
#[path = "http_api/lifecycle.rs"]
mod lifecycle;
#[path = "http_api/listing.rs"]
mod listing;
#[path = "http_api/metrics.rs"]
mod metrics;
#[path = "http_api/transcript.rs"]
mod transcript;

use std::collections::HashSet;

use serde_json::Value;

use crate::util::*;

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

use crate::util::create_over_http as create;

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
