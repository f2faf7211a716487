// The agent dashboard: sign-in with an agent token (kept for this tab only),
// the live queue from `subscribe` with exact resume after a dropped
// connection, the open case (viewed without a seat, or joined) and its chat,
// the agents panel, alerts for new cases, new cases by hand, and for admins
// the admin page (admin.js). It uses only the public protocol: the WebSocket
// for everything live (the directory's changes included), the HTTP API for
// the agents and groups lists, transcripts and the admin page.

import { byId, duration, el, fill, flash, isOpen, groupName } from './dom.js';
import { Socket } from './socket.js';
import { Alerts } from './alerts.js';
import { ScreenViewer } from './screenshare.js';
import { QueueView, topicOf, waitingCount } from './queue.js';
import { CasePanel } from './casepanel.js';
import { callApi } from './api.js';
import { AdminView } from './admin.js';

const TOKEN_KEY = 'casebroker.token';

const CONNECTION_TEXT = {
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Connection lost. Reconnecting…',
};

const state = {
  token: null,
  /** The signed-in agent, from `welcome`. */
  me: null,
  /** code → case (agent view), as the queue stream last said. */
  cases: new Map(),
  /**
   * code → when this dashboard saw a supporter first join the case (ms), or
   * null when one was already there the first time it saw the case.
   */
  answered: new Map(),
  /** Where this dashboard is in its company's stream. */
  epoch: null,
  seq: 0,
  /** id → agent status. */
  agents: new Map(),
  /** The offer waiting for this agent's answer: `{code, case, expiresAt}`. */
  offer: null,
  /** group id → its live numbers (`GET /v1/stats`, `stats` pushes). */
  stats: new Map(),
  /**
   * id → name of the groups this agent sees (all of the company's for an
   * admin), from `/v1/groups` and `groups` pushes; null when the broker
   * does not say (an older one): then the agent's own groups are used.
   */
  groups: null,
  /** code → { code, joined, ended, messages, lastCase }. */
  sessions: new Map(),
  openCode: null,
  presence: 'available',
};

let socket = null;
const alerts = new Alerts('Queue · casebroker');
const notice = byId('notice');

const queue = new QueueView({
  rows: byId('queue-rows'),
  counts: byId('counts'),
  empty: byId('queue-empty'),
  status: byId('filter-status'),
  group: byId('filter-group'),
  mine: byId('filter-mine'),
  onAction: (action, code) => {
    if (action === 'view') view(code);
    else take(code, action === 'takeover');
  },
  onFilter: () => render(),
});

// What the panel's buttons do; their outcome is said in the panel itself.
const panel = new CasePanel(byId('case-panel'), {
  assign: (code, assignee) =>
    command({ type: 'assign', code, assignee }, `Case ${code} assigned to ${agentName(assignee)}.`, true),
  transfer: (code, group) =>
    command({ type: 'transfer', code, group }, `Case ${code} moved to ${groupName(state.groups, group)}.`, true),
  unassign: (code) =>
    command({ type: 'assign', code, assignee: null }, `Case ${code} is back in the queue.`, true),
  close: (code) => command({ type: 'close', code }, `Case ${code} closed.`, true),
  remove: (code) => {
    if (!window.confirm(`Delete case ${code} and its transcript? This cannot be undone.`)) return;
    command({ type: 'delete', code }, `Case ${code} deleted.`, true);
  },
  leave: async (code) => {
    if (await command({ type: 'leave', code }, `You left the session of ${code}.`, true)) {
      screen.ended(code);
      session(code).joined = false;
      render();
    }
  },
  take: (code, takeover) => take(code, takeover, true),
  invite: (code, agent) =>
    command({ type: 'invite', code, agent }, `${agentName(agent)} is asked to help with ${code}.`, true),
  watch: async (code, on) => {
    const reply = on
      ? await command({ type: 'watch', code }, `Watching ${code}: the customer is not told.`, true)
      : await command({ type: 'unwatch', code }, `You stopped watching ${code}.`, true);
    if (!reply) return;
    const s = session(code);
    s.watching = on;
    s.ended = null;
    render();
    if (on) await loadTranscript(code);
  },
  send: async (code, text, internal) => {
    const reply = await command({ type: internal ? 'whisper' : 'chat', code, text }, null, true);
    if (!reply) return false;
    const from = { role: 'agent', name: state.me.name };
    const s = session(code);
    const line = { from, text, at: new Date().toISOString(), mine: true, internal: Boolean(internal) };
    s.messages.push(line);
    if (s.incoming) s.incoming.push(line);
    render();
    return true;
  },
  hide: () => {
    state.openCode = null;
    render();
    byId('queue-heading').focus();
  },
});

function agentName(id) {
  return state.agents.get(id)?.name || id;
}

function session(code) {
  let s = state.sessions.get(code);
  if (!s) {
    s = { code, joined: false, ended: null, messages: [], lastCase: null, incoming: null };
    state.sessions.set(code, s);
  }
  return s;
}

/**
 * Tells the outcome of an action: in the open case's own status line when
 * the action came from it, else in the line under the header. Neither
 * covers anything.
 */
function say(text, inPanel) {
  if (inPanel && panel.shown) panel.say(text);
  else flash(notice, text);
}

/** Runs a command; says `done` or the refusal. Resolves with the reply or null. */
async function command(msg, done, inPanel = false) {
  try {
    const reply = await socket.request(msg);
    if (done) say(done, inPanel);
    return reply;
  } catch (e) {
    say(`Could not ${msg.type.replace('_', ' ')}: ${e.message}`, inPanel);
    return null;
  }
}

/** A GET of the HTTP API as the signed-in agent; null when refused. */
async function api(path) {
  try {
    return await callApi(state.token, 'GET', path);
  } catch {
    return null;
  }
}

const admin = new AdminView(byId('admin'), {
  call: (method, path, body) => callApi(state.token, method, path, body),
  me: () => state.me,
  close: () => showAdmin(false),
});

/** Switches the main area between the queue and the admin page. */
function showAdmin(on) {
  const toggle = byId('admin-toggle');
  toggle.setAttribute('aria-pressed', String(on));
  byId('app').hidden = on;
  if (on) admin.open();
  else {
    admin.hide();
    if (state.me) byId('queue-heading').focus();
  }
}

// ---- rendering

let renderQueued = false;

/** Redraws soon, once for a burst of changes. */
function render() {
  if (renderQueued) return;
  renderQueued = true;
  setTimeout(() => {
    renderQueued = false;
    draw();
  }, 0);
}

function draw() {
  if (!state.me) return;
  queue.render(state);
  panel.render(state);
  renderAgents();
  renderStats();
  alerts.setWaiting(waitingCount(state.cases.values()));
}

function renderAgents() {
  const list = [...state.agents.values()];
  fill(
    byId('agents'),
    list.map((a) =>
      el(
        'li',
        { class: `agent ${a.online ? 'online' : 'offline'} ${a.presence}` },
        el('span', { class: 'dot', 'aria-hidden': 'true' }),
        el('span', { class: 'name', text: a.id === state.me.id ? `${a.name} (you)` : a.name }),
        el('span', { class: 'state', text: a.online ? (a.presence === 'away' ? 'Away' : 'Available') : 'Offline' }),
        el('span', { class: 'load', text: `${a.open_cases} / ${a.max_cases} cases` }),
      ),
    ),
  );
}

/** Each group's live numbers, as the broker last pushed them: a tile each. */
function renderStats() {
  const secs = (s) => (s === null || s === undefined ? '—' : duration(s * 1000));
  const item = (label, value, cls) =>
    el('div', {}, el('dt', { text: label }), el('dd', { class: cls || '', text: value }));
  const tiles = [...state.stats.values()].map((g) =>
    el(
      'li',
      { class: 'stat-tile', dataset: { group: g.group } },
      el('h3', { text: groupName(state.groups, g.group) }),
      el(
        'dl',
        {},
        item('Waiting', String(g.waiting), 'waiting'),
        item('Longest wait', secs(g.longest_wait_s)),
        item('Agents available', `${g.agents_available} of ${g.agents_online} online`),
        item('Wait, last hour', `median ${secs(g.wait_p50_s)} · 90 % ${secs(g.wait_p90_s)}`),
        item('SLA met, last hour', g.sla_met_ratio === null ? '—' : `${Math.round(g.sla_met_ratio * 100)} %`),
      ),
    ),
  );
  fill(byId('stats-tiles'), tiles);
}

function showConnection(s) {
  const node = byId('connection');
  node.textContent = CONNECTION_TEXT[s] || '';
  node.dataset.state = s;
  node.hidden = !CONNECTION_TEXT[s];
}

function showPresence() {
  byId('presence-available').setAttribute('aria-pressed', String(state.presence === 'available'));
  byId('presence-away').setAttribute('aria-pressed', String(state.presence === 'away'));
}

// ---- the live queue

/**
 * Notes when a supporter first joins a case, for its wait: `prev` is the
 * case as last seen (or undefined), `at` when the change happened. A case
 * first seen with a supporter already in it was answered at a time this
 * dashboard cannot know.
 */
function noteSupporter(prev, next, at) {
  if (!next.supporter_connected || state.answered.has(next.code)) return;
  const seenWaiting = prev !== undefined && !prev.supporter_connected;
  state.answered.set(next.code, seenWaiting && Number.isFinite(at) ? at : null);
}

/** Subscribes, resuming exactly where this dashboard left off when it can. */
async function subscribe() {
  const msg = { type: 'subscribe' };
  if (state.epoch !== null) msg.resume = { epoch: state.epoch, seq: state.seq };
  const reply = await socket.request(msg);
  if (reply.type === 'snapshot') {
    // When a supporter joined while this dashboard was away is not known.
    for (const c of reply.cases) noteSupporter(undefined, c, NaN);
    state.cases = new Map(reply.cases.map((c) => [c.code, c]));
    state.epoch = reply.epoch;
    state.seq = reply.seq;
  }
  // After `resumed`, the missed events follow; `seq` moves with each.
  document.body.dataset.sync = reply.type;
  render();
}

/** True when this dashboard watches `group` (admins watch every group). */
function seesGroup(group) {
  if (state.me.admin) return true;
  return state.groups ? state.groups.has(group) : state.me.groups.includes(group);
}

function onEvent(ev) {
  if (ev.epoch !== state.epoch || ev.seq <= state.seq) return;
  state.seq = ev.seq;
  const c = ev.case;
  if (ev.action === 'deleted') {
    state.cases.delete(c.code);
    state.answered.delete(c.code);
    const s = state.sessions.get(c.code);
    if (s) {
      s.lastCase = c;
      s.ended = 'deleted';
      s.joined = false;
    }
  } else if (!seesGroup(c.group)) {
    // Transferred to a group this dashboard does not watch: it has left
    // the view (an open session with it goes on until it ends).
    state.cases.delete(c.code);
    state.answered.delete(c.code);
  } else {
    // The event's `updated_at` is when the supporter joined, on the
    // broker's clock, as `created_at` is.
    noteSupporter(state.cases.get(c.code), c, Date.parse(c.updated_at));
    state.cases.set(c.code, c);
    const s = state.sessions.get(c.code);
    if (s) s.lastCase = c;
  }
  if (state.offer?.code === c.code && c.offer?.agent !== state.me.id) hideOffer();
  if (ev.action === 'created' && isOpen(c) && !c.assignee && c.created_by !== state.me.id) {
    const who = c.customer?.name ? ` from ${c.customer.name}` : '';
    alerts.newCase('A new case is waiting', `${topicOf(c).topic || c.code}${who}`);
  }
  render();
}

// ---- sessions

/** Loads the kept chat lines of a case, keeping lines pushed meanwhile. */
async function loadTranscript(code) {
  const s = session(code);
  s.incoming = [];
  const body = await api(`/v1/cases/${encodeURIComponent(code)}/transcript`);
  const pushed = s.incoming;
  s.incoming = null;
  if (!body) return;
  const kept = body.messages.map((m) => ({
    ...m,
    mine: m.from?.role === 'agent' && m.from?.name === state.me.name,
  }));
  const known = (m) =>
    kept.some((k) => k.from?.role === m.from?.role && k.text === m.text &&
      Math.abs(Date.parse(k.at) - Date.parse(m.at)) < 10_000);
  s.messages = kept.concat(pushed.filter((m) => !known(m)));
  render();
}

// ---- the customer's shared screen

const screen = new ScreenViewer({
  send: (code, data) => socket.request({ type: 'signal', code, data }),
  onChange: () => renderScreen(),
});

/** The screen a customer shares, beside the case panel. */
function renderScreen() {
  const share = screen.share;
  const box = byId('screen');
  const video = byId('screen-video');
  box.hidden = !share?.stream;
  if (video.srcObject !== (share?.stream || null)) {
    video.srcObject = share?.stream || null;
    if (share?.stream) video.play().catch(() => {});
  }
  byId('screen-pointer').hidden = true;
  if (share) byId('screen-case').textContent = `Case ${share.code}${customerOf(share.code)}`;
}

function customerOf(code) {
  const name = state.cases.get(code)?.customer?.name;
  return name ? `, ${name}` : '';
}

/** A click on the picture: the customer sees a marker there. */
function pointAt(ev) {
  const video = byId('screen-video');
  const box = video.getBoundingClientRect();
  // The picture inside the element (letterboxed to keep its shape).
  const scale = Math.min(box.width / (video.videoWidth || box.width), box.height / (video.videoHeight || box.height));
  const w = (video.videoWidth || box.width) * scale;
  const h = (video.videoHeight || box.height) * scale;
  const left = (box.width - w) / 2;
  const top = (box.height - h) / 2;
  const x = (ev.clientX - box.left - left) / w;
  const y = (ev.clientY - box.top - top) / h;
  if (x < 0 || x > 1 || y < 0 || y > 1) return;
  screen.point(x, y);
  const marker = byId('screen-pointer');
  marker.style.left = `${left + x * w}px`;
  marker.style.top = `${top + y * h}px`;
  marker.hidden = false;
}

// ---- offers

let offerTick = null;

/** Shows the pending offer and counts down to its end. */
function showOffer() {
  const o = state.offer;
  if (!o) return hideOffer();
  const { topic } = topicOf(o.case);
  const who = o.case.customer?.name ? ` from ${o.case.customer.name}` : '';
  byId('offer-text').textContent = `${o.code}: ${topic || 'a new case'}${who}, in ${groupName(state.groups, o.case.group)}.`;
  byId('offer').hidden = false;
  const tick = () => {
    const left = Math.ceil((o.expiresAt - Date.now()) / 1000);
    if (left <= 0) {
      hideOffer();
      say(`The offer of case ${o.code} ran out.`, false);
      return;
    }
    byId('offer-countdown').textContent = `${left} s`;
  };
  clearInterval(offerTick);
  offerTick = setInterval(tick, 250);
  tick();
}

function hideOffer() {
  clearInterval(offerTick);
  offerTick = null;
  state.offer = null;
  byId('offer').hidden = true;
}

/** Answers the pending offer: `accept` opens the case, joined. */
async function answerOffer(type) {
  const o = state.offer;
  if (!o) return;
  hideOffer();
  const reply = await command({ type, code: o.code }, type === 'decline' ? `Declined case ${o.code}.` : null);
  if (reply && type === 'accept') await take(o.code, false);
}

/** Joins a case (claiming it when unassigned) and opens it. */
async function take(code, takeover, inPanel = false) {
  const msg = { type: 'join', code };
  if (takeover) {
    if (!window.confirm(`Take case ${code} over from ${agentName(state.cases.get(code)?.assignee)}?`)) return;
    msg.takeover = true;
  }
  const reply = await command(msg, null, inPanel);
  if (!reply) return;
  const s = session(code);
  s.joined = true;
  s.ended = null;
  s.lastCase = reply.case;
  screen.iceServers = reply.ice_servers || [];
  state.openCode = code;
  render();
  await Promise.all([loadTranscript(code), loadRouting(code)]);
  setTimeout(() => byId('chat-message')?.focus(), 0);
}

/**
 * Opens a case without joining its session: its details from the queue and
 * the transcript over HTTP. No seat is taken and the customer is not told.
 */
async function view(code) {
  state.openCode = code;
  session(code).lastCase = state.cases.get(code) || null;
  render();
  await Promise.all([loadTranscript(code), loadRouting(code)]);
}

/** Why automation gave the case to whom, for the panel. */
async function loadRouting(code) {
  const body = await api(`/v1/cases/${encodeURIComponent(code)}/routing`);
  if (!body) return;
  session(code).routing = body.decisions;
  render();
}

/** After a reconnection: takes the seats this dashboard held again. */
async function rejoin() {
  for (const s of state.sessions.values()) {
    if (!s.joined || s.ended) continue;
    try {
      await socket.request({ type: 'join', code: s.code });
      await loadTranscript(s.code);
    } catch (e) {
      if (e.code === 'unavailable') throw e;
      s.joined = false;
      say(`Could not rejoin case ${s.code}: ${e.message}`, s.code === state.openCode);
    }
  }
}

function onPush(msg) {
  switch (msg.type) {
    case 'event':
      onEvent(msg);
      break;
    case 'agent':
      if (msg.agent.removed) state.agents.delete(msg.agent.id);
      else state.agents.set(msg.agent.id, msg.agent);
      admin.refresh('agents');
      render();
      break;
    case 'groups':
      setGroups(msg.groups);
      admin.refresh('groups');
      break;
    case 'stats':
      for (const g of msg.groups) state.stats.set(g.group, g);
      render();
      break;
    case 'status': {
      // The customer's page reloaded or lost its connection: its share is over.
      if (!msg.customer_connected) screen.ended(msg.code);
      const c = state.cases.get(msg.code);
      if (c) {
        noteSupporter(c, { code: msg.code, supporter_connected: msg.supporter_connected }, Date.now());
        c.status = msg.status;
        c.customer_connected = msg.customer_connected;
        c.supporter_connected = msg.supporter_connected;
      }
      render();
      break;
    }
    case 'signal':
      screen.onSignal(msg.code, msg.data);
      break;
    case 'chat': {
      const s = session(msg.code);
      const line = { from: msg.from, text: msg.text, at: msg.at, mine: false, internal: Boolean(msg.internal) };
      s.messages.push(line);
      if (s.incoming) s.incoming.push(line);
      render();
      break;
    }
    case 'offer': {
      // Automation offers a case: answer before it runs out.
      state.offer = { code: msg.code, case: msg.case, expiresAt: Date.parse(msg.expires_at) };
      const { topic } = topicOf(msg.case);
      alerts.newCase('A case is offered to you', topic || msg.code);
      showOffer();
      break;
    }
    case 'invited': {
      // Asked to help: the case opens here, to join as a helper.
      const s = session(msg.code);
      s.lastCase = msg.case;
      alerts.newCase('You are asked to help', `${agentName(msg.by)} asks for help with ${msg.code}`);
      say(`${agentName(msg.by)} asks you to help with case ${msg.code}.`, false);
      if (!state.openCode) state.openCode = msg.code;
      render();
      break;
    }
    case 'ended': {
      screen.ended(msg.code);
      const s = session(msg.code);
      s.ended = msg.reason;
      s.joined = false;
      s.watching = false;
      render();
      break;
    }
    case 'error':
      flash(notice, msg.message);
      break;
    default:
      break;
  }
}

async function onWelcome(welcome) {
  state.me = welcome.agent;
  fill(byId('me'), state.me.name, state.me.admin ? el('span', { class: 'role', text: 'admin' }) : null);
  byId('admin-toggle').hidden = !state.me.admin;
  if (!state.me.admin && admin.shown) showAdmin(false);
  fillGroups();
  await subscribe();
  if (state.presence === 'away') await socket.request({ type: 'presence', state: 'away' });
  const [agents, groups, stats] = await Promise.all([api('/v1/agents'), api('/v1/groups'), api('/v1/stats')]);
  if (agents) state.agents = new Map(agents.agents.map((a) => [a.id, a]));
  if (stats) state.stats = new Map(stats.groups.map((g) => [g.group, g]));
  // An older broker has no /v1/groups: the agent's own groups, by id.
  if (groups) setGroups(groups.groups);
  await rejoin();
  render();
}

// ---- sign-in and the controls

function setGroups(groups) {
  state.groups = new Map(groups.map((g) => [g.id, g.name]));
  fillGroups();
  render();
}

/** The new-case form's groups: every group for an admin, else the agent's own. */
function fillGroups() {
  const select = byId('nc-group');
  const keep = select.value;
  const ids = state.groups ? [...state.groups.keys()] : state.me.groups;
  fill(select, ids.map((g) => el('option', { value: g, text: groupName(state.groups, g) })));
  if (ids.includes(keep)) select.value = keep;
}

function start(token) {
  state.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  byId('signin').hidden = true;
  byId('app').hidden = false;
  byId('account').hidden = false;
  socket = new Socket({
    hello: () => ({ type: 'hello', role: 'agent', token: state.token }),
    onWelcome,
    onPush,
    onState: showConnection,
    onRefused: (e) => signOut(e.code === 'unauthorized' ? 'This token was not accepted.' : e.message),
  });
  socket.start();
}

function signOut(error) {
  hideOffer();
  screen.close(false);
  socket?.stop();
  socket = null;
  sessionStorage.removeItem(TOKEN_KEY);
  Object.assign(state, {
    token: null, me: null, cases: new Map(), answered: new Map(), epoch: null, seq: 0, agents: new Map(), stats: new Map(), offer: null,
    groups: null, sessions: new Map(), openCode: null, presence: 'available',
  });
  showAdmin(false);
  admin.reset();
  byId('admin-toggle').hidden = true;
  showPresence();
  panel.render(state);
  fill(byId('queue-rows'));
  alerts.setWaiting(0);
  byId('connection').hidden = true;
  byId('app').hidden = true;
  byId('account').hidden = true;
  byId('signin').hidden = false;
  byId('signin-error').textContent = error || '';
  const field = byId('token');
  field.value = '';
  field.focus();
}

async function setPresence(presence) {
  const reply = await command({ type: 'presence', state: presence });
  if (reply) {
    state.presence = reply.state;
    showPresence();
  }
}

async function createCase(ev) {
  ev.preventDefault();
  const form = ev.target;
  const value = (id) => byId(id).value.trim();
  const msg = { type: 'create_case', group: byId('nc-group').value, name: value('nc-name') };
  if (value('nc-description')) msg.description = value('nc-description');
  const customer = {};
  if (value('nc-customer')) customer.name = value('nc-customer');
  if (value('nc-email')) customer.email = value('nc-email');
  if (Object.keys(customer).length) msg.customer = customer;
  const reply = await command(msg);
  if (reply) {
    flash(notice, `Case ${reply.case.code} created.`);
    form.reset();
    fillGroups();
  }
}

function wire() {
  byId('signin-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const token = byId('token').value.trim();
    if (!token) return;
    alerts.unlock();
    start(token);
  });
  byId('sign-out').addEventListener('click', () => signOut());
  byId('offer-accept').addEventListener('click', () => answerOffer('accept'));
  byId('screen-video').addEventListener('click', pointAt);
  byId('screen-full').addEventListener('click', () => byId('screen-video').requestFullscreen?.().catch(() => {}));
  byId('screen-stop').addEventListener('click', () => screen.close());
  byId('offer-decline').addEventListener('click', () => answerOffer('decline'));
  byId('presence-available').addEventListener('click', () => setPresence('available'));
  byId('presence-away').addEventListener('click', () => setPresence('away'));
  const mute = byId('mute');
  mute.checked = alerts.muted;
  mute.addEventListener('change', () => {
    alerts.setMuted(mute.checked);
    alerts.unlock();
  });
  const ask = byId('notify');
  ask.hidden = !alerts.canAskForNotifications;
  ask.addEventListener('click', async () => {
    await alerts.askForNotifications();
    ask.hidden = !alerts.canAskForNotifications;
  });
  byId('new-case-form').addEventListener('submit', createCase);
  byId('admin-toggle').addEventListener('click', () => showAdmin(!admin.shown));
  // Sound may start only after a gesture; a reload signs in without one.
  document.addEventListener('pointerdown', () => alerts.unlock(), { once: true });
  document.addEventListener('keydown', () => alerts.unlock(), { once: true });
  setInterval(() => queue.tick(), 1000);
}

wire();
// A handle for diagnosing the live connection from the browser console.
window.casebroker = {
  drop: (holdMs) => socket?.drop(holdMs),
  get state() {
    return state;
  },
};
const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) start(saved);
else byId('token').focus();
