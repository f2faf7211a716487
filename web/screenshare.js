// Screen sharing over the session's `signal` relay (proto/README.md,
// "Screen sharing"): the customer offers its screen, the agent answers and
// watches. Media goes peer to peer; the broker carries only the offer, the
// answer and the pointer, as JSON inside `signal.data`:
//
//   {screen: "offer",     id, sdp}   customer → agent
//   {screen: "answer",    id, sdp}   agent → customer
//   {screen: "candidate", id, candidate}   either way (optional: the SDP
//                                    carries the candidates gathered)
//   {screen: "pointer",   id, x, y}  agent → customer, 0..1 of the picture
//   {screen: "stop",      id}        either way: the share is over
//
// `id` names one share; messages about another id are ignored.

/** How long candidates are gathered before the offer or answer goes. */
const GATHER_MS = 3000;
/** Pointer messages at most this often (the relay's rate limit). */
const POINTER_MS = 100;

/** Resolves once ICE gathering is complete, or after GATHER_MS. */
function gathered(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      pc.removeEventListener('icegatheringstatechange', check);
      clearTimeout(timer);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === 'complete') done();
    };
    const timer = setTimeout(done, GATHER_MS);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/** A screen-share message, or null for anything else a peer relays. */
function screenMessage(data) {
  if (!data || typeof data !== 'object' || typeof data.screen !== 'string' || typeof data.id !== 'string') return null;
  return data;
}

/**
 * The customer's side. `send(data)` relays a signal; `onChange()` is told
 * of every change of `state` (`idle`, `offering`, `watched`), of `pointer`
 * (`{x, y}` or null) and of `ended` (why the last share ended).
 */
export class ScreenSender {
  constructor({ send, onChange }) {
    this.send = send;
    this.onChange = onChange;
    this.iceServers = [];
    this.pc = null;
    this.stream = null;
    this.id = null;
    this.state = 'idle';
    this.pointer = null;
    this.ended = null;
  }

  get sharing() {
    return this.state !== 'idle';
  }

  /** Asks the browser for a screen and offers it. */
  async start() {
    if (this.pc) return;
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    } catch (e) {
      this.ended = e.name === 'NotAllowedError' ? 'refused' : 'failed';
      this.onChange();
      return;
    }
    this.stream = stream;
    this.id = crypto.randomUUID();
    this.ended = null;
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.pc = pc;
    for (const track of stream.getTracks()) {
      pc.addTrack(track, stream);
      // The browser's own "Stop sharing" bar.
      track.addEventListener('ended', () => this.stop('stopped'));
    }
    pc.addEventListener('connectionstatechange', () => {
      if (pc !== this.pc) return;
      if (pc.connectionState === 'connected') this.#set('watched');
      else if (pc.connectionState === 'failed') this.stop('failed');
    });
    this.#set('offering');
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    if (pc !== this.pc) return;
    await this.send({ screen: 'offer', id: this.id, sdp: pc.localDescription.sdp });
  }

  /** A `signal` from the agent's side. */
  async onSignal(data) {
    const m = screenMessage(data);
    if (!m || !this.pc || m.id !== this.id) return;
    const pc = this.pc;
    switch (m.screen) {
      case 'answer':
        // A second tab of the agent may answer too: the first one wins.
        if (pc.signalingState !== 'have-local-offer') return;
        await pc.setRemoteDescription({ type: 'answer', sdp: String(m.sdp) });
        break;
      case 'candidate':
        if (m.candidate) await pc.addIceCandidate(m.candidate).catch(() => {});
        break;
      case 'pointer': {
        const x = Number(m.x);
        const y = Number(m.y);
        if (x >= 0 && x <= 1 && y >= 0 && y <= 1) {
          this.pointer = { x, y };
          this.onChange();
        }
        break;
      }
      case 'stop':
        this.stop('agent', false);
        break;
      default:
        break;
    }
  }

  /** Ends the share; tells the agent unless `tell` is false. */
  stop(reason = 'stopped', tell = true) {
    if (!this.pc) return;
    const id = this.id;
    this.pc.close();
    this.pc = null;
    for (const t of this.stream?.getTracks() || []) t.stop();
    this.stream = null;
    this.id = null;
    this.pointer = null;
    this.ended = reason;
    this.#set('idle');
    if (tell) this.send({ screen: 'stop', id }).catch(() => {});
  }

  #set(state) {
    this.state = state;
    this.onChange();
  }
}

/**
 * The agent's side: answers a customer's offer and holds the stream.
 * `send(code, data)` relays a signal to the customer of `code`;
 * `onChange()` is told when a share starts or ends.
 */
export class ScreenViewer {
  constructor({ send, onChange }) {
    this.send = send;
    this.onChange = onChange;
    this.iceServers = [];
    /** The share being watched: `{code, id, pc, stream}`, or null. */
    this.share = null;
    this.lastPointer = 0;
  }

  /** A `signal` from a customer of `code`. */
  async onSignal(code, data) {
    const m = screenMessage(data);
    if (!m) return;
    if (m.screen === 'offer') {
      this.close(false);
      const pc = new RTCPeerConnection({ iceServers: this.iceServers });
      const share = { code, id: m.id, pc, stream: null };
      this.share = share;
      pc.addEventListener('track', (ev) => {
        share.stream = ev.streams[0] || new MediaStream([ev.track]);
        if (this.share === share) this.onChange();
      });
      pc.addEventListener('connectionstatechange', () => {
        if (this.share === share && ['failed', 'closed'].includes(pc.connectionState)) this.close(false);
      });
      await pc.setRemoteDescription({ type: 'offer', sdp: String(m.sdp) });
      await pc.setLocalDescription(await pc.createAnswer());
      await gathered(pc);
      if (this.share !== share) return;
      await this.send(code, { screen: 'answer', id: m.id, sdp: pc.localDescription.sdp });
      return;
    }
    const share = this.share;
    if (!share || share.code !== code || share.id !== m.id) return;
    if (m.screen === 'candidate' && m.candidate) await share.pc.addIceCandidate(m.candidate).catch(() => {});
    if (m.screen === 'stop') this.close(false);
  }

  /** Shows the customer where to look: `x`, `y` from 0 to 1 of the picture. */
  point(x, y) {
    const share = this.share;
    const now = Date.now();
    if (!share || now - this.lastPointer < POINTER_MS) return;
    this.lastPointer = now;
    this.send(share.code, { screen: 'pointer', id: share.id, x, y }).catch(() => {});
  }

  /** The session of `code` ended or was left: its share is over. */
  ended(code) {
    if (this.share?.code === code) this.close(false);
  }

  /** Stops watching; tells the customer unless `tell` is false. */
  close(tell = true) {
    const share = this.share;
    if (!share) return;
    this.share = null;
    share.pc.close();
    if (tell) this.send(share.code, { screen: 'stop', id: share.id }).catch(() => {});
    this.onChange();
  }
}
