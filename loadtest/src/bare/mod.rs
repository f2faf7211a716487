//! `bare`: a minimal broadcast server on tokio-tungstenite, the ceiling
//! `fanout --baseline bare` compares casebroker with.
//!
//! It speaks the protocol subset of `baseline/server.js` (hello → welcome,
//! ping → pong, subscribe → snapshot, unsubscribe, create_case / assign /
//! close / delete → a reply and one `event` to every subscriber) with the
//! same JSON fields in the same order, so its events are as large as the
//! Node.js baseline's and casebroker's. Each event is serialised once; the
//! same bytes (a cheap clone) go into every subscriber's unbounded queue.
//! Each connection's writer takes whatever is queued, feeds every message
//! and flushes once per wake-up. No auth, no persistence, no limits beyond
//! a 64 KiB message, no per-delivery metrics: what a broadcast costs on
//! this machine and nothing else.
//!
//! This file has the listener and the connections; `hub.rs` the company's
//! state and the commands.

mod hub;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::crash::fresh_seed;
use crate::target::NotLoopback;
use hub::{Conn, Hub, handle};

/// The largest message (and frame) a client may send.
const MAX_MESSAGE: usize = 64 << 10;
/// Messages a writer takes off its queue per wake-up, at most.
const DRAIN_AT_ONCE: usize = 4096;

/// The address `--host` names: loopback only (127.0.0.0/8, `localhost`,
/// `::1`); anything else is a [`NotLoopback`].
pub fn loopback_host(host: &str) -> anyhow::Result<IpAddr> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let ip = if bare.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        bare.parse::<IpAddr>()
            .map_err(|_| NotLoopback(format!("--host {host}")))?
    };
    if !ip.is_loopback() {
        return Err(NotLoopback(format!("--host {host}")).into());
    }
    Ok(ip)
}

/// Serves on `host:port` until SIGINT or SIGTERM (or, with `stop_on_eof`,
/// until standard input closes). Prints `bare listening on ws://ADDR/`
/// once it accepts connections.
pub async fn serve(host: &str, port: u16, stop_on_eof: bool) -> anyhow::Result<()> {
    let ip = loopback_host(host)?;
    let listener = TcpListener::bind(SocketAddr::new(ip, port))
        .await
        .with_context(|| format!("bind {ip}:{port}"))?;
    let addr = listener.local_addr()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "bare listening on ws://{addr}/")?;
    out.flush()?;
    drop(out);
    tokio::select! {
        r = accept_loop(listener) => r,
        () = stopped(stop_on_eof) => Ok(()),
    }
}

/// Accepts connections for ever.
pub async fn accept_loop(listener: TcpListener) -> anyhow::Result<()> {
    let hub = Arc::new(Mutex::new(Hub::new(fresh_seed())));
    let mut next_id = 0u64;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                next_id += 1;
                tokio::spawn(connection(stream, hub.clone(), next_id));
            }
            // Out of file descriptors, say: wait a little, carry on.
            Err(e) => {
                eprintln!("bare: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Resolves on SIGINT, SIGTERM or (with `stop_on_eof`) the end of stdin.
async fn stopped(stop_on_eof: bool) {
    let eof = async {
        if !stop_on_eof {
            return std::future::pending().await;
        }
        // A plain thread: a blocking read would hold up the runtime's
        // shutdown, a thread does not hold up the process's exit.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = tx.send(());
        });
        let _ = rx.await;
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
        () = eof => {}
    }
}

/// One connection: the handshake, a writer task, and its commands read
/// in order.
async fn connection(stream: TcpStream, hub: Arc<Mutex<Hub>>, id: u64) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (sink, mut source) = ws.split();
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_loop(sink, rx));
    let mut conn = Conn::new(id, tx);
    while let Some(Ok(msg)) = source.next().await {
        let text = match &msg {
            Message::Text(t) => t.as_str(),
            // Like server.js: a binary message is not JSON.
            Message::Binary(_) => "",
            Message::Close(_) => break,
            _ => continue,
        };
        if !handle(&hub, &mut conn, text) {
            break;
        }
    }
    conn.leave(&hub);
    drop(conn);
    let _ = writer.await;
}

/// Writes what the connection's queue holds: every message queued by the
/// time it wakes up is fed, then one flush.
async fn write_loop(
    mut sink: SplitSink<WebSocketStream<TcpStream>, Message>,
    mut rx: mpsc::UnboundedReceiver<Message>,
) {
    let mut batch = Vec::with_capacity(64);
    while rx.recv_many(&mut batch, DRAIN_AT_ONCE).await > 0 {
        for m in batch.drain(..) {
            if sink.feed(m).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Client, Ended, REPLY_TIMEOUT};
    use crate::target::Target;
    use casebroker::protocol::{Action, ClientMsg, CreateCase, ServerMsg};

    #[test]
    fn only_loopback_hosts_are_served() {
        for ok in ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"] {
            assert!(loopback_host(ok).unwrap().is_loopback(), "{ok}");
        }
        for bad in [
            "10.0.0.1",
            "0.0.0.0",
            "::",
            "192.168.1.2",
            "example.com",
            "",
        ] {
            let e = loopback_host(bad).unwrap_err();
            assert!(e.downcast_ref::<NotLoopback>().is_some(), "{bad}: {e}");
        }
    }

    async fn dashboard(target: &Target) -> (Client, u64) {
        let mut c = Client::connect(target).await.unwrap();
        c.hello_agent("any").await.unwrap();
        let seq = c.subscribe().await.unwrap();
        (c, seq)
    }

    /// The next message, which must be an event; returns (seq, action, code).
    async fn event(c: &mut Client) -> (u64, Action, String) {
        let got = c.recv(REPLY_TIMEOUT).await.unwrap().unwrap();
        match got.msg {
            Some(ServerMsg::Event {
                seq, action, case, ..
            }) => (seq, action, case.code.to_string()),
            _ => panic!("expected an event, got {}", got.text),
        }
    }

    #[tokio::test]
    async fn speaks_the_baseline_protocol() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let server = tokio::spawn(accept_loop(listener));
        let target = Target::new(&url, 1).unwrap();
        let (mut a, seq_a) = dashboard(&target).await;
        let (mut b, seq_b) = dashboard(&target).await;
        assert_eq!((seq_a, seq_b), (0, 0));

        let mut drv = Client::connect(&target).await.unwrap();
        drv.hello_agent("any").await.unwrap();
        assert!(matches!(
            drv.request("pong", ClientMsg::Ping {}).await.unwrap(),
            ServerMsg::Pong {}
        ));
        let create = ClientMsg::CreateCase(CreateCase {
            group: "support".into(),
            name: Some("one".into()),
            ..CreateCase::default()
        });
        let ServerMsg::Case { case } = drv.request("case", create).await.unwrap() else {
            panic!("create_case")
        };
        let code = serde_json::to_value(&case).unwrap()["code"]
            .as_str()
            .unwrap()
            .to_string();
        let close = ClientMsg::Close {
            code: Some(code.clone()),
        };
        drv.request("case", close.clone()).await.unwrap();
        let again = drv.request("case", close).await.unwrap_err();
        assert!(format!("{again:#}").contains("conflict"), "{again:#}");
        let delete = ClientMsg::Delete { code: code.clone() };
        assert!(matches!(
            drv.request("deleted", delete.clone()).await.unwrap(),
            ServerMsg::Deleted { .. }
        ));
        let gone = drv.request("deleted", delete).await.unwrap_err();
        assert!(format!("{gone:#}").contains("not_found"), "{gone:#}");

        let want = [
            (1, Action::Created, code.clone()),
            (2, Action::Updated, code.clone()),
            (3, Action::Deleted, code),
        ];
        for dash in [&mut a, &mut b] {
            for w in &want {
                assert_eq!(&event(dash).await, w);
            }
        }
        // A late subscriber starts from the snapshot's seq.
        let (_c, seq_c) = dashboard(&target).await;
        assert_eq!(seq_c, 3);

        // Customers may not subscribe; a first message that is not a hello
        // closes the connection with 4502.
        let mut cust = Client::connect(&target).await.unwrap();
        cust.hello_customer().await.unwrap();
        let e = cust.subscribe().await.unwrap_err();
        assert!(format!("{e:#}").contains("forbidden"), "{e:#}");
        let mut rude = Client::connect(&target).await.unwrap();
        rude.send(ClientMsg::Ping {}).await.unwrap();
        let err = rude.recv(REPLY_TIMEOUT).await.unwrap().unwrap();
        assert!(
            matches!(err.msg, Some(ServerMsg::Error { .. })),
            "{}",
            err.text
        );
        match rude.recv(REPLY_TIMEOUT).await.unwrap() {
            Err(Ended::Closed(code)) => assert_eq!(code, 4502),
            other => panic!("expected a close, got {other:?}"),
        }
        server.abort();
    }
}
