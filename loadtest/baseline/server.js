// The Node.js baseline for the fanout scenario: a minimal broadcast server
// on the `ws` package. One publisher (the load tester's driver) changes
// cases; the server stamps each change with the next `seq` and sends the
// same JSON event, serialised once, to every subscriber. It speaks just
// enough of casebroker's wire contract (hello, subscribe, create_case,
// assign, close, delete, ping) for `casebroker-loadtest fanout` to run
// unchanged against it. No auth, no persistence, no limits: a floor to
// compare the broker's fan-out with, not a broker.
//
//   node server.js [--host 127.0.0.1] [--port 8090] [--cork] [--stop-on-eof]
//
// --cork: the first event of an event-loop turn for a subscriber corks its
// socket, and one setImmediate at the end of the turn uncorks them all, so
// the events of one turn leave in one write per socket (plain mode, the
// default, writes every event on its own). --stop-on-eof: also stop when
// stdin closes (how casebroker-loadtest fanout --baseline takes it along).
'use strict';

const crypto = require('crypto');
const { WebSocketServer } = require('ws');

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

const host = arg('--host', '127.0.0.1');
const port = Number(arg('--port', '8090'));
const cork = process.argv.includes('--cork');
if (!/^(127\.\d+\.\d+\.\d+|localhost|::1)$/.test(host)) {
  console.error(`refusing --host ${host}: loopback only`);
  process.exit(2);
}

const epoch = crypto.randomBytes(8).toString('hex');
let seq = 0;
const cases = new Map(); // code -> case object
const subscribers = new Set();

const now = () => new Date().toISOString();
const later = (ms) => new Date(Date.now() + ms).toISOString();

function newCode() {
  for (;;) {
    const d = String(crypto.randomInt(0, 1e8)).padStart(8, '0');
    const code = `s${d.slice(0, 2)}-${d.slice(2, 5)}-${d.slice(5)}`;
    if (!cases.has(code)) return code;
  }
}

// The company id of casebroker-load.toml: with it the events are the size
// of casebroker's, byte for byte.
const company = 'load';

// Same fields, in the same order, as casebroker's agent view of a case.
function makeCase(msg, by) {
  const t = now();
  return {
    code: newCode(), company, group: msg.group || 'support',
    name: msg.name || '', description: msg.description || '',
    customer: { name: null, email: null }, source: 'manual', created_by: by,
    assignee: msg.assignee || null, status: 'new',
    customer_connected: false, supporter_connected: false,
    created_at: t, updated_at: t, assigned_at: msg.assignee ? t : null,
    assigned_by: msg.assignee ? by : null, expires_at: later(24 * 3600 * 1000),
    closed_at: null, closed_by: null,
  };
}

// Sockets corked in this event-loop turn (--cork), uncorked at its end.
const corked = new Set();
function uncorkAll() {
  for (const s of corked) s._socket.uncork();
  corked.clear();
}

// One event, serialised once, the same bytes for every subscriber.
function publish(action, c) {
  seq += 1;
  const frame = Buffer.from(JSON.stringify({ type: 'event', epoch, seq, action, case: c }));
  for (const s of subscribers) {
    if (cork && !corked.has(s)) {
      if (corked.size === 0) setImmediate(uncorkAll);
      corked.add(s);
      s._socket.cork();
    }
    s.send(frame, { binary: false });
  }
}

function reply(ws, id, body) {
  ws.send(JSON.stringify(id === undefined ? body : { id, ...body }));
}

function error(ws, id, code, message) {
  reply(ws, id, { type: 'error', code, message });
}

const wss = new WebSocketServer({ host, port, perMessageDeflate: false, maxPayload: 64 * 1024 });

wss.on('connection', (ws) => {
  let agent = null;
  let hello = false;
  ws.on('error', () => {});
  ws.on('close', () => subscribers.delete(ws));
  ws.on('message', (data, isBinary) => {
    let msg;
    try {
      msg = JSON.parse(isBinary ? '' : data.toString());
    } catch {
      return error(ws, undefined, 'bad_request', 'malformed JSON');
    }
    const id = msg.id;
    if (!hello) {
      if (msg.type !== 'hello') {
        error(ws, id, 'bad_request', 'the first message must be a hello');
        return ws.close(4502, 'expected hello');
      }
      hello = true;
      if (msg.role === 'agent') {
        agent = { id: 'admin', name: 'Baseline admin', company, groups: ['support'], admin: true };
        return reply(ws, id, { type: 'welcome', role: 'agent', agent });
      }
      return reply(ws, id, { type: 'welcome', role: 'customer' });
    }
    if (msg.type === 'ping') return reply(ws, id, { type: 'pong' });
    if (!agent) return error(ws, id, 'forbidden', 'agents only');
    const c = msg.code === undefined ? undefined : cases.get(msg.code);
    switch (msg.type) {
      case 'subscribe':
        subscribers.add(ws);
        return reply(ws, id, { type: 'snapshot', epoch, seq, cases: [...cases.values()] });
      case 'unsubscribe':
        subscribers.delete(ws);
        return reply(ws, id, { type: 'unsubscribed' });
      case 'create_case': {
        const nc = makeCase(msg, agent.id);
        cases.set(nc.code, nc);
        publish('created', nc);
        return reply(ws, id, { type: 'case', case: nc });
      }
      case 'assign':
        if (!c) return error(ws, id, 'not_found', 'no such case');
        c.assignee = msg.assignee || null;
        c.assigned_at = c.assignee ? now() : null;
        c.assigned_by = c.assignee ? agent.id : null;
        c.updated_at = now();
        publish('updated', c);
        return reply(ws, id, { type: 'case', case: c });
      case 'close':
        if (!c) return error(ws, id, 'not_found', 'no such case');
        if (c.status === 'closed') return error(ws, id, 'conflict', 'the case is not open');
        c.status = 'closed';
        c.closed_at = c.updated_at = now();
        c.closed_by = agent.id;
        publish('updated', c);
        return reply(ws, id, { type: 'case', case: c });
      case 'delete':
        if (!c) return error(ws, id, 'not_found', 'no such case');
        cases.delete(msg.code);
        publish('deleted', c);
        return reply(ws, id, { type: 'deleted', code: msg.code });
      default:
        return error(ws, id, 'bad_request', `unknown type ${msg.type}`);
    }
  });
});

wss.on('listening', () => {
  console.log(`baseline listening on ws://${host}:${port}/ (any path${cork ? ', corked' : ''})`);
});

function stop() {
  for (const ws of wss.clients) ws.terminate();
  wss.close(() => process.exit(0));
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
if (process.argv.includes('--stop-on-eof')) {
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
}
