//! Sockets that break the protocol or stall, driven by WebSocket frames
//! written by hand on a raw TCP stream ([`FrameSocket`]): an endlessly fragmented message
//! (1009), unmasked client frames, a socket that never sends its request
//! head, a WebSocket that answers no pings, and dashboards that never read,
//! dropped as slow consumers while memory stays bounded.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use super::*;
use crate::util::process::{BROKER, Process};

// WebSocket frames written and read by hand on a raw TCP stream -------------

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

/// A TCP socket that speaks WebSocket frame by frame, by hand: it can
/// send what no WebSocket client would (unmasked frames), take a small
/// receive buffer, and stop reading; not a client of the protocol (that is
/// `WsClient`).
struct FrameSocket {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl FrameSocket {
    /// Handshakes on a fresh TCP connection (with a small receive buffer
    /// when asked) and expects 101.
    async fn connect(addr: SocketAddr, recv_buffer: Option<u32>) -> FrameSocket {
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(n) = recv_buffer {
            socket.set_recv_buffer_size(n).unwrap();
        }
        let mut stream = timeout(WAIT, socket.connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        stream.write_all(HANDSHAKE.as_bytes()).await.unwrap();
        let mut raw = FrameSocket {
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
    let mut good = FrameSocket::connect(server.addr, None).await;
    good.send_bytes(&client_frame(OP_TEXT, hello.as_bytes(), true))
        .await
        .unwrap();
    assert_eq!(good.text().await.expect("welcome")["type"], "welcome");

    // An unmasked hello: the connection is closed, no welcome.
    let mut bad = FrameSocket::connect(server.addr, None).await;
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
    let mut silent = FrameSocket::connect(server.addr, None).await;
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
    // The broker runs as its own process, so that its resident memory is
    // its own, not that of the tests running beside this one.
    let config = config_text(&format!(
        "{UNLIMITED}\noutbox_messages = 256\noutbox_bytes = 65536"
    ));
    let broker = Process::start(BROKER, Some(&config), &["--listen", "127.0.0.1:0"], &[]);
    let server = Endpoint::new(broker.listening().await);
    let mut producer = server.agent(ALICE).await;
    let mut fast = server.agent(DAVE).await;
    fast.ok(json!({"type": "subscribe"}), "snapshot").await;

    // The slow one: a small receive buffer, subscribed, then never reads.
    // Ten of them: an outbox that did not bound them would hold the whole
    // flood for each, 170 MB in all.
    let mut slows = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        let mut slow = FrameSocket::connect(server.addr, Some(4096)).await;
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

    // Memory stayed bounded. The broker's growth is measured, not its
    // total: the cases it keeps (5,000 descriptions of 3 KB, and their
    // events), the allocator's slack, and at most 256 KiB of outbox per
    // slow dashboard; without that bound the ten would add some 170 MB.
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
