// A connection to the broker's WebSocket (/v1/ws) for both pages: it says
// hello, matches replies to commands by `id`, and after a dropped connection
// reconnects with a growing, jittered delay. What must be restored after a
// reconnection (a subscription with resume, a seat) is the page's job, done
// in `onWelcome`.

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;

/** A refused command: the broker's `error` reply, or a lost connection. */
export class CommandError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

export class Socket {
  /**
   * `hello()`: the hello message to send on each connection.
   * `onWelcome(welcome, again)`: after each hello is answered (`again` is
   * true after a reconnection); the connection counts as live once it
   * returns.
   * `onPush(msg)`: every message that is not a reply.
   * `onState(state)`: `connecting`, `live`, `reconnecting`, `closed`, or
   * `refused` (the broker said not to come back, e.g. a bad token).
   * `onRefused(error)`: why, when known.
   */
  constructor({ hello, onWelcome, onPush, onState = () => {}, onRefused = () => {} }) {
    this.hello = hello;
    this.onWelcome = onWelcome;
    this.onPush = onPush;
    this.onState = onState;
    this.onRefused = onRefused;
    this.ws = null;
    this.pending = new Map();
    this.nextId = 1;
    this.attempt = 0;
    this.timer = null;
    this.stopped = true;
    this.connectedOnce = false;
    this.notBefore = 0;
    this.state = 'closed';
  }

  /** Connects, and keeps reconnecting until `stop()`. */
  start() {
    this.stopped = false;
    this.attempt = 0;
    this.connectedOnce = false;
    this.#setState('connecting');
    this.#open();
  }

  /** Closes for good: no reconnection. */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    const ws = this.ws;
    this.ws = null;
    this.#failPending('the connection was closed');
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000);
    this.#setState('closed');
  }

  /**
   * Drops the connection as a network failure would, and reconnects no
   * sooner than `holdMs` from now. For diagnosing the reconnection path.
   */
  drop(holdMs = 0) {
    this.notBefore = Date.now() + holdMs;
    if (this.ws) this.ws.close(3000, 'dropped');
  }

  get live() {
    return this.state === 'live';
  }

  /** Sends a command and resolves with its reply (rejects with CommandError). */
  request(msg) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new CommandError('unavailable', 'not connected; trying again shortly'));
    }
    const id = `c${this.nextId++}`;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      ws.send(JSON.stringify({ ...msg, id }));
    });
  }

  #setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.onState(state);
  }

  #open() {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}/v1/ws`, 'casebroker.v1');
    this.ws = ws;
    ws.addEventListener('open', () => this.#greet(ws));
    ws.addEventListener('message', (ev) => this.#receive(ws, ev));
    ws.addEventListener('close', (ev) => this.#closed(ws, ev));
  }

  async #greet(ws) {
    let welcome;
    try {
      welcome = await this.request(this.hello());
    } catch (e) {
      if (e.code === 'unauthorized' || e.code === 'bad_request') {
        this.#refuse(e);
      }
      return;
    }
    if (ws !== this.ws) return;
    const again = this.connectedOnce;
    this.connectedOnce = true;
    try {
      await this.onWelcome(welcome, again);
    } catch (e) {
      if (!(e instanceof CommandError)) throw e;
      // Lost again while restoring: the close handler reconnects.
      if (ws !== this.ws || e.code === 'unavailable') return;
    }
    if (ws !== this.ws) return;
    this.attempt = 0;
    this.#setState('live');
  }

  #receive(ws, ev) {
    if (ws !== this.ws) return;
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    const waiter = msg.id !== undefined && msg.id !== null ? this.pending.get(msg.id) : undefined;
    if (waiter) {
      this.pending.delete(msg.id);
      if (msg.type === 'error') waiter.reject(Object.assign(new CommandError(msg.code, msg.message), { opensAt: msg.opens_at ?? null }));
      else waiter.resolve(msg);
      return;
    }
    this.onPush(msg);
  }

  #closed(ws, ev) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.#failPending('the connection was lost');
    if (this.stopped) return;
    // 4500-4999: the broker asks not to reconnect unchanged; 1008: policy.
    if ((ev.code >= 4500 && ev.code <= 4999) || ev.code === 1008) {
      this.#refuse(new CommandError('unauthorized', ev.reason || 'the broker refused the connection'));
      return;
    }
    this.#setState(this.connectedOnce ? 'reconnecting' : 'connecting');
    const backoff = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** this.attempt);
    this.attempt += 1;
    const delay = Math.max(backoff * (0.5 + Math.random() / 2), this.notBefore - Date.now());
    this.timer = setTimeout(() => {
      if (!this.stopped) this.#open();
    }, delay);
  }

  #refuse(error) {
    if (this.state === 'refused') return;
    this.stopped = true;
    clearTimeout(this.timer);
    const ws = this.ws;
    this.ws = null;
    this.#failPending(error.message);
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000);
    this.#setState('refused');
    this.onRefused(error);
  }

  #failPending(message) {
    for (const { reject } of this.pending.values()) {
      reject(new CommandError('unavailable', message));
    }
    this.pending.clear();
  }
}
