// The customer help page at /help/{module_key}: asks for help with the
// module key (`request_help`), shows the session code, the place in line,
// who took the case, the chat, and a clear end. The code and resume token
// are kept for this tab, so a reload (or a dropped connection) takes the
// customer back to its seat with `join {code, resume_token}`.

import { byId, chatLine, fill } from './dom.js';
import { Socket } from './socket.js';
import { ScreenSender } from './screenshare.js';

const moduleKey = decodeURIComponent(location.pathname.replace(/^\/help\//, '').replace(/\/+$/, ''));
const STORE_KEY = `casebroker.help.${moduleKey}`;
const KEPT_LINES = 200;

const ENDED_TEXT = {
  closed: 'Your case was closed and this session has ended. Thank you for contacting us.',
  expired: 'This session has ended: the case expired before it was closed.',
  deleted: 'This session has ended: the case was removed.',
  gone: 'This session has ended.',
};

const REQUEST_ERRORS = {
  unauthorized: 'This help link is not valid: the server does not know it. Check the link you were given.',
  rate_limited: 'Too many help requests were made from your network. Please wait a minute and try again.',
  too_large: 'Your name or description is too long. Please shorten it.',
  bad_request: 'The request could not be read. Please check what you typed.',
};

/** What the tab keeps: `{code, token, name, messages}`. */
let saved = load();
/** `{name, description}` while a request for help is being sent. */
let asking = null;
let socket = null;
const view = {
  status: null,
  supporter: null,
  supporterConnected: false,
  wasConnected: false,
  position: null,
  estimate: null,
  ended: null,
};

function load() {
  try {
    const s = JSON.parse(sessionStorage.getItem(STORE_KEY));
    return s && s.code && s.token ? { messages: [], ...s } : null;
  } catch {
    return null;
  }
}

function store() {
  if (!saved) {
    sessionStorage.removeItem(STORE_KEY);
    return;
  }
  saved.messages = saved.messages.slice(-KEPT_LINES);
  sessionStorage.setItem(STORE_KEY, JSON.stringify(saved));
}

// ---- rendering

function showConnection(state) {
  const node = byId('connection');
  const text = state === 'reconnecting' ? 'Connection lost. Reconnecting…' : state === 'connecting' ? 'Connecting…' : '';
  node.textContent = text;
  node.dataset.state = state;
  node.hidden = !text;
}

/**
 * Where the customer stands, promising nothing the page does not know: an
 * agent is named once the case is assigned, and said to be helping only
 * while in the session. Whether an assigned agent is online is not told to
 * customers, so no arrival is promised.
 */
function statusText() {
  const name = view.supporter?.name;
  if (view.supporterConnected && name) return `${name} has joined and is helping you.`;
  if (name && view.wasConnected) {
    return `${name} has left the session. Please keep this page open: you will see here when ${name} is back.`;
  }
  if (name) {
    return `Your request is assigned to ${name}, who has not joined yet. ` +
      `Please keep this page open: you will see here when ${name} joins.`;
  }
  if (view.position) {
    return `Waiting for an agent. You are number ${view.position} in line.${waitText(view.estimate)}`;
  }
  return 'Waiting for an agent…';
}

/** The estimated wait in words, or nothing while it is unknown. */
function waitText(seconds) {
  if (seconds === null || seconds === undefined) return '';
  if (seconds < 60) return ' The wait should be under a minute.';
  const minutes = Math.round(seconds / 60);
  return ` The wait should be about ${minutes} minute${minutes === 1 ? '' : 's'}.`;
}

// ---- screen sharing

const screen = new ScreenSender({
  send: (data) => (socket ? socket.request({ type: 'signal', data }) : Promise.reject(new Error('not connected'))),
  onChange: () => renderShare(),
});

const SHARE_ENDED = {
  refused: 'You did not share your screen.',
  stopped: 'You stopped sharing your screen.',
  agent: 'The agent stopped watching your screen.',
  left: 'The agent left the session: your screen is no longer shared.',
  failed: 'Your screen could not be shared. You can try again.',
};

/**
 * The share controls: offered once an agent is in the session, with what
 * is happening in words, the customer's own preview and the agent's
 * pointer drawn over it.
 */
function renderShare() {
  const inSession = Boolean(saved) && !view.ended;
  const box = byId('share');
  box.hidden = !inSession || (!view.supporterConnected && !screen.sharing);
  if (box.hidden) return;
  const name = view.supporter?.name || 'The agent';
  const text = {
    idle: SHARE_ENDED[screen.ended] || `${name} can see your screen if you share it. Nothing is shared until you choose.`,
    offering: 'Sharing your screen… waiting for the agent to connect.',
    watched: `You are sharing your screen. ${name} is watching.`,
  }[screen.state];
  byId('share-status').textContent = text;
  byId('share-start').hidden = screen.sharing;
  byId('share-stop').hidden = !screen.sharing;
  const preview = byId('share-preview');
  byId('share-view').hidden = !screen.sharing;
  if (preview.srcObject !== screen.stream) {
    preview.srcObject = screen.stream;
    if (screen.stream) preview.play().catch(() => {});
  }
  const marker = byId('share-pointer');
  marker.hidden = !screen.pointer;
  if (screen.pointer) {
    marker.style.left = `${screen.pointer.x * 100}%`;
    marker.style.top = `${screen.pointer.y * 100}%`;
  }
}

function render() {
  renderShare();
  const inSession = Boolean(saved) || Boolean(view.ended);
  byId('request').hidden = inSession;
  byId('session').hidden = !inSession;
  if (!inSession) return;
  byId('code').textContent = saved?.code || view.code || '';
  const ended = view.ended;
  byId('status').textContent = ended ? '' : statusText();
  byId('status').hidden = Boolean(ended);
  byId('ended').hidden = !ended;
  byId('ended').textContent = ended ? ENDED_TEXT[ended] || ENDED_TEXT.gone : '';
  byId('chat-form').hidden = Boolean(ended);
  byId('end').hidden = Boolean(ended);
  byId('again').hidden = !ended;
  const lines = saved?.messages || view.messages || [];
  const log = byId('chat-log');
  if (log.children.length > lines.length) fill(log);
  for (const line of lines.slice(log.children.length)) log.appendChild(chatLine(line, { mine: line.mine }));
  log.scrollTop = log.scrollHeight;
}

// ---- the connection

function applyCase(c) {
  // The agent left or changed: the share was for that agent.
  const changed = c.supporter?.name !== view.supporter?.name;
  if (screen.sharing && (!c.supporter_connected || changed)) screen.stop('left', false);
  view.status = c.status;
  view.supporter = c.supporter;
  view.supporterConnected = c.supporter_connected;
  if (c.supporter_connected) view.wasConnected = true;
}

function endSession(reason) {
  screen.stop('stopped', false);
  socket?.stop();
  socket = null;
  view.ended = reason;
  view.code = saved?.code || view.code;
  view.messages = saved?.messages || view.messages;
  saved = null;
  store();
  render();
  byId('again').focus();
}

async function onWelcome() {
  if (saved) {
    try {
      const r = await socket.request({ type: 'join', code: saved.code, resume_token: saved.token });
      screen.iceServers = r.ice_servers || [];
      applyCase(r.case);
      render();
    } catch (e) {
      if (e.code === 'unavailable') throw e;
      if (e.code === 'not_found') endSession('gone');
      else byId('session-error').textContent = `Could not rejoin the session: ${e.message}`;
    }
    return;
  }
  if (!asking) return;
  const msg = { type: 'request_help', module: moduleKey, name: asking.name, description: asking.description };
  try {
    const r = await socket.request(msg);
    saved = { code: r.code, token: r.resume_token, name: asking.name, messages: [] };
    screen.iceServers = r.ice_servers || [];
    asking = null;
    store();
    applyCase(r.case);
    render();
    byId('message').focus();
  } catch (e) {
    // Not retried on its own: a lost answer may hide a created case.
    socket.stop();
    socket = null;
    asking = null;
    byId('get-help').disabled = false;
    if (e.code === 'closed') {
      showClosed(e.message, e.opensAt);
      return;
    }
    byId('request-error').textContent =
      e.code === 'unavailable'
        ? 'The connection was lost before your request was confirmed. Please try again.'
        : REQUEST_ERRORS[e.code] || e.message;
  }
}

function onPush(msg) {
  switch (msg.type) {
    case 'status':
      applyCase(msg);
      if (msg.supporter) view.position = null;
      break;
    case 'queue':
      view.position = msg.position;
      view.estimate = msg.estimated_wait_s ?? null;
      break;
    case 'signal':
      screen.onSignal(msg.data);
      return;
    case 'chat':
      if (saved) {
        saved.messages.push({ from: msg.from, text: msg.text, at: msg.at, mine: false });
        store();
      }
      break;
    case 'ended':
      endSession(msg.reason);
      return;
    default:
      return;
  }
  render();
}

function connect() {
  socket = new Socket({
    hello: () => ({ type: 'hello', role: 'customer' }),
    onWelcome,
    onPush,
    onState: showConnection,
    onRefused: (e) => {
      byId('session-error').textContent = e.message;
    },
  });
  socket.start();
}

// ---- the controls

byId('request-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const name = byId('name').value.trim();
  const description = byId('description').value.trim();
  if (!name || !description) return;
  byId('request-error').textContent = '';
  byId('get-help').disabled = true;
  asking = { name, description };
  connect();
});

byId('share-start').addEventListener('click', () => screen.start());
byId('share-stop').addEventListener('click', () => screen.stop('stopped'));

byId('chat-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = byId('message');
  const text = input.value.trim();
  if (!text || !socket) return;
  byId('session-error').textContent = '';
  try {
    await socket.request({ type: 'chat', text });
    const line = { from: { role: 'customer', name: saved?.name }, text, at: new Date().toISOString(), mine: true };
    saved?.messages.push(line);
    store();
    input.value = '';
    render();
  } catch (e) {
    byId('session-error').textContent = `Not sent: ${e.message}`;
  }
});

byId('message').addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    byId('chat-form').requestSubmit();
  }
});

byId('end').addEventListener('click', async () => {
  if (!socket || !window.confirm('End this support session? The case will be closed.')) return;
  try {
    await socket.request({ type: 'close' });
  } catch (e) {
    byId('session-error').textContent = `Could not end the session: ${e.message}`;
  }
});

byId('again').addEventListener('click', () => {
  Object.assign(view, {
    status: null,
    supporter: null,
    supporterConnected: false,
    wasConnected: false,
    position: null,
    estimate: null,
    ended: null,
    code: null,
    messages: null,
  });
  fill(byId('chat-log'));
  byId('get-help').disabled = false;
  byId('description').value = '';
  render();
  byId('name').focus();
});

let reopen = null;

/**
 * Outside the group's opening hours: the company's message and when it
 * opens (in the customer's own time), as text; the request waits until
 * then.
 */
function showClosed(message, opensAt) {
  const at = opensAt ? new Date(opensAt) : null;
  const when = at
    ? ` We open again ${at.toLocaleString([], { weekday: 'long', day: 'numeric', month: 'long', hour: '2-digit', minute: '2-digit' })}.`
    : '';
  const node = byId('closed');
  node.textContent = `${message || 'We are closed now.'}${when}`;
  node.hidden = false;
  byId('get-help').disabled = true;
  clearTimeout(reopen);
  if (at) {
    // Open again: the form works (at most a timer's reach ahead).
    reopen = setTimeout(() => {
      node.hidden = true;
      byId('get-help').disabled = false;
    }, Math.min(Math.max(at - Date.now(), 0), 2 ** 31 - 1));
  }
}

/** Names the company this help link belongs to (as text, never HTML). */
async function showCompany() {
  try {
    const resp = await fetch(`/v1/modules/${encodeURIComponent(moduleKey)}`);
    if (!resp.ok) return;
    const info = await resp.json();
    const name = info?.company?.name;
    if (typeof name !== 'string' || !name) return;
    const el = byId('company');
    el.textContent = `from ${name}`;
    el.hidden = false;
    document.title = `Get help from ${name} · casebroker`;
    if (info.closed && !saved) showClosed(info.closed.message, info.closed.opens_at);
  } catch {
    // The page works without it.
  }
}

render();
showCompany();
if (saved) connect();
else byId('name').focus();
