//! The browser pages: the agent dashboard at `/` and the customer help page
//! at `/help/{module_key}`, with their scripts and styles embedded in the
//! binary (`web/`), and the API's OpenAPI document (`proto/openapi.json`).
//! Every answer carries a strict Content-Security-Policy (no inline script,
//! connections to the broker only), `nosniff`, and an ETag so browsers
//! revalidate cheaply and never run a stale page after an upgrade.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::routes::Route;
use crate::app::App;

/// Scripts, styles and images only from the broker itself, and connections
/// (the pages' WebSocket and their HTTP API calls) to it alone: CSP Level 3
/// counts `ws:`/`wss:` to the page's own host and port as `'self'`, as the
/// browser test checks in Chromium. No plugins, frames, inline code or
/// foreign forms.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";
const JSON: &str = "application/json";

/// A file served as it was embedded.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// FNV-1a of the body, computed when the binary is built.
    hash: u64,
}

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

const fn asset(name: &'static str, content_type: &'static str, body: &'static [u8]) -> Asset {
    Asset {
        name,
        content_type,
        body,
        hash: fnv1a(body),
    }
}

const DASHBOARD: Asset = asset(
    "dashboard.html",
    HTML,
    include_bytes!("../../web/dashboard.html"),
);
const HELP: Asset = asset("help.html", HTML, include_bytes!("../../web/help.html"));
const NOT_FOUND: Asset = asset(
    "not-found.html",
    HTML,
    include_bytes!("../../web/not-found.html"),
);

/// `GET /v1/openapi.json`: the HTTP API as an OpenAPI 3.1 document.
const OPENAPI: Asset = asset(
    "openapi.json",
    JSON,
    include_bytes!("../../proto/openapi.json"),
);

/// What `/assets/{name}` serves.
const ASSETS: &[Asset] = &[
    asset("style.css", CSS, include_bytes!("../../web/style.css")),
    asset("dom.js", JS, include_bytes!("../../web/dom.js")),
    asset("socket.js", JS, include_bytes!("../../web/socket.js")),
    asset("alerts.js", JS, include_bytes!("../../web/alerts.js")),
    asset("queue.js", JS, include_bytes!("../../web/queue.js")),
    asset("casepanel.js", JS, include_bytes!("../../web/casepanel.js")),
    asset(
        "screenshare.js",
        JS,
        include_bytes!("../../web/screenshare.js"),
    ),
    asset("api.js", JS, include_bytes!("../../web/api.js")),
    asset("admin.js", JS, include_bytes!("../../web/admin.js")),
    asset("dashboard.js", JS, include_bytes!("../../web/dashboard.js")),
    asset("help.js", JS, include_bytes!("../../web/help.js")),
    asset("icon.svg", SVG, include_bytes!("../../web/icon.svg")),
];

/// The pages' routes, registered with the rest (`http::routes`), and the
/// OpenAPI document, an embedded file like them.
pub fn routes() -> Vec<Route> {
    vec![
        Route::get("/", |headers: HeaderMap| async move {
            serve(&DASHBOARD, &headers)
        }),
        Route::get("/help", not_found),
        Route::get("/help/", not_found),
        Route::get("/help/{module_key}", help),
        Route::get("/assets/{name}", asset_file),
        Route::get("/v1/openapi.json", |headers: HeaderMap| async move {
            serve(&OPENAPI, &headers)
        }),
    ]
}

/// The help page for a module key the broker knows; for any other key a
/// readable 404 page, so a mistyped link never shows a blank page.
async fn help(
    State(app): State<App>,
    module_key: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    // A key that does not even decode is unknown too. On a cluster node
    // the key may be one another node has just added (see
    // `App::module_shard`).
    let known = match module_key {
        Ok(Path(key)) => app.module_shard(&key).await.is_some(),
        Err(_) => false,
    };
    if known {
        serve(&HELP, &headers)
    } else {
        not_found().await
    }
}

async fn not_found() -> Response {
    let mut resp = (StatusCode::NOT_FOUND, NOT_FOUND.body).into_response();
    set_headers(resp.headers_mut(), NOT_FOUND.content_type);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn asset_file(name: Result<Path<String>, PathRejection>, headers: HeaderMap) -> Response {
    let name = name.map(|Path(name)| name).unwrap_or_default();
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => serve(a, &headers),
        None => {
            let mut resp = (StatusCode::NOT_FOUND, "no such file\n").into_response();
            set_headers(resp.headers_mut(), "text/plain; charset=utf-8");
            resp
        }
    }
}

/// The security headers every page and asset carries.
fn set_headers(h: &mut HeaderMap, content_type: &'static str) {
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// Answers with the asset, or 304 when the browser already holds this
/// version. `no-cache` makes browsers ask every time; the ETag keeps the
/// answer empty while the binary is the same.
fn serve(a: &Asset, request: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", a.hash);
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        });
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, a.body).into_response()
    };
    let h = resp.headers_mut();
    set_headers(h, a.content_type);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_load_no_inline_script() {
        for page in [&DASHBOARD, &HELP, &NOT_FOUND] {
            let text = std::str::from_utf8(page.body).unwrap();
            for tag in text.split("<script").skip(1) {
                let head = &tag[..tag.find('>').unwrap()];
                assert!(head.contains("src=\"/assets/"), "{}: {head}", page.name);
                assert!(tag[tag.find('>').unwrap() + 1..].starts_with("</script>"));
            }
            assert!(!text.contains(" style=\""), "{}", page.name);
            assert!(!text.contains(" onclick="), "{}", page.name);
        }
    }

    #[test]
    fn assets_differ_in_hash() {
        let mut hashes: Vec<u64> = ASSETS.iter().map(|a| a.hash).collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), ASSETS.len());
    }
}
