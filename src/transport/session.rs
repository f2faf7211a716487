//! One task per WebSocket: `hello` within a deadline, then one `select!`
//! loop over the socket, the connection's outbox, its kill switch, the ping
//! timer and the broker's shutdown. A drop guard always releases the
//! connection's seats.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use governor::clock::MonotonicClock;
use governor::{Quota, RateLimiter};
use tokio::time::error::Elapsed;
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{Instrument, debug, field, info_span};

use super::guard::ConnPermit;
use crate::app::App;
use crate::core::{Conn, Who};
use crate::delivery::{OutboxRx, Outgoing};
use crate::directory::Agent;
use crate::error::Error;
use crate::metrics::{Disconnect, Metrics};
use crate::protocol::{CaseBody, ClientMsg, ErrorCode, Id, Role, ServerMsg, close, decode_client};

/// Consecutive undecodable messages after which a connection is closed
/// (4002).
const MAX_BAD_IN_A_ROW: u32 = 20;
/// Consecutive messages over the rate limit after which a connection is
/// closed (4002).
const MAX_LIMITED_IN_A_ROW: u32 = 20;
/// Outbox items written per flush, so one busy connection cannot starve
/// its own reads.
const WRITE_BATCH: usize = 256;

type Sink = SplitSink<WebSocket, Message>;
type Source = SplitStream<WebSocket>;

/// Releases the connection's seats and subscription however the task ends.
struct Registered {
    app: App,
    conn: Conn,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.app.disconnect(&self.conn);
    }
}

/// Who said `hello`.
enum Peer {
    Agent(Arc<Agent>),
    Customer,
}

/// The writing half: every write has a deadline and is counted.
struct Writer {
    sink: Sink,
    metrics: Metrics,
    write_timeout: Duration,
    /// Emission times of the events in the batch being written (reused).
    emitted: Vec<Instant>,
}

/// Why the session ends, and the close frame to send once the connection
/// has left its seats.
struct End {
    reason: Option<Disconnect>,
    close: Option<(u16, &'static str)>,
}

impl End {
    /// The peer is gone or the socket failed: nothing more to send.
    fn gone(reason: Option<Disconnect>) -> End {
        End {
            reason,
            close: None,
        }
    }

    /// The broker ends the connection with a close code.
    fn close(reason: Disconnect, code: u16, text: &'static str) -> End {
        End {
            reason: Some(reason),
            close: Some((code, text)),
        }
    }
}

impl Writer {
    /// Sends one frame now (a reply or an error).
    async fn send(&mut self, frame: Utf8Bytes) -> Result<(), End> {
        let len = frame.len() as u64;
        written(deadline(self.write_timeout, self.sink.send(Message::Text(frame))).await)?;
        self.metrics.messages_sent(1, len);
        Ok(())
    }

    async fn error(&mut self, id: Option<&Id>, err: &Error) -> Result<(), End> {
        let frame = error_frame(&self.metrics, id, err);
        self.send(frame).await
    }

    /// Writes a command's reply together with whatever the command queued
    /// for this connection (its pushes), with one flush: a command costs
    /// one write, not one per message.
    async fn reply(&mut self, frame: Utf8Bytes, rx: &mut OutboxRx) -> Result<(), End> {
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
    async fn batch(&mut self, first: Outgoing, rx: &mut OutboxRx) -> Result<(), End> {
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
    async fn close(&mut self, code: u16, reason: &'static str) {
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
    async fn close_for(&mut self, reason: Disconnect, code: u16, text: &'static str) {
        self.metrics.disconnected(reason);
        self.close(code, text).await;
    }
}

/// Serves one upgraded WebSocket until it closes. `permit` holds the
/// client address's connection slot for the life of the socket.
pub async fn run(socket: WebSocket, app: App, ip: IpAddr, permit: ConnPermit) {
    let span = info_span!(
        "conn",
        ip = %ip,
        conn = field::Empty,
        role = field::Empty,
        agent = field::Empty,
        company = field::Empty,
        code = field::Empty
    );
    serve(socket, app, ip).instrument(span).await;
    drop(permit);
}

async fn serve(socket: WebSocket, app: App, ip: IpAddr) {
    let (sink, mut source) = socket.split();
    let config = app.broker.config();
    let mut w = Writer {
        sink,
        metrics: app.broker.metrics().clone(),
        write_timeout: config.write_timeout,
        emitted: Vec::new(),
    };
    let Some((id, who)) = hello(&app, &mut w, &mut source).await else {
        return;
    };
    let (role, agent) = match &who {
        Peer::Agent(a) => (Role::Agent, Some(a.clone())),
        Peer::Customer => (Role::Customer, None),
    };
    let (conn, outbox, mut rx) = app.connect(role, agent.clone());
    let span = tracing::Span::current();
    span.record("conn", conn.id);
    span.record("role", role.as_str());
    if let Some(a) = &agent {
        span.record("agent", a.id.as_str());
        span.record("company", a.company.as_str());
    }
    debug!("hello");
    let welcome = ServerMsg::Welcome {
        role,
        agent: agent.as_ref().map(|a| a.info()),
    };
    let registered = Registered {
        app: app.clone(),
        conn,
    };
    if !outbox.push(&welcome, id.as_ref()) {
        return;
    }
    let end = session(
        &app,
        &mut w,
        &mut source,
        &mut rx,
        &registered.conn,
        ip,
        &who,
    )
    .await;
    // Leave the seats at once; the close frame may take a while to reach a
    // slow reader.
    drop(registered);
    if let Err(End { reason, close }) = end {
        if let Some(reason) = reason {
            w.metrics.disconnected(reason);
        }
        if let Some((code, text)) = close {
            w.close(code, text).await;
            linger(&mut source).await;
        }
    }
}

/// How a deadline-bound write ended: a failed socket ends the connection
/// quietly, an expired deadline counts as `write_timeout`.
fn written<E>(r: Result<Result<(), E>, Elapsed>) -> Result<(), End> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::gone(None)),
        Err(_) => Err(End::gone(Some(Disconnect::WriteTimeout))),
    }
}

/// `timeout`, without arming a timer when the future is ready at once (a
/// write into a socket with room): timers are shared by every connection,
/// and most writes never need one.
async fn deadline<F: Future>(limit: Duration, f: F) -> Result<F::Output, Elapsed> {
    let mut f = std::pin::pin!(f);
    match futures::poll!(f.as_mut()) {
        std::task::Poll::Ready(out) => Ok(out),
        std::task::Poll::Pending => timeout(limit, f).await,
    }
}

/// How long a closing connection's remaining input is read and dropped.
const LINGER: Duration = Duration::from_secs(2);

/// After our close frame, reads and drops what the peer still sends until
/// its close frame, briefly: closing a socket with unread input resets it,
/// and the reset would destroy our close frame before the peer reads it.
async fn linger(source: &mut Source) {
    let _ = timeout(LINGER, async {
        while let Some(Ok(msg)) = source.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Waits for `hello` and checks it. On failure the error and the close
/// frame are sent here.
async fn hello(app: &App, w: &mut Writer, source: &mut Source) -> Option<(Option<Id>, Peer)> {
    let first = tokio::select! {
        r = timeout(app.broker.config().hello_timeout, next_data(source)) => r,
        _ = app.shutdown.cancelled() => {
            w.close_for(Disconnect::Shutdown, close::SHUTDOWN, "shutting down").await;
            linger(source).await;
            return None;
        }
    };
    let no_hello = |message: String| Error::bad_request(message);
    let text = match first {
        Err(_) => {
            debug!("no hello in time");
            w.close_for(
                Disconnect::HelloTimeout,
                close::HELLO_TIMEOUT,
                "hello timeout",
            )
            .await;
            linger(source).await;
            return None;
        }
        Ok(FirstFrame::Gone) => return None,
        Ok(FirstFrame::TooLarge) => {
            w.close_for(Disconnect::TooLarge, close::TOO_LARGE, "message too large")
                .await;
            linger(source).await;
            return None;
        }
        Ok(FirstFrame::Binary) => {
            let _ = w
                .error(
                    None,
                    &no_hello("the first message must be a hello text frame".into()),
                )
                .await;
            w.close_for(Disconnect::NoHello, close::NO_HELLO, "expected hello")
                .await;
            linger(source).await;
            return None;
        }
        Ok(FirstFrame::Text(t)) => t,
    };
    w.metrics.message_received("hello", text.len());
    let (id, err) = match decode_client(&text) {
        Ok(env) => match env.msg {
            ClientMsg::Hello {
                role: Role::Customer,
                ..
            } => return Some((env.id, Peer::Customer)),
            ClientMsg::Hello {
                role: Role::Agent,
                token,
            } => match token.as_deref().and_then(|t| app.broker.authenticate(t)) {
                Some(agent) => return Some((env.id, Peer::Agent(agent))),
                None => {
                    let err = Error::unauthorized("bad or missing agent token");
                    let _ = w.error(env.id.as_ref(), &err).await;
                    w.close_for(
                        Disconnect::Unauthorized,
                        close::UNAUTHORIZED,
                        "unauthorized",
                    )
                    .await;
                    linger(source).await;
                    return None;
                }
            },
            _ => (env.id, no_hello("the first message must be a hello".into())),
        },
        Err(e) => (e.id, no_hello(e.message)),
    };
    let _ = w.error(id.as_ref(), &err).await;
    w.close_for(Disconnect::NoHello, close::NO_HELLO, "expected hello")
        .await;
    linger(source).await;
    None
}

/// The session loop after `welcome`.
async fn session(
    app: &App,
    w: &mut Writer,
    source: &mut Source,
    rx: &mut OutboxRx,
    conn: &Conn,
    ip: IpAddr,
    who: &Peer,
) -> Result<(), End> {
    let config = app.broker.config();
    // The std clock: governor's default clock calibrates itself (cpuid)
    // each time one is made, which is too dear once per connection.
    let limiter = RateLimiter::direct_with_clock(
        Quota::per_second(nonzero(config.messages_per_second))
            .allow_burst(nonzero(config.message_burst)),
        MonotonicClock,
    );
    let mut ping =
        tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    // Set while a ping waits for any sign of life.
    let mut pong_deadline: Option<Instant> = None;
    let mut bad_in_a_row = 0u32;
    let mut limited_in_a_row = 0u32;
    // Created once, not per turn of the loop: each registers with its token.
    let kill = rx.kill.clone();
    let killed_now = kill.wait();
    tokio::pin!(killed_now);
    // A child token: polling the shared one from every connection on each
    // wake-up would contend on its lock.
    let shutdown_token = app.shutdown.child_token();
    let shutdown = shutdown_token.cancelled();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            code = &mut killed_now => return Err(killed(code)),
            _ = &mut shutdown => {
                return Err(End::close(Disconnect::Shutdown, close::SHUTDOWN, "shutting down"));
            }
            _ = sleep_until(pong_deadline.unwrap_or_else(Instant::now)), if pong_deadline.is_some() => {
                debug!("no pong in time");
                return Err(End::close(Disconnect::PongTimeout, close::GOING_AWAY, "pong timeout"));
            }
            _ = ping.tick() => {
                if pong_deadline.is_none() {
                    let sent = timeout(w.write_timeout, w.sink.send(Message::Ping(Default::default()))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        return Err(End::gone(None));
                    }
                    pong_deadline = Some(Instant::now() + config.pong_timeout);
                }
            }
            item = rx.recv() => {
                let Some(item) = item else { return Ok(()) };
                // A write blocked on a reader that stopped reading must not
                // hide that its queue overflowed meanwhile.
                let overflowed = tokio::select! {
                    r = w.batch(item, rx) => { r?; None }
                    code = &mut killed_now => Some(code),
                };
                if let Some(code) = overflowed {
                    return Err(killed(code));
                }
            }
            msg = source.next() => {
                // Any frame from the peer shows the connection is alive.
                pong_deadline = None;
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(b))) => {
                        w.metrics.message_received("invalid", b.len());
                        w.error(None, &Error::bad_request("messages are JSON text frames")).await?;
                        bad_in_a_row += 1;
                        if bad_in_a_row >= MAX_BAD_IN_A_ROW {
                            return Err(End::close(Disconnect::RateLimited, close::RATE_LIMITED, "too many bad messages"));
                        }
                        continue;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => return Ok(()),
                    Some(Err(e)) => {
                        if is_too_large(&e) {
                            return Err(End::close(Disconnect::TooLarge, close::TOO_LARGE, "message too large"));
                        }
                        return Ok(());
                    }
                };
                if limiter.check().is_err() {
                    w.metrics.message_received("rate_limited", text.len());
                    limited_in_a_row += 1;
                    if limited_in_a_row >= MAX_LIMITED_IN_A_ROW {
                        return Err(End::close(Disconnect::RateLimited, close::RATE_LIMITED, "rate limited"));
                    }
                    let id = decode_client(&text).ok().and_then(|e| e.id);
                    let err = Error::new(ErrorCode::RateLimited, "too many messages; slow down");
                    w.error(id.as_ref(), &err).await?;
                    continue;
                }
                limited_in_a_row = 0;
                let (id, decoded, result) = handle(app, conn, ip, who, &text);
                match result {
                    Ok(Some(reply)) => w.reply(Utf8Bytes::from(reply.to_text(id.as_ref())), rx).await?,
                    Ok(None) => {}
                    Err(err) => w.reply(error_frame(&w.metrics, id.as_ref(), &err), rx).await?,
                }
                // Only undecodable messages count: a stream of garbage closes
                // the connection, refused commands do not.
                bad_in_a_row = if decoded { 0 } else { bad_in_a_row + 1 };
                if bad_in_a_row >= MAX_BAD_IN_A_ROW {
                    return Err(End::close(Disconnect::RateLimited, close::RATE_LIMITED, "too many bad messages"));
                }
            }
        }
    }
}

/// An `error` message, counted.
fn error_frame(metrics: &Metrics, id: Option<&Id>, err: &Error) -> Utf8Bytes {
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
fn killed(code: u16) -> End {
    debug!(code, "closing connection");
    let reason = match code {
        close::SLOW => Disconnect::Slow,
        _ => Disconnect::RateLimited,
    };
    End::close(reason, code, reason_for(code))
}

fn nonzero(n: u32) -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(n.max(1)).expect("at least one")
}

fn reason_for(code: u16) -> &'static str {
    match code {
        close::SLOW => "slow consumer",
        close::RATE_LIMITED => "rate limited",
        close::SHUTDOWN => "shutting down",
        _ => "",
    }
}

fn is_too_large(e: &axum::Error) -> bool {
    use std::error::Error as _;
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = source {
        if let Some(tungstenite::Error::Capacity(_)) = s.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Decodes and runs one command for this connection. Returns the `id` to
/// echo, whether the message decoded, and the reply if the session must
/// send one itself.
fn handle(
    app: &App,
    conn: &Conn,
    ip: IpAddr,
    who: &Peer,
    text: &str,
) -> (Option<Id>, bool, Result<Option<ServerMsg>, Error>) {
    let broker = &app.broker;
    let env = match decode_client(text) {
        Ok(env) => env,
        Err(e) => {
            broker.metrics().message_received("invalid", text.len());
            return (e.id, false, Err(Error::bad_request(e.message)));
        }
    };
    broker
        .metrics()
        .message_received(env.msg.wire_type(), text.len());
    let id = env.id;
    let result = match who {
        Peer::Agent(agent) => agent_command(app, conn, agent, env.msg, id.as_ref()),
        Peer::Customer => customer_command(app, conn, ip, env.msg, id.as_ref()),
    };
    (id, true, result)
}

fn agent_command(
    app: &App,
    conn: &Conn,
    agent: &Agent,
    msg: ClientMsg,
    id: Option<&Id>,
) -> Result<Option<ServerMsg>, Error> {
    let broker = &app.broker;
    let case = |view| ServerMsg::Case {
        case: CaseBody::Agent(Box::new(view)),
    };
    Ok(Some(match msg {
        ClientMsg::Hello { .. } => return Err(Error::bad_request("hello was already said")),
        ClientMsg::Subscribe { group, resume } => {
            // The snapshot or `resumed` is queued in the stream's order and
            // echoes this id.
            app.hub.set_reply_id(conn.id, id.cloned());
            broker.subscribe(conn, agent, group, resume)?;
            return Ok(None);
        }
        ClientMsg::Unsubscribe {} => {
            broker.unsubscribe(conn);
            ServerMsg::Unsubscribed {}
        }
        ClientMsg::CreateCase(req) => case(broker.create_case(agent, req)?),
        ClientMsg::Assign { code, assignee } => case(broker.assign(agent, &code, assignee)?),
        ClientMsg::Join { code, takeover, .. } => {
            let view = broker.agent_join(conn, agent, &code, takeover)?;
            tracing::Span::current().record("code", field::display(&view.code));
            ServerMsg::Joined {
                code: view.code,
                case: CaseBody::Agent(Box::new(view)),
                resume_token: None,
            }
        }
        ClientMsg::Leave { code } => ServerMsg::Left {
            code: broker.leave(conn, code.as_deref())?,
        },
        ClientMsg::Close { code } => case(broker.close(Who::Agent(agent), code.as_deref())?.0),
        ClientMsg::Delete { code } => ServerMsg::Deleted {
            code: broker.delete(agent, &code)?,
        },
        ClientMsg::Presence { state } => {
            broker.set_presence(agent, state);
            ServerMsg::Presence { state }
        }
        ClientMsg::Chat { code, text } => ServerMsg::Sent {
            code: broker.chat(conn, code.as_deref(), text)?,
        },
        ClientMsg::Signal { code, data } => {
            let code = broker.signal(conn, code.as_deref(), data)?;
            return Ok(id.map(|_| ServerMsg::Sent { code }));
        }
        ClientMsg::RequestHelp(_) => {
            return Err(Error::forbidden("request_help is a customer command"));
        }
        ClientMsg::Ping {} => ServerMsg::Pong {},
    }))
}

fn customer_command(
    app: &App,
    conn: &Conn,
    ip: IpAddr,
    msg: ClientMsg,
    id: Option<&Id>,
) -> Result<Option<ServerMsg>, Error> {
    let broker = &app.broker;
    Ok(Some(match msg {
        ClientMsg::Hello { .. } => return Err(Error::bad_request("hello was already said")),
        ClientMsg::Join {
            code,
            name,
            resume_token,
            ..
        } => {
            // Checked before the code is looked up: a guesser learns nothing.
            app.guard.check_join(ip)?;
            let (view, token) = match broker.customer_join(conn, &code, name, resume_token) {
                Ok(joined) => joined,
                Err(e) => {
                    match e.code {
                        ErrorCode::NotFound => app.guard.join_failed(ip, "not_found"),
                        ErrorCode::Conflict => app.guard.join_failed(ip, "conflict"),
                        _ => {}
                    }
                    return Err(e);
                }
            };
            app.guard.join_succeeded(ip);
            tracing::Span::current().record("code", field::display(&view.code));
            ServerMsg::Joined {
                code: view.code,
                case: CaseBody::Customer(view),
                resume_token: Some(token),
            }
        }
        ClientMsg::RequestHelp(req) => {
            let known = broker
                .directory()
                .module(&req.module)
                .map(|_| req.module.as_str());
            app.guard.check_help(ip, known)?;
            let (view, token) = broker.request_help(Some(conn), req)?;
            tracing::Span::current().record("code", field::display(&view.code));
            ServerMsg::Joined {
                code: view.code,
                case: CaseBody::Customer(view),
                resume_token: token,
            }
        }
        ClientMsg::Chat { text, .. } => ServerMsg::Sent {
            code: broker.chat(conn, None, text)?,
        },
        ClientMsg::Signal { data, .. } => {
            let code = broker.signal(conn, None, data)?;
            return Ok(id.map(|_| ServerMsg::Sent { code }));
        }
        ClientMsg::Leave { .. } => ServerMsg::Left {
            code: broker.leave(conn, None)?,
        },
        ClientMsg::Close { .. } => ServerMsg::Case {
            case: CaseBody::Customer(broker.close(Who::Customer(conn), None)?.1),
        },
        ClientMsg::Ping {} => ServerMsg::Pong {},
        ClientMsg::Subscribe { .. }
        | ClientMsg::Unsubscribe {}
        | ClientMsg::CreateCase(_)
        | ClientMsg::Assign { .. }
        | ClientMsg::Delete { .. }
        | ClientMsg::Presence { .. } => {
            return Err(Error::forbidden("agents only"));
        }
    }))
}

enum FirstFrame {
    Text(Utf8Bytes),
    Binary,
    TooLarge,
    Gone,
}

/// The first data frame of a connection.
async fn next_data(source: &mut Source) -> FirstFrame {
    loop {
        match source.next().await {
            Some(Ok(Message::Text(t))) => return FirstFrame::Text(t),
            Some(Ok(Message::Binary(_))) => return FirstFrame::Binary,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Err(e)) if is_too_large(&e) => return FirstFrame::TooLarge,
            Some(Ok(Message::Close(_)) | Err(_)) | None => return FirstFrame::Gone,
        }
    }
}
