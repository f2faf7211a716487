// The live queue on the dashboard: counts per status, the filters (status,
// group, mine) and one row per case with what an agent can do with it. The
// table has few columns and becomes a list of cards when the queue is
// narrow (style.css), so its buttons are always on screen. A case's wait
// (until a supporter is first in its session) and its age tick apart.

import {
  el, fill, rerender, duration, groupName, isOpen, isWaiting, preview, whereIs, STATUS_LABELS,
} from './dom.js';

const STATUS_ORDER = ['new', 'pending', 'in_progress', 'closed', 'expired'];

/** Names the broker gives a help request: "Help request: Ana", "SOS". */
const GENERATED_NAMES = ['Help request', 'SOS'];

/** The row's buttons: what this agent may do with the case. */
function actionsFor(c, me) {
  const view = { label: 'View', action: 'view' };
  if (!isOpen(c)) return [view];
  if (!c.assignee) return [view, { label: 'Take', action: 'take', primary: true }];
  if (c.assignee === me.id) return [{ label: 'Open', action: 'take', primary: true }];
  // The broker lets only admins take a case assigned to someone else.
  if (me.admin) return [view, { label: 'Take over', action: 'takeover' }];
  return [view];
}

/** Whether the case's name says no more than who the customer is. */
function nameRepeatsCustomer(c) {
  const name = (c.name || '').trim();
  const who = (c.customer?.name || '').trim();
  if (!name || name === who) return true;
  return GENERATED_NAMES.some((prefix) => {
    if (name === prefix) return true;
    // The broker cuts long names, so the customer's may be cut too.
    const rest = name.startsWith(`${prefix}: `) ? name.slice(prefix.length + 2) : null;
    return rest !== null && rest.length > 0 && who.startsWith(rest);
  });
}

/** What the row says the case is about: its name, or its description's first words. */
export function topicOf(c) {
  const description = preview(c.description);
  if (nameRepeatsCustomer(c)) {
    return { topic: description || c.name || 'No description', more: '' };
  }
  return { topic: c.name, more: description };
}

/**
 * The wait: ticking while the customer waits for a supporter, then frozen
 * at the moment the dashboard saw one join (`answered`: code → ms, or null
 * when a supporter was already there the first time the dashboard saw it).
 */
function waitOf(c, answered, now) {
  const created = Date.parse(c.created_at);
  if (answered.has(c.code)) {
    const at = answered.get(c.code);
    return at === null
      ? { text: 'Answered', title: 'A supporter joined before this dashboard saw the case' }
      : { text: 'Answered after ', value: duration(at - created) };
  }
  if (isWaiting(c)) return { text: 'Waiting ', value: duration(now - created), since: c.created_at, now: true };
  return { text: '—', title: 'No supporter was seen in this session' };
}

/** Cases whose customer waits: open, with no supporter in the session. */
export function waitingCount(cases) {
  let n = 0;
  for (const c of cases) if (isWaiting(c)) n += 1;
  return n;
}

export class QueueView {
  /** `onAction(action, code)` runs a row's button. */
  constructor({ rows, counts, empty, status, group, mine, onAction, onFilter }) {
    this.rows = rows;
    this.counts = counts;
    this.empty = empty;
    this.status = status;
    this.group = group;
    this.mine = mine;
    this.onAction = onAction;
    for (const input of [status, group, mine]) {
      input.addEventListener('change', onFilter);
    }
  }

  /** Whether a case passes the filters. */
  #shown(c, me) {
    const s = this.status.value;
    if (s === 'open' && !isOpen(c)) return false;
    if (s !== 'open' && s !== 'all' && c.status !== s) return false;
    if (this.group.value && c.group !== this.group.value) return false;
    if (this.mine.checked && c.assignee !== me.id) return false;
    return true;
  }

  /** Draws everything from `state` (cases, me, agents, answered, openCode). */
  render(state) {
    const { me } = state;
    const cases = [...state.cases.values()].sort(
      (a, b) => Date.parse(a.created_at) - Date.parse(b.created_at) || a.code.localeCompare(b.code),
    );
    this.#renderGroups(cases, state);
    this.#renderCounts(cases);
    const shown = cases.filter((c) => this.#shown(c, me));
    const now = Date.now();
    rerender(this.rows, () =>
      fill(this.rows, shown.map((c) => this.#row(c, state, now))),
    );
    this.empty.hidden = shown.length > 0;
  }

  /** Updates the ticking times (waits of waiting cases, ages). */
  tick() {
    const now = Date.now();
    for (const node of this.rows.querySelectorAll('[data-since]')) {
      node.textContent = duration(now - Date.parse(node.dataset.since));
    }
  }

  #row(c, state, now) {
    const { me, agents } = state;
    const { topic, more } = topicOf(c);
    const wait = waitOf(c, state.answered, now);
    const label = (text) => el('span', { class: 'label', text });
    const online = c.customer_connected;
    return el(
      'tr',
      { dataset: { code: c.code }, class: c.code === state.openCode ? 'current' : undefined },
      el(
        'td',
        { class: 'case' },
        el('code', { class: 'code', text: c.code }),
        el('span', { class: 'topic', text: topic }),
        more ? el('span', { class: 'preview', text: more }) : null,
      ),
      el(
        'td',
        { class: 'customer' },
        el('span', { class: 'customer-name', title: c.customer?.name || undefined, text: c.customer?.name || '—' }),
        el(
          'span',
          {
            class: `customer-presence ${online ? 'on' : 'off'}`,
            title: online ? 'The customer is connected' : 'The customer is not connected',
          },
          el('span', { 'aria-hidden': 'true', text: online ? '●' : '○' }),
          ' ',
          el('span', { class: 'visually-hidden', text: 'customer ' }),
          online ? 'online' : 'offline',
        ),
        c.customer?.email ? el('span', { class: 'email', title: c.customer.email, text: c.customer.email }) : null,
      ),
      el(
        'td',
        { class: 'status' },
        el('span', { class: `badge ${c.status}`, text: STATUS_LABELS[c.status] || c.status }),
        slaBadge(c),
        el('span', { class: 'meta', text: [groupName(state.groups, c.group), c.source].filter(Boolean).join(' · ') }),
      ),
      this.#assignee(c, agents, label),
      el(
        'td',
        { class: 'time' },
        el(
          'span',
          { class: wait.now ? 'wait waiting-now' : 'wait', title: wait.title },
          wait.text,
          wait.value
            ? el('span', { class: 'value', dataset: wait.since ? { since: wait.since } : undefined, text: wait.value })
            : null,
        ),
        el(
          'span',
          { class: 'age' },
          'Age ',
          el('span', { class: 'value', dataset: { since: c.created_at }, text: duration(now - Date.parse(c.created_at)) }),
        ),
      ),
      el(
        'td',
        { class: 'act' },
        el(
          'div',
          { class: 'row-actions' },
          actionsFor(c, me).map(({ label: text, action, primary }) =>
            el('button', {
              type: 'button',
              class: primary ? 'primary small' : 'small',
              dataset: { key: `${action}:${c.code}` },
              text,
              on: { click: () => this.onAction(action, c.code) },
            }),
          ),
        ),
      ),
    );
  }

  #assignee(c, agents, label) {
    if (!c.assignee) {
      // Offered by automation: whose answer it waits for.
      const text = c.offer ? `Offered to ${agents.get(c.offer.agent)?.name || c.offer.agent}` : 'Unassigned';
      return el('td', { class: 'assignee muted' }, label('Assignee: '), el('span', { class: 'offered-to', text }));
    }
    const agent = agents.get(c.assignee);
    const where = whereIs(agent);
    return el(
      'td',
      { class: 'assignee' },
      label('Assignee: '),
      el('span', { class: 'assignee-name', text: agent?.name || c.assignee }),
      where && where !== 'available' ? el('span', { class: `where ${where}`, text: ` (${where})` }) : null,
    );
  }

  #renderCounts(cases) {
    const per = Object.fromEntries(STATUS_ORDER.map((s) => [s, 0]));
    for (const c of cases) per[c.status] = (per[c.status] || 0) + 1;
    fill(
      this.counts,
      el(
        'li',
        { class: 'waiting-count', title: 'Open cases with no supporter in the session' },
        el('strong', { text: waitingCount(cases) }),
        ' waiting',
      ),
      STATUS_ORDER.map((s) =>
        el('li', { class: `count ${s}` }, el('strong', { text: per[s] }), ` ${STATUS_LABELS[s]}`),
      ),
    );
  }

  /**
   * The group filter: the groups the agent sees (`state.groups`, live; its
   * own when the broker does not say) and those of the cases it has, by
   * name, with the id as value.
   */
  #renderGroups(cases, state) {
    const ids = new Set(state.groups ? state.groups.keys() : state.me.groups);
    for (const c of cases) ids.add(c.group);
    const want = [...ids]
      .map((id) => [id, groupName(state.groups, id)])
      .sort((a, b) => a[1].localeCompare(b[1]) || a[0].localeCompare(b[0]));
    const have = [...this.group.options].filter((o) => o.value).map((o) => [o.value, o.text]);
    if (JSON.stringify(have) === JSON.stringify(want)) return;
    const selected = this.group.value;
    fill(
      this.group,
      el('option', { value: '', text: 'All groups' }),
      want.map(([id, name]) => el('option', { value: id, text: name })),
    );
    this.group.value = ids.has(selected) ? selected : '';
  }
}

const SLA_MISSED = { first_response: 'First response overdue', resolution: 'Resolution overdue' };

/**
 * The case's missed service levels as a badge (the latest one named), or,
 * while one is still to be met, when it is due.
 */
function slaBadge(c) {
  const sla = c.sla;
  if (!sla) return null;
  if (sla.breached.length) {
    const last = sla.breached[sla.breached.length - 1];
    return el('span', { class: 'badge sla-missed', text: SLA_MISSED[last] || 'Service level missed' });
  }
  const open = c.status !== 'closed' && c.status !== 'expired';
  const due = !c.supporter_connected && sla.first_response_due ? sla.first_response_due : sla.resolution_due;
  if (!open || !due) return null;
  const at = new Date(due);
  return el('span', {
    class: 'badge sla-due',
    title: `Service level due ${at.toLocaleString()}`,
    text: `Due ${at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })}`,
  });
}
