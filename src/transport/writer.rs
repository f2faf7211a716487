//! The writing half of a WebSocket session: replies, batches of outbox
//! items with one flush, close frames, every write under a deadline and
//! counted; and how a session's end maps to a close code.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::SinkExt;
use futures::stream::SplitSink;
use tokio::time::error::Elapsed;
use tokio::time::{Instant, timeout};
use tracing::debug;

use crate::delivery::{OutboxRx, Outgoing};
use crate::error::Error;
use crate::metrics::{Disconnect, Metrics};
use crate::protocol::{Id, ServerMsg, close};

/// Outbox items written per flush, so one busy connection cannot starve
/// its own reads.
const WRITE_BATCH: usize = 256;

pub type Sink = SplitSink<WebSocket, Message>;

/// The writing half: every write has a deadline and is counted.
pub struct Writer {
    pub sink: Sink,
    pub metrics: Metrics,
    pub write_timeout: Duration,
    /// Emission times of the events in the batch being written (reused).
    pub emitted: Vec<Instant>,
}

/// Why the session ends, and the close frame to send once the connection
/// has left its seats.
pub struct End {
    pub reason: Option<Disconnect>,
    pub close: Option<(u16, &'static str)>,
}

impl End {
    /// The peer is gone or the socket failed: nothing more to send.
    pub fn gone(reason: Option<Disconnect>) -> End {
        End {
            reason,
            close: None,
        }
    }

    /// The broker ends the connection with a close code.
    pub fn close(reason: Disconnect, code: u16, text: &'static str) -> End {
        End {
            reason: Some(reason),
            close: Some((code, text)),
        }
    }
}

impl Writer {
    /// Sends one frame now (a reply or an error).
    pub async fn send(&mut self, frame: Utf8Bytes) -> Result<(), End> {
        let len = frame.len() as u64;
        written(deadline(self.write_timeout, self.sink.send(Message::Text(frame))).await)?;
        self.metrics.messages_sent(1, len);
        Ok(())
    }

    pub async fn error(&mut self, id: Option<&Id>, err: &Error) -> Result<(), End> {
        let frame = error_frame(&self.metrics, id, err);
        self.send(frame).await
    }

    /// Writes a command's reply together with whatever the command queued
    /// for this connection (its pushes), with one flush: a command costs
    /// one write, not one per message.
    pub async fn reply(&mut self, frame: Utf8Bytes, rx: &mut OutboxRx) -> Result<(), End> {
        let len = frame.len() as u64;
        written(deadline(self.write_timeout, self.sink.feed(Message::Text(frame))).await)?;
        self.metrics.messages_sent(1, len);
        match rx.try_recv() {
            Some(item) => self.batch(item, rx).await,
            None => written(deadline(self.write_timeout, self.sink.flush()).await),
        }
    }

    /// Writes `first` and whatever else is queued (up to a batch) with one
    /// flush, then records how late each queue event reached the socket.
    pub async fn batch(&mut self, first: Outgoing, rx: &mut OutboxRx) -> Result<(), End> {
        let emitted = &mut self.emitted;
        emitted.clear();
        let (mut count, mut bytes) = (0u64, 0u64);
        let mut next = Some(first);
        let mut closing = None;
        let write = async {
            for written in 1..=WRITE_BATCH {
                let Some(item) = next.take() else { break };
                let frame = match item {
                    Outgoing::Text(frame) => frame,
                    Outgoing::Event(frame, at) => {
                        emitted.push(at);
                        frame
                    }
                    Outgoing::Close(code, reason) => {
                        closing = Some((code, reason));
                        break;
                    }
                };
                count += 1;
                bytes += frame.len() as u64;
                self.sink.feed(Message::Text(frame)).await?;
                // Take the next item only if this batch will write it: what
                // is taken out of the outbox must never be dropped.
                if written < WRITE_BATCH {
                    next = rx.try_recv();
                }
            }
            self.sink.flush().await
        };
        written(deadline(self.write_timeout, write).await)?;
        self.metrics.messages_sent(count, bytes);
        if !self.emitted.is_empty() {
            let now = Instant::now();
            for at in &self.emitted {
                self.metrics.push_latency(now - *at);
            }
        }
        if let Some((code, reason)) = closing {
            return Err(End::close(Disconnect::CaseEnded, code, reason));
        }
        Ok(())
    }

    /// Sends a close frame after whatever is still buffered, within the
    /// write deadline, so a slow reader still learns why it was closed.
    pub async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        }));
        let _ = timeout(self.write_timeout, async {
            let _ = self.sink.send(frame).await;
            let _ = self.sink.close().await;
        })
        .await;
    }

    /// Closes with `code`, counting the reason.
    pub async fn close_for(&mut self, reason: Disconnect, code: u16, text: &'static str) {
        self.metrics.disconnected(reason);
        self.close(code, text).await;
    }
}

/// How a deadline-bound write ended: a failed socket ends the connection
/// quietly, an expired deadline counts as `write_timeout`.
pub fn written<E>(r: Result<Result<(), E>, Elapsed>) -> Result<(), End> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::gone(None)),
        Err(_) => Err(End::gone(Some(Disconnect::WriteTimeout))),
    }
}

/// `timeout`, without arming a timer when the future is ready at once (a
/// write into a socket with room): timers are shared by every connection,
/// and most writes never need one.
pub async fn deadline<F: Future>(limit: Duration, f: F) -> Result<F::Output, Elapsed> {
    let mut f = std::pin::pin!(f);
    match futures::poll!(f.as_mut()) {
        std::task::Poll::Ready(out) => Ok(out),
        std::task::Poll::Pending => timeout(limit, f).await,
    }
}

/// An `error` message, counted.
pub fn error_frame(metrics: &Metrics, id: Option<&Id>, err: &Error) -> Utf8Bytes {
    metrics.error_sent(err.code);
    debug!(code = ?err.code, "error reply");
    let msg = ServerMsg::Error {
        code: err.code,
        message: err.message.clone(),
    };
    Utf8Bytes::from(msg.to_text(id))
}

/// The end of a connection told to close by the broker (its outbox
/// overflowed, or it is rate limited).
pub fn killed(code: u16) -> End {
    debug!(code, "closing connection");
    let reason = match code {
        close::SLOW => Disconnect::Slow,
        _ => Disconnect::RateLimited,
    };
    End::close(reason, code, reason_for(code))
}

pub fn reason_for(code: u16) -> &'static str {
    match code {
        close::SLOW => "slow consumer",
        close::RATE_LIMITED => "rate limited",
        close::SHUTDOWN => "shutting down",
        _ => "",
    }
}
