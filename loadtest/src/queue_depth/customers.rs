//! The waiting customers of the fill: [`Customer`], a seated customer's
//! case and the task that reads its pushes; [`seat_customer`], which opens
//! a customer connection and asks for help so that a case waits in the
//! group's line; and [`hold_customer`], which reads that connection's
//! pushes, counting `queue` positions, until the run releases it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::bail;
use casebroker::protocol::{ClientMsg, RequestHelp, ServerMsg};
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::scan;
use crate::target::{Target, Ws};

/// A seated customer: its case and the task that reads its pushes.
pub(super) struct Customer {
    pub(super) code: String,
    pub(super) task: JoinHandle<Option<String>>,
}

/// One seated customer: `hello`, `request_help` with `module`; returns the
/// socket and the case's code.
pub(super) async fn seat_customer(
    target: &Target,
    module: String,
    n: usize,
) -> anyhow::Result<(Ws, String)> {
    let mut c = Client::connect(target).await?;
    c.hello_customer().await?;
    let reply = c
        .request(
            "request_help",
            ClientMsg::RequestHelp(RequestHelp {
                module,
                name: Some(format!("Waiting {n}")),
                ..RequestHelp::default()
            }),
        )
        .await?;
    let ServerMsg::Joined { code, .. } = reply else {
        bail!("request_help: expected joined, got {reply:?}");
    };
    Ok((c.into_inner(), code.to_string()))
}

/// Reads and discards a waiting customer's pushes (counting `queue`
/// positions) until released, then closes the socket. Returns why the
/// connection ended early, if it did.
pub(super) async fn hold_customer(
    mut ws: Ws,
    release: CancellationToken,
    pushes: Arc<AtomicU64>,
) -> Option<String> {
    loop {
        let msg = tokio::select! {
            biased;
            _ = release.cancelled() => break,
            m = ws.next() => m,
        };
        match msg {
            Some(Ok(Message::Text(t))) => {
                if scan::msg_type(t.as_bytes()) == Some("queue") {
                    pushes.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return Some(format!(
                    "a waiting customer was closed by the broker ({})",
                    frame.map(|f| u16::from(f.code)).unwrap_or(1005)
                ));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Some(format!("a waiting customer's connection failed: {e}")),
            None => return Some("a waiting customer's connection ended".into()),
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    None
}
