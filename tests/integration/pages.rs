//! The browser pages over HTTP: content types, the Content-Security-Policy
//! and other headers, revalidation, a readable 404 page for an unknown
//! module key, and the origin rule that lets the pages connect: a WebSocket
//! from the broker's own origin is accepted, a foreign one still refused.

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::util::*;

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The headers every page and asset carries.
fn assert_secure(path: &str, h: &reqwest::header::HeaderMap) {
    let csp = header(h, "content-security-policy");
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "connect-src 'self';",
        "object-src 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(
            csp.contains(directive),
            "{path}: CSP {csp:?} lacks {directive}"
        );
    }
    assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
    assert!(!csp.contains("unsafe-eval"), "{path}: {csp}");
    assert_eq!(header(h, "x-content-type-options"), "nosniff", "{path}");
}

#[tokio::test]
async fn pages_and_assets_have_their_types_and_headers() {
    let server = TestServer::start().await;
    let module_page = format!("/help/{MODULE}");
    for (path, ty, marker) in [
        ("/", "text/html; charset=utf-8", "Agent token"),
        (
            module_page.as_str(),
            "text/html; charset=utf-8",
            "Describe the problem",
        ),
        (
            "/assets/dashboard.js",
            "text/javascript; charset=utf-8",
            "subscribe",
        ),
        (
            "/assets/help.js",
            "text/javascript; charset=utf-8",
            "request_help",
        ),
        (
            "/assets/socket.js",
            "text/javascript; charset=utf-8",
            "resume",
        ),
        (
            "/assets/dom.js",
            "text/javascript; charset=utf-8",
            "textContent",
        ),
        ("/assets/style.css", "text/css; charset=utf-8", "body"),
        ("/assets/icon.svg", "image/svg+xml", "<svg"),
    ] {
        let (status, h, body) = server.page(path, &[]).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(header(&h, "content-type"), ty, "{path}");
        assert_secure(path, &h);
        assert_eq!(header(&h, "cache-control"), "no-cache", "{path}");
        assert!(body.contains(marker), "{path} lacks {marker:?}");

        // The same version again: 304 and no body.
        let etag = header(&h, "etag").to_string();
        assert!(etag.starts_with('"'), "{path}: etag {etag:?}");
        let (status, h2, body) = server.page(path, &[("if-none-match", &etag)]).await;
        assert_eq!(status, 304, "{path}");
        assert!(body.is_empty(), "{path}");
        assert_eq!(header(&h2, "etag"), etag, "{path}");
        let (status, _, _) = server.page(path, &[("if-none-match", "\"other\"")]).await;
        assert_eq!(status, 200, "{path}");
    }

    // The pages load their scripts from files, never inline.
    for path in ["/", module_page.as_str()] {
        let (_, _, body) = server.page(path, &[]).await;
        for tag in body.split("<script").skip(1) {
            let head = &tag[..tag.find('>').unwrap()];
            assert!(
                head.contains("src=\"/assets/"),
                "{path}: inline script {head}"
            );
        }
    }

    let (status, h, _) = server.page("/assets/nope.js", &[]).await;
    assert_eq!(status, 404);
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    let (status, _, body) = server.page("/v1/nope", &[]).await;
    assert_eq!(status, 404, "the API's own 404 is unchanged");
    assert!(body.contains("not_found"), "{body}");
}

#[tokio::test]
async fn an_unknown_module_key_gets_a_readable_404_page() {
    let server = TestServer::start().await;
    for path in ["/help/no-such-module", "/help/", "/help"] {
        let (status, h, body) = server.page(path, &[]).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(
            header(&h, "content-type"),
            "text/html; charset=utf-8",
            "{path}"
        );
        assert_secure(path, &h);
        assert_eq!(header(&h, "cache-control"), "no-store", "{path}");
        assert!(
            body.contains("This help link is not valid"),
            "{path}: {body}"
        );
        assert!(!body.contains("no-such-module"), "the key is not echoed");
    }
    // Another company's key is known to the broker: its page is served.
    let (status, _, _) = server.page(&format!("/help/{GLOBEX_MODULE}"), &[]).await;
    assert_eq!(status, 200);
}

/// Opens a WebSocket with these headers; the HTTP status of a refusal, or
/// the welcome a customer hello gets.
async fn handshake(server: &TestServer, headers: &[(&str, String)]) -> Result<Value, u16> {
    let mut req = server.ws_url().into_client_request().unwrap();
    for (name, value) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let (mut ws, _) = match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("answer in time")
    {
        Ok(ok) => ok,
        Err(tungstenite::Error::Http(resp)) => return Err(resp.status().as_u16()),
        Err(e) => panic!("{headers:?}: {e}"),
    };
    ws.send(Message::text(r#"{"type":"hello","role":"customer"}"#))
        .await
        .unwrap();
    match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        Some(Ok(Message::Text(t))) => Ok(serde_json::from_str(&t).unwrap()),
        other => panic!("{headers:?}: {other:?}"),
    }
}

#[tokio::test]
async fn the_brokers_own_origin_may_open_a_websocket() {
    // The test broker listens on a random port, so its own origin is not in
    // `allowed_origins` (which names port 8080).
    let server = TestServer::start().await;
    let host = server.addr.to_string();
    for origin in [
        format!("http://{host}"),
        format!("HTTP://{host}"),
        format!("https://{host}"),
    ] {
        let welcome = handshake(&server, &[("origin", origin.clone())])
            .await
            .unwrap_or_else(|status| panic!("{origin}: refused with {status}"));
        assert_eq!(welcome["type"], "welcome", "{origin}");
    }
    // Named by another spelling of the same host.
    let port = server.addr.port();
    let welcome = handshake(
        &server,
        &[
            ("host", format!("localhost:{port}")),
            ("origin", format!("http://localhost:{port}")),
        ],
    )
    .await
    .expect("localhost is this broker when the browser says so");
    assert_eq!(welcome["type"], "welcome");

    // Anything that is not exactly the Host is still refused.
    for origin in [
        "http://evil.example".to_string(),
        format!("http://{host}.evil.example"),
        format!("http://evil.example/{host}"),
        format!("http://{host}/"),
        format!("ws://{host}"),
        format!("//{host}"),
        host.clone(),
        format!("http://{}:{}", server.addr.ip(), port + 1),
        "null".to_string(),
    ] {
        assert_eq!(
            handshake(&server, &[("origin", origin.clone())]).await,
            Err(403),
            "{origin}"
        );
    }
    // The broker's own origin with a Host naming another site: refused.
    assert_eq!(
        handshake(
            &server,
            &[
                ("host", "evil.example".to_string()),
                ("origin", format!("http://{host}")),
            ],
        )
        .await,
        Err(403)
    );
    // The configured origins still pass, and no Origin at all still does.
    let ok = handshake(&server, &[("origin", "http://localhost:8080".to_string())]).await;
    assert_eq!(ok.unwrap()["type"], "welcome");
    assert_eq!(handshake(&server, &[]).await.unwrap()["type"], "welcome");
}
