//! What the broker checks and tells: help over HTTP takes JSON from an
//! allowed origin only, a DNS-rebinding origin is not the broker's own, API
//! answers are not cached or sniffed and 405 says so, broken frames get the
//! close code that says why, a key given twice means its last value on both
//! paths, an email with markup or header breaks is refused, and a module
//! key tells its company's name and nothing for an unknown key.

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_over_http_takes_json_from_an_allowed_origin_only() {
    let server = TestServer::start().await;
    let url = server.url("/v1/help");
    let body = json!({"module": MODULE, "name": "Ana"}).to_string();
    let http = reqwest::Client::new();
    let send = |content_type: Option<&'static str>, origin: Option<String>| {
        let mut req = http.post(&url).body(body.clone()).timeout(WAIT);
        if let Some(t) = content_type {
            req = req.header("content-type", t);
        }
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    let r = send(Some("text/plain"), None).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "bad_request", "{v}");
    let r = send(None, None).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = send(Some("application/json"), Some("http://evil.example".into()))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "forbidden", "{v}");
    let r = send(
        Some("application/json; charset=utf-8"),
        Some(format!("http://{}", server.addr)),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 201, "the broker's own origin");
    let r = send(Some("application/json"), None).await.unwrap();
    assert_eq!(r.status().as_u16(), 201, "no origin: not a browser");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_rebinding_origin_is_not_the_brokers_own() {
    let server = TestServer::start().await;
    let port = server.addr.port();
    let upgrade = |host: String, origin: String| {
        let addr = server.addr;
        async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(
                format!(
                    "GET /v1/ws HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
            let mut head = [0u8; 12];
            let n = s.read(&mut head).await.unwrap();
            String::from_utf8_lossy(&head[..n]).into_owned()
        }
    };
    let evil = format!("evil.example:{port}");
    let got = upgrade(evil.clone(), format!("http://{evil}")).await;
    assert!(got.starts_with("HTTP/1.1 403"), "{got}");
    let own = format!("127.0.0.1:{port}");
    let got = upgrade(own.clone(), format!("http://{own}")).await;
    assert!(got.starts_with("HTTP/1.1 101"), "{got}");
    let local = format!("localhost:{port}");
    let got = upgrade(local.clone(), format!("http://{local}")).await;
    assert!(got.starts_with("HTTP/1.1 101"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_answers_are_not_cached_or_sniffed_and_405_says_so() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let r = http
        .get(server.url("/v1/cases"))
        .bearer_auth(ALICE)
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let r = http
        .put(server.url("/v1/help"))
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "method_not_allowed", "{v}");
}

/// A masked client frame: FIN, `first` (opcode and reserved bits), the
/// payload masked with a fixed key.
fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let key = [1u8, 2, 3, 4];
    let mut f = vec![first, (payload.len() as u8) | if masked { 0x80 } else { 0 }];
    if masked {
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// Opens a WebSocket by hand, says hello as a customer, sends `bad`; the
/// close code the broker answers with.
async fn close_code_for(server: &TestServer, bad: Vec<u8>) -> u16 {
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        format!(
            "GET /v1/ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    s.write_all(&frame(0x81, br#"{"type":"hello","role":"customer"}"#, true))
        .await
        .unwrap();
    s.write_all(&bad).await.unwrap();
    let answer = read_bytes(&mut s, WAIT).await;
    // The last frame is the close: 0x88, length, code.
    let at = answer
        .windows(2)
        .rposition(|w| w[0] == 0x88 && w[1] >= 2)
        .unwrap_or_else(|| panic!("no close frame in {:?}", String::from_utf8_lossy(&answer)));
    u16::from_be_bytes([answer[at + 2], answer[at + 3]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_frames_get_the_close_code_that_says_why() {
    let server = TestServer::start().await;
    assert_eq!(
        close_code_for(&server, frame(0x81, &[0xff, 0xfe, 0xfd], true)).await,
        1007,
        "text that is not UTF-8"
    );
    assert_eq!(
        close_code_for(&server, frame(0x81, b"{}", false)).await,
        1002,
        "an unmasked frame"
    );
    assert_eq!(
        close_code_for(&server, frame(0xC1, b"{}", true)).await,
        1002,
        "a reserved bit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_given_twice_means_its_last_value_on_both_paths() {
    let server = TestServer::start().await;
    let text = r#"{"group": "nope", "group": "support", "name": "Twice"}"#;
    let (st, case) = server
        .http_raw("POST", "/v1/cases", Some(ALICE), text)
        .await;
    assert_eq!(st, 201, "{case}");
    assert_eq!(case["group"], "support");
    let mut alice = server.agent(ALICE).await;
    alice
        .send_text(r#"{"type": "create_case", "group": "nope", "group": "support", "id": "t"}"#)
        .await;
    let reply = alice.wait_for("the reply", |m| m["id"] == "t").await;
    assert_eq!(reply["type"], "case", "{reply}");
    assert_eq!(reply["case"]["group"], "support");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_with_markup_or_header_breaks_is_refused() {
    let server = TestServer::start().await;
    for email in [
        "<script>@\r\nBcc: x",
        "ana@example.com\r\nBcc: x@y.z",
        "ana example@example.com",
        "ana@localhost",
        "@example.com",
        "ana@",
        "a@b@example.com",
    ] {
        let (st, body) = server
            .http(
                "POST",
                "/v1/cases",
                Some(ALICE),
                Some(json!({"group": "support", "customer": {"name": "Ana", "email": email}})),
            )
            .await;
        assert_eq!(st, 400, "{email:?}: {body}");
        assert_eq!(body["code"], "bad_request", "{email:?}: {body}");
    }
    let (st, _) = server
        .http(
            "POST",
            "/v1/cases",
            Some(ALICE),
            Some(json!({"group": "support", "customer": {"name": "Ana", "email": "ana.o'neil+help@example.co.uk"}})),
        )
        .await;
    assert_eq!(st, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_key_tells_its_company_name_and_nothing_for_an_unknown_key() {
    let server = TestServer::start().await;
    let (st, body) = server
        .http("GET", &format!("/v1/modules/{MODULE}"), None, None)
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        body,
        json!({"module": MODULE, "company": {"name": "ACME"}, "group": "support"})
    );
    let (st, body) = server
        .http("GET", &format!("/v1/modules/{GLOBEX_MODULE}"), None, None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(body["company"]["name"], "Globex");
    let (st, body) = server
        .http("GET", "/v1/modules/no-such-key", None, None)
        .await;
    assert_eq!(st, 404, "{body}");
    assert_eq!(body["code"], "not_found");
}
