// Alerts an agent cannot miss when a new case waits: a short beep made with
// WebAudio (no sound file to fetch), a desktop notification while the tab is
// not in front, and the waiting count in the tab title. A mute switch
// silences the first two; it is remembered in this browser.

const MUTE_KEY = 'casebroker.mute';

export class Alerts {
  constructor(baseTitle) {
    this.baseTitle = baseTitle;
    this.audio = null;
    this.muted = localStorage.getItem(MUTE_KEY) === '1';
  }

  setMuted(muted) {
    this.muted = muted;
    localStorage.setItem(MUTE_KEY, muted ? '1' : '0');
  }

  /**
   * Prepares sound output. Browsers allow audio only after a user gesture,
   * so this is called from one (signing in, the mute switch).
   */
  unlock() {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return;
    if (!this.audio) this.audio = new Ctx();
    if (this.audio.state === 'suspended') this.audio.resume().catch(() => {});
  }

  get canAskForNotifications() {
    return 'Notification' in window && Notification.permission === 'default';
  }

  async askForNotifications() {
    if (!('Notification' in window)) return 'denied';
    return Notification.requestPermission();
  }

  /** A new case waits: beep and, when the tab is not in front, notify. */
  newCase(title, body) {
    if (this.muted) return;
    // Counted on the page, so that a test (or an extension) can see it.
    document.documentElement.dataset.alerts = String(Number(document.documentElement.dataset.alerts || 0) + 1);
    this.beep();
    if ('Notification' in window && Notification.permission === 'granted' && !document.hasFocus()) {
      const n = new Notification(title, { body, tag: 'casebroker-new-case' });
      n.addEventListener('click', () => window.focus());
    }
  }

  beep() {
    const ctx = this.audio;
    if (!ctx || ctx.state !== 'running') return;
    const t = ctx.currentTime;
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.type = 'sine';
    osc.frequency.setValueAtTime(880, t);
    osc.frequency.setValueAtTime(660, t + 0.12);
    gain.gain.setValueAtTime(0.0001, t);
    gain.gain.exponentialRampToValueAtTime(0.25, t + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.3);
    osc.connect(gain).connect(ctx.destination);
    osc.start(t);
    osc.stop(t + 0.32);
  }

  /** The tab title, with the number of waiting cases first. */
  setWaiting(n) {
    document.title = n > 0 ? `(${n}) ${this.baseTitle}` : this.baseTitle;
  }
}
