// DOM helpers for the pages. Elements are built with createElement and text
// is set with textContent, never parsed from HTML strings: nothing a customer
// or an agent types can become markup.

/** The element with this id. */
export const byId = (id) => document.getElementById(id);

/**
 * A new element. `props`: `class`, `text`, `dataset`, `on` (event
 * listeners), booleans as properties (`hidden`, `disabled`, `checked`),
 * anything else as an attribute. `children`: nodes or strings (as text),
 * arrays of them; null and false are skipped.
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = String(value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key === 'on') {
      for (const [type, fn] of Object.entries(value)) node.addEventListener(type, fn);
    } else if (typeof value === 'boolean') node[key] = value;
    else node.setAttribute(key, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else if (child instanceof Node) node.appendChild(child);
    else node.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces the element's children. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
}

/**
 * Re-renders `node` with `render()`, keeping the keyboard focus on the
 * control with the same `data-key` when there is one in the new content.
 */
export function rerender(node, render) {
  const active = document.activeElement;
  const key = active && node.contains(active) ? active.dataset.key : undefined;
  render();
  if (key) {
    const again = node.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again) again.focus();
  }
}

/** Human status names. */
export const STATUS_LABELS = {
  new: 'New',
  pending: 'Pending',
  in_progress: 'In progress',
  closed: 'Closed',
  expired: 'Expired',
};

export const OPEN_STATUSES = ['new', 'pending', 'in_progress'];

export const isOpen = (c) => OPEN_STATUSES.includes(c.status);

/** An open case with no supporter in its session: its customer waits. */
export const isWaiting = (c) => isOpen(c) && !c.supporter_connected;

/**
 * A group's name from `groups` (id → name, as `/v1/groups` says), or its id
 * when the name is not known.
 */
export function groupName(groups, id) {
  return groups?.get(id) || id;
}

/**
 * Where an agent is, as `/v1/agents` and `agent` pushes say: `available`,
 * `away`, `offline`, or null when the agent is unknown.
 */
export function whereIs(agent) {
  if (!agent) return null;
  if (!agent.online) return 'offline';
  return agent.presence === 'away' ? 'away' : 'available';
}

/**
 * The first words of `text` on one line, at most `max` characters, with
 * "…" when cut. Plain text in, plain text out (shown with textContent).
 */
export function preview(text, max = 80) {
  const flat = String(text || '').replace(/\s+/g, ' ').trim();
  // By code points, so an emoji is never cut in half.
  const chars = Array.from(flat);
  if (chars.length <= max) return flat;
  const cut = chars.slice(0, max).join('');
  const space = cut.lastIndexOf(' ');
  return `${(space > max / 2 ? cut.slice(0, space) : cut).replace(/[\s.,;:!?-]+$/, '')}…`;
}

/** A duration in milliseconds as "45 s", "3 min 05 s", "2 h 04 min", "3 d 2 h". */
export function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const pad = (n) => String(n).padStart(2, '0');
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${pad(s % 60)} s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h} h ${pad(m % 60)} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** A time of the wire (RFC 3339) as local "14:05". */
export function clock(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/** A time of the wire as a local date and time. */
export function dateTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  return d.toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' });
}

/** One chat line as a list item: who, when, and the text. */
export function chatLine(line, { mine }) {
  const name = mine ? 'You' : line.from?.name || (line.from?.role === 'customer' ? 'Customer' : 'Agent');
  // An internal line (a whisper) never reached the customer: say so.
  const who = line.internal ? `${name} · internal, agents only` : name;
  const cls = `${mine ? 'line mine' : 'line theirs'}${line.internal ? ' internal' : ''}`;
  return el(
    'li',
    { class: cls },
    el('span', { class: 'who', text: who }),
    el('time', { class: 'at', datetime: line.at, text: clock(line.at) }),
    el('p', { class: 'text', text: line.text }),
  );
}

/**
 * Shows `message` in the element for a while (status lines). The element
 * keeps its place while empty, so nothing moves when a message comes or goes.
 */
export function flash(node, message, ms = 6000) {
  node.textContent = message;
  node.hidden = false;
  clearTimeout(node._flashTimer);
  node._flashTimer = setTimeout(() => {
    node.hidden = true;
    node.textContent = '';
  }, ms);
}
