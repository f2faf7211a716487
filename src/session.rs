//! One task per WebSocket: `hello` within a deadline, then one `select!`
//! loop over the socket, the connection's outbox, its kill switch and the
//! broker's shutdown. A drop guard always releases the connection's seats.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, field, info_span};

use crate::App;
use crate::broker::{Actor, Broker, ConnId};
use crate::directory::Agent;
use crate::error::Error;
use crate::outbox::Outgoing;
use crate::protocol::{CaseBody, ClientMsg, Id, Role, ServerMsg, close, decode_client};

/// Consecutive bad messages after which a connection is closed (4002).
const MAX_BAD_IN_A_ROW: u32 = 20;
/// Outbox items written per flush, so one busy connection cannot starve
/// its own reads.
const WRITE_BATCH: usize = 256;

type Sink = SplitSink<WebSocket, Message>;
type Source = SplitStream<WebSocket>;

/// Releases the connection's seats and subscription however the task ends.
struct Registered {
    broker: Broker,
    conn: ConnId,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.broker.disconnect(self.conn);
    }
}

/// Who said `hello`.
enum Peer {
    Agent(std::sync::Arc<Agent>),
    Customer,
}

/// Serves one upgraded WebSocket until it closes.
pub async fn run(socket: WebSocket, app: App, peer: SocketAddr) {
    let span = info_span!(
        "conn",
        peer = %peer,
        conn = field::Empty,
        role = field::Empty,
        agent = field::Empty,
        company = field::Empty
    );
    serve(socket, app).instrument(span).await;
}

async fn serve(socket: WebSocket, app: App) {
    let (mut sink, mut source) = socket.split();
    let hello_timeout = app.broker.config().hello_timeout;
    let first = tokio::select! {
        r = tokio::time::timeout(hello_timeout, next_text(&mut source)) => r,
        _ = app.shutdown.cancelled() => {
            send_close(&mut sink, close::SHUTDOWN, "shutting down").await;
            return;
        }
    };
    let text = match first {
        Err(_) => {
            debug!("no hello in time");
            send_close(&mut sink, close::HELLO_TIMEOUT, "hello timeout").await;
            return;
        }
        Ok(FirstFrame::Gone) => return,
        Ok(FirstFrame::TooLarge) => {
            send_close(&mut sink, close::TOO_LARGE, "message too large").await;
            return;
        }
        Ok(FirstFrame::Binary) => {
            let err = Error::bad_request("the first message must be a hello text frame");
            send_error(&app.broker, &mut sink, None, &err).await;
            send_close(&mut sink, close::NO_HELLO, "expected hello").await;
            return;
        }
        Ok(FirstFrame::Text(t)) => t,
    };
    let (id, who) = match decode_client(&text) {
        Ok(env) => match env.msg {
            ClientMsg::Hello {
                role: Role::Customer,
                ..
            } => (env.id, Peer::Customer),
            ClientMsg::Hello {
                role: Role::Agent,
                token,
            } => match token.as_deref().and_then(|t| app.broker.authenticate(t)) {
                Some(agent) => (env.id, Peer::Agent(agent)),
                None => {
                    let err = Error::unauthorized("bad or missing agent token");
                    send_error(&app.broker, &mut sink, env.id.as_ref(), &err).await;
                    send_close(&mut sink, close::UNAUTHORIZED, "unauthorized").await;
                    return;
                }
            },
            _ => {
                let err = Error::bad_request("the first message must be a hello");
                send_error(&app.broker, &mut sink, env.id.as_ref(), &err).await;
                send_close(&mut sink, close::NO_HELLO, "expected hello").await;
                return;
            }
        },
        Err(e) => {
            let err = Error::bad_request(e.message);
            send_error(&app.broker, &mut sink, e.id.as_ref(), &err).await;
            send_close(&mut sink, close::NO_HELLO, "expected hello").await;
            return;
        }
    };

    let (role, agent) = match &who {
        Peer::Agent(a) => (Role::Agent, Some(a.clone())),
        Peer::Customer => (Role::Customer, None),
    };
    let (conn, outbox, mut rx) = app.broker.connect(role, agent.clone());
    let _registered = Registered {
        broker: app.broker.clone(),
        conn,
    };
    let span = tracing::Span::current();
    span.record("conn", conn);
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
    if !outbox.push(&welcome, id.as_ref()) {
        return;
    }

    let mut bad_in_a_row = 0u32;
    loop {
        tokio::select! {
            biased;
            code = rx.kill.wait() => {
                debug!(code, "closing connection");
                send_close(&mut sink, code, reason_for(code)).await;
                return;
            }
            _ = app.shutdown.cancelled() => {
                send_close(&mut sink, close::SHUTDOWN, "shutting down").await;
                return;
            }
            item = rx.rx.recv() => {
                let Some(item) = item else { return };
                if !write_batch(&mut sink, item, &mut rx.rx).await {
                    return;
                }
            }
            msg = source.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(_))) => {
                        let err = Error::bad_request("messages are JSON text frames");
                        send_error(&app.broker, &mut sink, None, &err).await;
                        bad_in_a_row += 1;
                        if bad_in_a_row >= MAX_BAD_IN_A_ROW {
                            send_close(&mut sink, close::RATE_LIMITED, "too many bad messages").await;
                            return;
                        }
                        continue;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => return,
                    Some(Err(e)) => {
                        if is_too_large(&e) {
                            send_close(&mut sink, close::TOO_LARGE, "message too large").await;
                        }
                        return;
                    }
                };
                let (id, decoded, result) = handle(&app.broker, conn, &who, &text);
                let ok = match result {
                    Ok(Some(reply)) => write_now(&mut sink, Utf8Bytes::from(reply.to_text(id.as_ref()))).await,
                    Ok(None) => true,
                    Err(err) => send_error(&app.broker, &mut sink, id.as_ref(), &err).await,
                };
                if !ok {
                    return;
                }
                // Only undecodable messages count: a stream of garbage closes
                // the connection, refused commands do not.
                bad_in_a_row = if decoded { 0 } else { bad_in_a_row + 1 };
                if bad_in_a_row >= MAX_BAD_IN_A_ROW {
                    send_close(&mut sink, close::RATE_LIMITED, "too many bad messages").await;
                    return;
                }
            }
        }
    }
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
    broker: &Broker,
    conn: ConnId,
    who: &Peer,
    text: &str,
) -> (Option<Id>, bool, Result<Option<ServerMsg>, Error>) {
    let env = match decode_client(text) {
        Ok(env) => env,
        Err(e) => {
            broker.metrics().message_received("invalid");
            return (e.id, false, Err(Error::bad_request(e.message)));
        }
    };
    broker.metrics().message_received(kind(&env.msg));
    let id = env.id;
    let result = match who {
        Peer::Agent(agent) => agent_command(broker, conn, agent, env.msg, id.as_ref()),
        Peer::Customer => customer_command(broker, conn, env.msg, id.as_ref()),
    };
    (id, true, result)
}

fn agent_command(
    broker: &Broker,
    conn: ConnId,
    agent: &Agent,
    msg: ClientMsg,
    id: Option<&Id>,
) -> Result<Option<ServerMsg>, Error> {
    let case = |view| ServerMsg::Case {
        case: CaseBody::Agent(Box::new(view)),
    };
    Ok(Some(match msg {
        ClientMsg::Hello { .. } => return Err(Error::bad_request("hello was already said")),
        ClientMsg::Subscribe { group, resume } => {
            broker.subscribe(conn, agent, group, resume, id)?;
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
            ServerMsg::Joined {
                code: view.code.clone(),
                case: CaseBody::Agent(Box::new(view)),
                resume_token: None,
            }
        }
        ClientMsg::Leave { code } => ServerMsg::Left {
            code: broker.leave(conn, code.as_deref())?,
        },
        ClientMsg::Close { code } => case(broker.close(Actor::Agent(agent), code.as_deref())?.0),
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
    broker: &Broker,
    conn: ConnId,
    msg: ClientMsg,
    id: Option<&Id>,
) -> Result<Option<ServerMsg>, Error> {
    Ok(Some(match msg {
        ClientMsg::Hello { .. } => return Err(Error::bad_request("hello was already said")),
        ClientMsg::Join {
            code,
            name,
            resume_token,
            ..
        } => {
            let (view, token) = broker.customer_join(conn, &code, name, resume_token)?;
            ServerMsg::Joined {
                code: view.code.clone(),
                case: CaseBody::Customer(view),
                resume_token: Some(token),
            }
        }
        ClientMsg::RequestHelp(req) => {
            let (view, token) = broker.request_help(Some(conn), req)?;
            ServerMsg::Joined {
                code: view.code.clone(),
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
            case: CaseBody::Customer(broker.close(Actor::Customer(conn), None)?.1),
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

/// The wire name of a client message, for metrics.
fn kind(msg: &ClientMsg) -> &'static str {
    match msg {
        ClientMsg::Hello { .. } => "hello",
        ClientMsg::Subscribe { .. } => "subscribe",
        ClientMsg::Unsubscribe {} => "unsubscribe",
        ClientMsg::CreateCase(_) => "create_case",
        ClientMsg::Assign { .. } => "assign",
        ClientMsg::Join { .. } => "join",
        ClientMsg::Leave { .. } => "leave",
        ClientMsg::Close { .. } => "close",
        ClientMsg::Delete { .. } => "delete",
        ClientMsg::Presence { .. } => "presence",
        ClientMsg::Chat { .. } => "chat",
        ClientMsg::Signal { .. } => "signal",
        ClientMsg::RequestHelp(_) => "request_help",
        ClientMsg::Ping {} => "ping",
    }
}

enum FirstFrame {
    Text(Utf8Bytes),
    Binary,
    TooLarge,
    Gone,
}

/// The first data frame of a connection.
async fn next_text(source: &mut Source) -> FirstFrame {
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

/// Writes `first` and whatever else is queued (up to a batch) with one
/// flush. False when the connection must end.
async fn write_batch(sink: &mut Sink, first: Outgoing, rx: &mut mpsc::Receiver<Outgoing>) -> bool {
    let mut item = first;
    for _ in 0..WRITE_BATCH {
        match item {
            Outgoing::Text(frame) => {
                if sink.feed(Message::Text(frame)).await.is_err() {
                    return false;
                }
            }
            Outgoing::Close(code, reason) => {
                send_close(sink, code, reason).await;
                return false;
            }
        }
        match rx.try_recv() {
            Ok(next) => item = next,
            Err(_) => break,
        }
    }
    sink.flush().await.is_ok()
}

async fn write_now(sink: &mut Sink, frame: Utf8Bytes) -> bool {
    sink.send(Message::Text(frame)).await.is_ok()
}

async fn send_error(broker: &Broker, sink: &mut Sink, id: Option<&Id>, err: &Error) -> bool {
    broker.metrics().error_sent(err.code);
    debug!(code = ?err.code, "error reply");
    let msg = ServerMsg::Error {
        code: err.code,
        message: err.message.clone(),
    };
    write_now(sink, Utf8Bytes::from(msg.to_text(id))).await
}

/// Sends a close frame; a short deadline so a dead peer cannot hold us.
async fn send_close(sink: &mut Sink, code: u16, reason: &'static str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }));
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = sink.send(frame).await;
        let _ = sink.close().await;
    })
    .await;
}
