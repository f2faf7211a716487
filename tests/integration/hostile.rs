//! Hostile clients on real loopback sockets: endless fragments, unmasked
//! frames, silent sockets, dashboards that never read, message floods, code
//! guessing, connection hogging, spoofed forwarding headers, help-request
//! floods, and shutdown with sockets open. The broker protects itself and
//! keeps serving everyone else.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::util::*;

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
const THIRD: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));

// Metrics -------------------------------------------------------------------

fn disconnects(reason: &str) -> String {
    format!("casebroker_disconnects_total{{reason=\"{reason}\"}}")
}

fn join_failures(reason: &str) -> String {
    format!("casebroker_join_failures_total{{reason=\"{reason}\"}}")
}

// A small JSON WebSocket client that can dial from any loopback address
// and carry extra request headers ------------------------------------------

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Conn {
    ws: Stream,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A TCP connection to `addr`, from `from` when given.
async fn tcp_from(addr: SocketAddr, from: Option<IpAddr>) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(ip) = from {
        socket
            .bind(SocketAddr::new(ip, 0))
            .expect("bind a loopback address");
    }
    timeout(WAIT, socket.connect(addr))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// A WebSocket handshake from `from` with extra headers; the handshake
/// error (an HTTP refusal) is returned as is.
async fn open(
    server: &TestServer,
    from: Option<IpAddr>,
    headers: &[(&'static str, &str)],
) -> Result<Conn, tungstenite::Error> {
    let mut req = server.ws_url().into_client_request().unwrap();
    for (name, v) in headers {
        req.headers_mut()
            .insert(*name, HeaderValue::from_str(v).unwrap());
    }
    let stream = tcp_from(server.addr, from).await;
    let (ws, _) = timeout(
        WAIT,
        tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)),
    )
    .await
    .expect("handshake answered in time")?;
    Ok(Conn { ws })
}

/// The HTTP status and JSON body (or `Null`) of a refused handshake.
fn refusal(attempt: Result<Conn, tungstenite::Error>) -> (u16, Value) {
    match attempt {
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            (resp.status().as_u16(), body)
        }
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("the WebSocket handshake was accepted"),
    }
}

/// A customer after `welcome`, from `from`, with extra headers.
async fn customer_from(
    server: &TestServer,
    from: Option<IpAddr>,
    headers: &[(&'static str, &str)],
) -> Conn {
    let mut c = open(server, from, headers)
        .await
        .unwrap_or_else(|e| panic!("handshake from {from:?} {headers:?}: {e}"));
    c.send(json!({"type": "hello", "role": "customer"})).await;
    let welcome = c.recv().await.expect("welcome");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    c
}

impl Conn {
    async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }

    /// Queues messages and writes them with one flush (errors ignored: the
    /// broker may close while they are on the way).
    async fn burst(&mut self, msgs: impl IntoIterator<Item = Value>) {
        for m in msgs {
            if self.ws.feed(Message::text(m.to_string())).await.is_err() {
                return;
            }
        }
        let _ = self.ws.flush().await;
    }

    /// The next JSON message, or `None` once the connection closed.
    async fn recv(&mut self) -> Option<Value> {
        loop {
            match timeout(WAIT, self.ws.next())
                .await
                .expect("a message or a close in time")
            {
                Some(Ok(Message::Text(t))) => {
                    return Some(serde_json::from_str(&t).expect("server sent JSON"));
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Sends `v` with a fresh `id` and returns the message echoing it.
    async fn request(&mut self, mut v: Value) -> Value {
        let id = format!("h{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
        v["id"] = json!(id);
        self.send(v.clone()).await;
        loop {
            match self.recv().await {
                Some(m) if m["id"] == id.as_str() => return m,
                Some(_) => continue,
                None => panic!("connection closed while waiting for the reply to {v}"),
            }
        }
    }

    /// Reads until the connection ends; the close code (None: no close
    /// frame) and the messages before it.
    async fn closed(&mut self) -> (Option<u16>, Vec<Value>) {
        let mut seen = Vec::new();
        loop {
            match timeout(WAIT, self.ws.next())
                .await
                .expect("the connection closes in time")
            {
                Some(Ok(Message::Text(t))) => {
                    seen.push(serde_json::from_str(&t).expect("server sent JSON"))
                }
                Some(Ok(Message::Close(frame))) => {
                    return (Some(frame.map(|f| u16::from(f.code)).unwrap_or(1005)), seen);
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return (None, seen),
            }
        }
    }
}

/// `not_found`, `rate_limited`, ... for an error; the type otherwise.
fn outcome(reply: &Value) -> String {
    if reply["type"] == "error" {
        reply["code"].as_str().unwrap_or("?").to_string()
    } else {
        reply["type"].as_str().unwrap_or("?").to_string()
    }
}

static GUESS: AtomicU64 = AtomicU64::new(1);

/// A well-formed session code that is not `real`.
fn guess(real: &str) -> String {
    let digits = |c: &str| c.chars().filter(char::is_ascii_digit).collect::<String>();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    loop {
        let n = GUESS.fetch_add(1, Ordering::Relaxed);
        let x = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(seed) % 100_000_000;
        let d = format!("{x:08}");
        if d != digits(real) {
            return format!("s{}-{}-{}", &d[..2], &d[2..5], &d[5..]);
        }
    }
}

/// Joins unknown codes on `c` until one is answered `rate_limited` (at
/// most 10 tries); returns the answers.
async fn guess_until_limited(c: &mut Conn, real: &str) -> Vec<String> {
    let mut answers = Vec::new();
    for _ in 0..10 {
        let a = outcome(
            &c.request(json!({"type": "join", "code": guess(real)}))
                .await,
        );
        answers.push(a.clone());
        if a == "rate_limited" {
            return answers;
        }
        assert_eq!(a, "not_found", "answers so far: {answers:?}");
    }
    panic!("10 wrong guesses and never rate_limited: {answers:?}");
}

async fn real_code(server: &TestServer) -> (WsClient, String) {
    let mut alice = server.agent(ALICE).await;
    let case = create_case(&mut alice, "support").await;
    let code = case["code"].as_str().unwrap().to_string();
    (alice, code)
}

// A WebSocket client written by hand on a raw TCP stream ---------------------

const HANDSHAKE: &str = "GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;

/// One final client frame, masked or (against RFC 6455) not.
fn client_frame(opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(bit | n as u8),
        n if n <= 0xffff => {
            out.push(bit | 126);
            out.extend((n as u16).to_be_bytes());
        }
        n => {
            out.push(bit | 127);
            out.extend((n as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend(MASK);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    } else {
        out.extend(payload);
    }
    out
}

struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// Handshakes on a fresh TCP connection (with a small receive buffer
    /// when asked) and expects 101.
    async fn connect(addr: SocketAddr, recv_buffer: Option<u32>) -> RawWs {
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(n) = recv_buffer {
            socket.set_recv_buffer_size(n).unwrap();
        }
        let mut stream = timeout(WAIT, socket.connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        stream.write_all(HANDSHAKE.as_bytes()).await.unwrap();
        let mut raw = RawWs {
            stream,
            buf: Vec::new(),
        };
        let head = loop {
            if let Some(end) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = raw.buf.drain(..end + 4).collect();
                break String::from_utf8_lossy(&head).into_owned();
            }
            assert!(raw.fill().await, "EOF inside the handshake response");
        };
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        raw
    }

    /// Reads more bytes; false at EOF (or a reset).
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("neither data nor EOF within {WAIT:?}"))
        {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    async fn need(&mut self, n: usize) -> bool {
        while self.buf.len() < n {
            if !self.fill().await {
                return false;
            }
        }
        true
    }

    /// The next server frame (opcode, payload); `None` at EOF.
    async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        if !self.need(2).await {
            return None;
        }
        let opcode = self.buf[0] & 0x0f;
        assert_eq!(self.buf[1] & 0x80, 0, "a server frame is never masked");
        let (len, head) = match self.buf[1] & 0x7f {
            126 => {
                if !self.need(4).await {
                    return None;
                }
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                if !self.need(10).await {
                    return None;
                }
                let n = u64::from_be_bytes(self.buf[2..10].try_into().unwrap());
                (n as usize, 10)
            }
            n => (n as usize, 2),
        };
        if !self.need(head + len).await {
            return None;
        }
        let payload = self.buf[head..head + len].to_vec();
        self.buf.drain(..head + len);
        Some((opcode, payload))
    }

    /// The next JSON text message (control frames skipped); `None` at a
    /// close frame or EOF.
    async fn text(&mut self) -> Option<Value> {
        loop {
            match self.frame().await? {
                (OP_TEXT, p) => return Some(serde_json::from_slice(&p).expect("JSON")),
                (OP_CLOSE, _) => return None,
                _ => continue,
            }
        }
    }

    async fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// A masked text frame of `v`.
    async fn send_json(&mut self, v: Value) {
        let frame = client_frame(OP_TEXT, v.to_string().as_bytes(), true);
        self.send_bytes(&frame).await.expect("send");
    }

    /// Every frame until EOF.
    async fn drain(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while let Some(f) = self.frame().await {
            frames.push(f);
        }
        frames
    }
}

fn texts(frames: &[(u8, Vec<u8>)]) -> Vec<Value> {
    frames
        .iter()
        .filter(|(op, _)| *op == OP_TEXT)
        .map(|(_, p)| serde_json::from_slice(p).expect("JSON"))
        .collect()
}

/// One HTTP/1.1 request with `Connection: close` on a fresh TCP
/// connection; the status and the body.
async fn raw_http(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tcp_from(addr, None).await;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("the response ends in time")
        .expect("read the response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head}"));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

// 1. Endless fragments ---------------------------------------------------------

#[tokio::test]
async fn an_endlessly_fragmented_message_closes_with_1009() {
    let server = TestServer::start().await;
    let mut ws = server.customer().await;
    // A text message that never ends: 1,000 bytes of a chat, then
    // continuation frames of 1,000 bytes, never FIN, until the total passes
    // 64 KiB (66 frames, 66,000 bytes).
    let head = format!(r#"{{"type":"chat","text":"{}"#, "a".repeat(1000 - 23));
    assert_eq!(head.len(), 1000);
    ws.send_raw(Message::Frame(Frame::message(
        head.into_bytes(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await;
    for _ in 0..65 {
        ws.send_raw(Message::Frame(Frame::message(
            vec![b'a'; 1000],
            OpCode::Data(Data::Continue),
            false,
        )))
        .await;
    }
    let (how, seen) = ws.closed().await;
    assert_eq!(
        how,
        Closed::Code(1009),
        "messages before the close: {seen:?}"
    );
    wait_metric(&server, &disconnects("too_large"), ">= 1", |v| v >= 1.0).await;

    // The broker stays up.
    let mut other = server.customer().await;
    other.sync().await;
    let (status, _) = server.http("GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
}

// 2. Unmasked frames ---------------------------------------------------------

#[tokio::test]
async fn unmasked_client_frames_are_refused() {
    let server = TestServer::start().await;
    let hello = json!({"type": "hello", "role": "customer"}).to_string();

    // The hand-made client is right when it masks: welcome, then pong.
    let mut good = RawWs::connect(server.addr, None).await;
    good.send_bytes(&client_frame(OP_TEXT, hello.as_bytes(), true))
        .await
        .unwrap();
    assert_eq!(good.text().await.expect("welcome")["type"], "welcome");

    // An unmasked hello: the connection is closed, no welcome.
    let mut bad = RawWs::connect(server.addr, None).await;
    let _ = bad
        .send_bytes(&client_frame(OP_TEXT, hello.as_bytes(), false))
        .await;
    let frames = bad.drain().await;
    assert!(
        texts(&frames).is_empty(),
        "an unmasked hello was answered: {:?}",
        texts(&frames)
    );

    // An unmasked frame after a proper hello: closed, no pong.
    good.send_json(json!({"type": "ping", "id": "masked"}))
        .await;
    assert_eq!(good.text().await.expect("pong")["type"], "pong");
    let ping = json!({"type": "ping", "id": "unmasked"}).to_string();
    let _ = good
        .send_bytes(&client_frame(OP_TEXT, ping.as_bytes(), false))
        .await;
    let frames = good.drain().await;
    assert!(
        texts(&frames).iter().all(|m| m["type"] != "pong"),
        "an unmasked ping was answered: {:?}",
        texts(&frames)
    );

    // The broker stays up.
    let mut other = server.customer().await;
    other.sync().await;
}

// 3. Silent sockets -----------------------------------------------------------

#[tokio::test]
async fn a_socket_that_never_sends_its_request_head_is_closed() {
    let server = TestServer::with_config(config_with("handshake_timeout = \"300ms\"")).await;

    // Nothing at all, and half a request head (slowloris).
    for sent in ["", "GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\n"] {
        let mut s = tcp_from(server.addr, None).await;
        s.write_all(sent.as_bytes()).await.unwrap();
        let started = Instant::now();
        let mut got = Vec::new();
        timeout(Duration::from_secs(10), async {
            let mut chunk = [0u8; 1024];
            loop {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{sent:?}: still open after 10 s"));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200),
            "{sent:?}: closed after {took:?}, before the 300 ms deadline"
        );
        let got = String::from_utf8_lossy(&got);
        assert!(!got.contains(" 101 "), "{sent:?}: upgraded: {got}");
    }

    // The broker stays up.
    let mut other = server.customer().await;
    other.sync().await;
}

#[tokio::test]
async fn a_websocket_that_answers_no_pings_is_dropped_and_leaves_its_seat() {
    let server = TestServer::with_config(config_with(
        "ping_interval = \"200ms\"\npong_timeout = \"200ms\"",
    ))
    .await;
    let mut alice = server.agent(ALICE).await;
    let case = alice
        .ok(
            json!({"type": "create_case", "group": "support", "name": "Silent", "assignee": "alice"}),
            "case",
        )
        .await;
    let code = case["case"]["code"].as_str().unwrap().to_string();
    alice
        .ok(json!({"type": "join", "code": code}), "joined")
        .await;

    // A customer that joins and then neither reads nor writes again.
    let mut silent = RawWs::connect(server.addr, None).await;
    silent
        .send_json(json!({"type": "hello", "role": "customer"}))
        .await;
    silent
        .send_json(json!({"type": "join", "code": code}))
        .await;
    alice
        .wait_for("customer_connected true", |m| {
            m["type"] == "status" && m["customer_connected"] == true
        })
        .await;

    // Alice keeps answering pings (the client replies while polled); the
    // silent one does not and loses its seat.
    let status = alice
        .wait_for("customer_connected false", |m| {
            m["type"] == "status" && m["customer_connected"] == false
        })
        .await;
    assert_eq!(status["code"], code.as_str(), "{status}");
    // Alice, who answers, is still served. (She is not polled from here
    // on, so she may be dropped in turn: nothing below depends on her.)
    alice.sync().await;
    wait_metric(&server, &disconnects("pong_timeout"), ">= 1", |v| v >= 1.0).await;
    // Its socket really is closed: what was sent to it, then EOF.
    let frames = silent.drain().await;
    assert!(
        texts(&frames).iter().any(|m| m["type"] == "joined"),
        "{:?}",
        texts(&frames)
    );
    let (_, case) = server
        .http("GET", &format!("/v1/cases/{code}"), Some(ALICE), None)
        .await;
    assert_eq!(case["customer_connected"], false, "{case}");
}

// 4. A dashboard that never reads ---------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dashboard_that_never_reads_is_dropped_and_memory_stays_bounded() {
    const EVENTS: usize = 5000;
    const BATCH: usize = 5;
    const SLOW: usize = 10;
    // 64 KiB of outbox: about 18 of these events. The producer waits for
    // the fast dashboard to read each batch before the next (below), so the
    // fast one is never more than a batch behind, however the threads are
    // scheduled; the slow ones fall behind without bound and are cut off.
    let server = TestServer::with_config(config_with(&format!(
        "{UNLIMITED}\noutbox_messages = 256\noutbox_bytes = 65536"
    )))
    .await;
    let mut producer = server.agent(ALICE).await;
    let mut fast = server.agent(DAVE).await;
    fast.ok(json!({"type": "subscribe"}), "snapshot").await;

    // The slow one: a small receive buffer, subscribed, then never reads.
    // Ten of them: an outbox that did not bound them would hold the whole
    // flood for each, 170 MB in all.
    let mut slows = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        let mut slow = RawWs::connect(server.addr, Some(4096)).await;
        slow.send_json(json!({"type": "hello", "role": "agent", "token": BOB}))
            .await;
        slow.send_json(json!({"type": "subscribe", "id": "s"}))
            .await;
        loop {
            let m = slow.text().await.expect("snapshot for the slow dashboard");
            if m["type"] == "snapshot" {
                break;
            }
        }
        slows.push(slow);
    }

    // The fast one reads every event as it comes, and says how far it is.
    let (read, mut progress) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let mut seen = Vec::with_capacity(EVENTS);
        while seen.len() < EVENTS {
            let e = fast.wait_type("event").await;
            assert_eq!(e["action"], "created", "{e}");
            seen.push((
                e["seq"].as_u64().expect("seq"),
                e["case"]["name"].as_str().unwrap_or_default().to_string(),
            ));
            read.send_replace(seen.len());
        }
        (fast, seen)
    });

    let before = value(&scrape(&server).await, "process_resident_memory_bytes");
    // Events of about 3.5 KB: 17 MB in all, far more than the kernel's
    // socket buffers can hide.
    let description = "d".repeat(3000);
    for batch in 0..EVENTS / BATCH {
        for i in batch * BATCH..(batch + 1) * BATCH {
            let name = format!("flood {i:05}");
            let create = json!({"type": "create_case", "group": "support",
                                "name": name, "description": description});
            producer.send(create).await;
        }
        producer.sync().await;
        let replies: Vec<_> = producer.pending().iter().cloned().collect();
        assert!(
            replies.len() == BATCH && replies.iter().all(|m| m["type"] == "case"),
            "batch {batch}: {replies:?}"
        );
        producer.clear();
        let sent = (batch + 1) * BATCH;
        timeout(WAIT, progress.wait_for(|&n| n >= sent))
            .await
            .unwrap_or_else(|_| panic!("the fast dashboard did not read batch {batch}"))
            .expect("the reader is running");
    }

    let (mut fast, seen) = timeout(Duration::from_secs(60), reader)
        .await
        .expect("the fast dashboard got every event")
        .expect("the reader did not panic");
    for (i, (seq, name)) in seen.iter().enumerate() {
        assert_eq!(name, &format!("flood {i:05}"), "event {i} out of order");
        if i > 0 {
            assert_eq!(*seq, seen[i - 1].0 + 1, "seq after event {}", i - 1);
        }
    }
    fast.sync().await;

    // The slow one is disconnected as a slow consumer and its socket ends:
    // its queue overflows while its task waits on a write the socket cannot
    // take, and the overflow ends the connection at once (not the write's
    // `write_timeout`).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(&server).await;
        if value(&text, &disconnects("slow")) >= SLOW as f64 {
            assert_eq!(value(&text, &disconnects("write_timeout")), 0.0, "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow dashboards were not all disconnected:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for slow in &mut slows {
        let frames = slow.drain().await;
        let got = texts(&frames)
            .iter()
            .filter(|m| m["type"] == "event")
            .count();
        assert!(
            got < EVENTS,
            "a slow dashboard got all {got} events: it was not cut off"
        );
    }

    // Memory stayed bounded. The growth is measured, not the total, which
    // other tests of the same process also use: about 50 MB for the cases
    // the broker keeps (5,000 descriptions of 3 KB), the fast dashboard's
    // copies in this process and the allocator's slack, and at most
    // 256 KiB of outbox per slow dashboard; without that bound the ten
    // would add some 170 MB.
    let text = scrape(&server).await;
    let rss = value(&text, "process_resident_memory_bytes");
    assert!(rss > 0.0 && before > 0.0, "{text}");
    let grown = (rss - before) / (1024.0 * 1024.0);
    println!("resident memory grew by {grown:.1} MB during the flood");
    assert!(
        grown < 100.0,
        "resident memory grew by {grown:.1} MB during a 17 MB flood"
    );
}

// 5. Message flood ---------------------------------------------------------------

#[tokio::test]
async fn a_message_flood_is_rate_limited_then_closed_with_4002() {
    let server =
        TestServer::with_config(config_with("messages_per_second = 5\nmessage_burst = 5")).await;
    let mut bystander = server.customer().await;
    let mut flooder = customer_from(&server, None, &[]).await;

    // Ten pings at once: the burst passes, the rest is refused, and every
    // answer echoes its id, in order.
    flooder
        .burst((0..10).map(|i| json!({"type": "ping", "id": format!("p{i}")})))
        .await;
    let mut answers = Vec::new();
    for _ in 0..10 {
        let m = flooder.recv().await.expect("an answer to each ping");
        answers.push((m["id"].as_str().unwrap_or("").to_string(), outcome(&m)));
    }
    let ids: Vec<_> = answers.iter().map(|(id, _)| id.clone()).collect();
    let want: Vec<_> = (0..10).map(|i| format!("p{i}")).collect();
    assert_eq!(ids, want, "{answers:?}");
    let pongs = answers.iter().filter(|(_, o)| o == "pong").count();
    let limited = answers.iter().filter(|(_, o)| o == "rate_limited").count();
    assert_eq!(pongs + limited, 10, "{answers:?}");
    assert!(pongs >= 5, "the burst of 5 passes: {answers:?}");
    assert!(limited >= 1, "some are refused: {answers:?}");
    assert!(answers[..5].iter().all(|(_, o)| o == "pong"), "{answers:?}");

    // Keeping on: closed with 4002.
    flooder
        .burst((0..100).map(|i| json!({"type": "ping", "id": i})))
        .await;
    let (how, seen) = flooder.closed().await;
    assert_eq!(how, Some(4002), "messages before the close: {seen:?}");
    assert!(
        seen.iter().any(|m| outcome(m) == "rate_limited"),
        "{seen:?}"
    );

    // Others are unaffected.
    bystander.sync().await;
    let mut newcomer = server.customer().await;
    newcomer.sync().await;
    wait_metric(&server, &disconnects("rate_limited"), ">= 1", |v| v >= 1.0).await;
}

// 6. Code guessing ------------------------------------------------------------------

#[tokio::test]
async fn code_guesses_past_the_quota_are_answered_rate_limited() {
    let server = TestServer::with_config(config_with("failed_joins_per_minute = 3")).await;
    let (_alice, real) = real_code(&server).await;
    let mut guesser = customer_from(&server, None, &[]).await;
    let mut answers = Vec::new();
    for _ in 0..4 {
        let reply = guesser
            .request(json!({"type": "join", "code": guess(&real)}))
            .await;
        answers.push(outcome(&reply));
    }
    assert_eq!(
        answers,
        ["not_found", "not_found", "not_found", "rate_limited"],
        "failed_joins_per_minute = 3: three wrong guesses are answered, the fourth is not"
    );
}

#[tokio::test]
async fn a_guessing_address_learns_nothing_while_another_address_joins() {
    let server = TestServer::with_config(config_with("failed_joins_per_minute = 3")).await;
    let (_alice, real) = real_code(&server).await;
    let before = scrape(&server).await;
    let not_found0 = value(&before, &join_failures("not_found"));
    let limited0 = value(&before, &join_failures("rate_limited"));

    let mut guesser = customer_from(&server, Some(LOCAL), &[]).await;
    let answers = guess_until_limited(&mut guesser, &real).await;
    assert!(answers.len() >= 4, "three guesses pass first: {answers:?}");

    // The real code is refused alike, on this and on a new connection
    // from the same address.
    let reply = guesser.request(json!({"type": "join", "code": real})).await;
    assert_eq!(outcome(&reply), "rate_limited", "{reply}");
    let mut again = customer_from(&server, Some(LOCAL), &[]).await;
    let reply = again.request(json!({"type": "join", "code": real})).await;
    assert_eq!(outcome(&reply), "rate_limited", "{reply}");

    // A customer from another address joins the real code.
    let mut honest = customer_from(&server, Some(OTHER), &[]).await;
    let joined = honest
        .request(json!({"type": "join", "code": real, "name": "Ana"}))
        .await;
    assert_eq!(joined["type"], "joined", "{joined}");
    assert_eq!(joined["code"], real.as_str());

    let after = scrape(&server).await;
    assert!(
        value(&after, &join_failures("not_found")) >= not_found0 + 3.0,
        "{after}"
    );
    assert!(
        value(&after, &join_failures("rate_limited")) >= limited0 + 3.0,
        "{after}"
    );
}

// 7. Alarm ----------------------------------------------------------------------------

#[tokio::test]
async fn failed_joins_over_the_alarm_threshold_raise_the_alarm() {
    const ALARM: &str = "casebroker_join_failure_alarm";
    let server = TestServer::with_config(config_with("failed_join_alarm_per_minute = 2")).await;
    let (_alice, real) = real_code(&server).await;
    assert_eq!(value(&scrape(&server).await, ALARM), 0.0);
    let mut guesser = customer_from(&server, None, &[]).await;
    for i in 0..3 {
        let reply = guesser
            .request(json!({"type": "join", "code": guess(&real)}))
            .await;
        assert_eq!(outcome(&reply), "not_found", "guess {i}: {reply}");
        if i == 1 {
            // Two failures are not over a threshold of two.
            assert_eq!(value(&scrape(&server).await, ALARM), 0.0);
        }
    }
    wait_metric(&server, ALARM, "1", |v| v == 1.0).await;
}

// 8. Connections per address -----------------------------------------------------------

#[tokio::test]
async fn connections_per_address_are_capped_with_429() {
    let server = TestServer::with_config(config_with("max_connections_per_ip = 2")).await;
    let mut first = server.customer().await;
    let mut second = server.customer().await;

    let (status, body) = refusal(open(&server, Some(LOCAL), &[]).await);
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "rate_limited", "{body}");

    // Another address is not affected.
    let mut other = customer_from(&server, Some(OTHER), &[]).await;
    other.request(json!({"type": "ping"})).await;
    first.sync().await;
    second.sync().await;

    // Closing one frees a slot.
    first.close().await;
    let deadline = Instant::now() + WAIT;
    let mut third = loop {
        match open(&server, Some(LOCAL), &[]).await {
            Ok(c) => break c,
            Err(tungstenite::Error::Http(resp)) if resp.status().as_u16() == 429 => {
                assert!(Instant::now() < deadline, "the slot was never freed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("unexpected handshake error {e}"),
        }
    };
    third
        .send(json!({"type": "hello", "role": "customer"}))
        .await;
    assert_eq!(third.recv().await.expect("welcome")["type"], "welcome");
    // Every HTTP connection counts for its address: LOCAL has none left,
    // so the metrics are read from the other one.
    let from_other = reqwest::Client::builder()
        .local_address(OTHER)
        .build()
        .unwrap();
    let text = scrape_with(&from_other, &server.url("/metrics")).await;
    assert!(
        value(
            &text,
            "casebroker_connections_refused_total{reason=\"per_ip\"}"
        ) >= 1.0,
        "{text}"
    );
}

// 9. Capacity ------------------------------------------------------------------------------

#[tokio::test]
async fn past_max_connections_new_connections_get_503() {
    let server = TestServer::with_config(config_with("max_connections = 2")).await;
    let mut alice = server.agent(ALICE).await;
    let mut bob = server.agent(BOB).await;
    bob.ok(json!({"type": "subscribe"}), "snapshot").await;

    let (status, body) = raw_http(server.addr, "/healthz").await;
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON: {body}"));
    assert_eq!(body["code"], "unavailable", "{body}");
    assert!(body["message"].is_string(), "{body}");
    let (status, _) = refusal(open(&server, None, &[]).await);
    assert_eq!(status, 503);

    // The first two are served as before.
    let case = create_case(&mut alice, "support").await;
    let event = bob.wait_type("event").await;
    assert_eq!(event["case"]["code"], case["code"], "{event}");
    alice.sync().await;
    bob.sync().await;

    // A slot given back is served again.
    alice.close().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = raw_http(server.addr, "/healthz").await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, text) = raw_http(server.addr, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    assert!(
        value(
            &text,
            "casebroker_connections_refused_total{reason=\"capacity\"}"
        ) >= 2.0,
        "{text}"
    );
    bob.sync().await;
}

// 10. Behind a proxy ----------------------------------------------------------------------

#[tokio::test]
async fn behind_a_trusted_proxy_guesses_count_per_forwarded_address() {
    let server = TestServer::with_config(config_with(
        "trusted_proxies = [\"127.0.0.1\"]\nfailed_joins_per_minute = 2",
    ))
    .await;
    let (_alice, real) = real_code(&server).await;
    let xff = |ip: &'static str| [("x-forwarded-for", ip)];

    let mut guesser = customer_from(&server, None, &xff("203.0.113.9")).await;
    guess_until_limited(&mut guesser, &real).await;

    // The same forwarded address on another connection is limited...
    let mut again = customer_from(&server, None, &xff("203.0.113.9")).await;
    let reply = again
        .request(json!({"type": "join", "code": guess(&real)}))
        .await;
    assert_eq!(outcome(&reply), "rate_limited", "{reply}");
    // ...another forwarded address is not, nor the proxy itself.
    let mut neighbour = customer_from(&server, None, &xff("203.0.113.10")).await;
    let reply = neighbour
        .request(json!({"type": "join", "code": guess(&real)}))
        .await;
    assert_eq!(outcome(&reply), "not_found", "{reply}");
    let mut direct = customer_from(&server, None, &[]).await;
    let reply = direct
        .request(json!({"type": "join", "code": guess(&real)}))
        .await;
    assert_eq!(outcome(&reply), "not_found", "{reply}");
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let server = TestServer::with_config(config_with("failed_joins_per_minute = 2")).await;
    let (_alice, real) = real_code(&server).await;

    let mut guesser = customer_from(&server, None, &[("x-forwarded-for", "203.0.113.9")]).await;
    guess_until_limited(&mut guesser, &real).await;

    // A made-up address in the header does not escape the limit of
    // 127.0.0.1...
    let mut spoofer = customer_from(&server, None, &[("x-forwarded-for", "203.0.113.10")]).await;
    let reply = spoofer
        .request(json!({"type": "join", "code": guess(&real)}))
        .await;
    assert_eq!(outcome(&reply), "rate_limited", "{reply}");
    // ...while a really different address is not limited.
    let mut other = customer_from(&server, Some(OTHER), &[]).await;
    let reply = other
        .request(json!({"type": "join", "code": guess(&real)}))
        .await;
    assert_eq!(outcome(&reply), "not_found", "{reply}");
}

// 11. Help requests -------------------------------------------------------------------------

async fn help_http(server: &TestServer, from: IpAddr, module: &str) -> (u16, Value) {
    let client = reqwest::Client::builder()
        .local_address(from)
        .build()
        .unwrap();
    let resp = client
        .post(server.url("/v1/help"))
        .timeout(WAIT)
        .header("content-type", "application/json")
        .body(json!({"module": module, "name": "Ana"}).to_string())
        .send()
        .await
        .expect("POST /v1/help");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn help_ws(server: &TestServer, from: IpAddr, module: &str) -> Value {
    let mut c = customer_from(server, Some(from), &[]).await;
    c.request(json!({"type": "request_help", "module": module, "name": "Ana"}))
        .await
}

#[tokio::test]
async fn help_requests_are_limited_per_address() {
    let server = TestServer::with_config(config_with("help_per_ip_per_minute = 2")).await;

    // Over HTTP, then WebSocket, from 127.0.0.1: two pass.
    for _ in 0..2 {
        let (status, body) = help_http(&server, LOCAL, MODULE).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = help_http(&server, LOCAL, MODULE).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "rate_limited", "{body}");
    let reply = help_ws(&server, LOCAL, MODULE).await;
    assert_eq!(outcome(&reply), "rate_limited", "{reply}");

    // Over WebSocket, then HTTP, from 127.0.0.2: its own two.
    for _ in 0..2 {
        let reply = help_ws(&server, OTHER, MODULE).await;
        assert_eq!(reply["type"], "joined", "{reply}");
    }
    let reply = help_ws(&server, OTHER, MODULE).await;
    assert_eq!(outcome(&reply), "rate_limited", "{reply}");
    let (status, body) = help_http(&server, OTHER, MODULE).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "rate_limited", "{body}");

    // Only the four that passed made cases.
    let (_, list) = server.http("GET", "/v1/cases", Some(ALICE), None).await;
    assert_eq!(list["cases"].as_array().unwrap().len(), 4, "{list}");
}

#[tokio::test]
async fn help_requests_are_limited_per_module() {
    let server = TestServer::with_config(config_with("help_per_module_per_minute = 2")).await;
    let (status, body) = help_http(&server, LOCAL, MODULE).await;
    assert_eq!(status, 201, "{body}");
    let reply = help_ws(&server, OTHER, MODULE).await;
    assert_eq!(reply["type"], "joined", "{reply}");

    // A third address still gets its fair share of the spent module (the
    // others cannot lock it out)...
    for _ in 0..casebroker::transport::guard::HELP_FAIR_SHARE {
        let reply = help_ws(&server, THIRD, MODULE).await;
        assert_eq!(reply["type"], "joined", "{reply}");
    }
    // ...and nothing more.
    let reply = help_ws(&server, THIRD, MODULE).await;
    assert_eq!(outcome(&reply), "rate_limited", "{reply}");
    let (status, body) = help_http(&server, THIRD, MODULE).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "rate_limited", "{body}");
    // ...but may use another module.
    let reply = help_ws(&server, THIRD, MODULE_SALES).await;
    assert_eq!(reply["type"], "joined", "{reply}");
}

// 12. Graceful shutdown ----------------------------------------------------------------------

#[tokio::test]
async fn shutdown_closes_every_socket_with_4000_within_the_grace() {
    let grace = Duration::from_secs(2);
    let server = TestServer::with_config(config_with("shutdown_grace = \"2s\"")).await;
    let (mut customer, joined) = request_help(&server, MODULE).await;
    let code = joined["code"].as_str().unwrap().to_string();
    let mut alice = server.agent(ALICE).await;
    alice.ok(json!({"type": "subscribe"}), "snapshot").await;
    alice
        .ok(json!({"type": "join", "code": code}), "joined")
        .await;
    let mut silent = server.ws().await; // never says hello

    timeout(grace + Duration::from_secs(1), server.shutdown())
        .await
        .expect("run returns within the grace period");
    assert_eq!(alice.closed().await.0, Closed::Code(4000));
    assert_eq!(customer.closed().await.0, Closed::Code(4000));
    assert_eq!(silent.closed().await.0, Closed::Code(4000));
}

/// Kills the child if the test ends while it still runs.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test]
async fn sigterm_closes_sockets_with_4000_and_exits_0() {
    let path = std::env::temp_dir().join(format!(
        "casebroker-hostile-{}-{}.toml",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(
        &path,
        format!(
            "shutdown_grace = \"2s\"\nin_memory = true\n\n[[companies]]\nid = \"acme\"\ngroups = [{{ id = \"support\" }}]\n\n[[companies.agents]]\nid = \"alice\"\ntoken = \"{ALICE}\"\ngroups = [\"support\"]\n"
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_casebroker"))
        .arg("--config")
        .arg(&path)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--log-format")
        .arg("json")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let mut child = Running(child);
    let pid = child.0.id();

    // The listening address from the log line (on stdout or stderr); both
    // pipes are drained for the life of the process.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let mut readers = Vec::new();
    let out: Box<dyn std::io::Read + Send> = Box::new(child.0.stdout.take().unwrap());
    let err: Box<dyn std::io::Read + Send> = Box::new(child.0.stderr.take().unwrap());
    for pipe in [out, err] {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["fields"]["message"] == "casebroker listening"
                    && let Some(addr) = v["fields"]["addr"].as_str()
                {
                    let _ = tx.send(addr.to_string());
                }
            }
        }));
    }
    drop(tx);
    let addr: SocketAddr = tokio::task::spawn_blocking(move || rx.recv_timeout(WAIT * 2))
        .await
        .unwrap()
        .expect("the binary logs its listening address")
        .parse()
        .expect("a socket address");
    let _ = std::fs::remove_file(&path);

    let url = format!("ws://{addr}/v1/ws");
    let mut ws = WsClient::connect(&url).await;
    ws.send(json!({"type": "hello", "role": "agent", "token": ALICE}))
        .await;
    ws.wait_type("welcome").await;
    ws.sync().await;

    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(killed.success());
    assert_eq!(ws.closed().await.0, Closed::Code(4000));

    let deadline = Instant::now() + Duration::from_secs(2) + Duration::from_secs(3);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the binary still runs after its grace period"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
    for r in readers {
        let _ = r.join();
    }
}

// 13. Metrics move --------------------------------------------------------------------------

#[tokio::test]
async fn metrics_move() {
    const IN: &str = "casebroker_messages_total{direction=\"in\"}";
    const OUT: &str = "casebroker_messages_total{direction=\"out\"}";
    const BYTES_IN: &str = "casebroker_bytes_total{direction=\"in\"}";
    const BYTES_OUT: &str = "casebroker_bytes_total{direction=\"out\"}";
    const LATENCY: &str = "casebroker_push_latency_seconds_count";
    let server =
        TestServer::with_config(config_with("messages_per_second = 5\nmessage_burst = 5")).await;
    let t0 = scrape(&server).await;
    let build = format!(
        "casebroker_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&t0, &build), 1.0, "{t0}");
    assert!(value(&t0, "process_resident_memory_bytes") > 0.0, "{t0}");
    let rl0 = value(&t0, &disconnects("rate_limited"));
    let lat0 = value(&t0, LATENCY);

    // 2 hellos, 1 subscribe, 3 create_case in; 2 welcomes, a snapshot, 3
    // replies and 3 events out.
    let mut alice = server.agent(ALICE).await;
    alice.ok(json!({"type": "subscribe"}), "snapshot").await;
    let mut bob = server.agent(BOB).await;
    for _ in 0..3 {
        create_case(&mut bob, "support").await;
    }
    for _ in 0..3 {
        alice.wait_type("event").await;
    }
    // Writes are counted right after the flush: poll for the last ones.
    let out0 = value(&t0, OUT);
    wait_metric(&server, OUT, ">= 9 more", |v| v >= out0 + 9.0).await;
    let t1 = scrape(&server).await;
    assert!(value(&t1, IN) >= value(&t0, IN) + 6.0, "{t1}");
    assert!(value(&t1, BYTES_IN) > value(&t0, BYTES_IN) + 100.0, "{t1}");
    assert!(
        value(&t1, BYTES_OUT) > value(&t0, BYTES_OUT) + 1000.0,
        "{t1}"
    );

    // A flood closed with 4002 is counted.
    let mut flooder = customer_from(&server, None, &[]).await;
    flooder
        .burst((0..40).map(|i| json!({"type": "ping", "id": i})))
        .await;
    assert_eq!(flooder.closed().await.0, Some(4002));
    wait_metric(&server, &disconnects("rate_limited"), "one more", |v| {
        v >= rl0 + 1.0
    })
    .await;

    // Every event written to alice's dashboard is timed.
    wait_metric(&server, LATENCY, ">= 3 more", |v| v >= lat0 + 3.0).await;
}
