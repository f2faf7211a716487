// The live queue on the dashboard: counts per status, the filters (status,
// group, mine) and one table row per case, with the action an agent can
// take on it. The waiting time of open cases ticks every second.

import { el, fill, rerender, duration, isOpen, OPEN_STATUSES, STATUS_LABELS } from './dom.js';

const STATUS_ORDER = ['new', 'pending', 'in_progress', 'closed', 'expired'];

/** The row's button: what this agent may do with the case. */
function actionFor(c, me) {
  if (!isOpen(c)) return { label: 'View', action: 'view' };
  if (!c.assignee) return { label: 'Take', action: 'take' };
  if (c.assignee === me.id) return { label: 'Open', action: 'take' };
  if (me.admin) return { label: 'Take over', action: 'takeover' };
  return { label: 'View', action: 'view' };
}

/** How long the case has waited: until now while open, else until it ended. */
function waited(c, now) {
  const start = Date.parse(c.created_at);
  const end = isOpen(c) ? now : Date.parse(c.closed_at || c.updated_at);
  return duration(end - start);
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

  /** Draws everything from `state` (cases, me, agents, openCode). */
  render(state) {
    const { me } = state;
    const cases = [...state.cases.values()].sort(
      (a, b) => Date.parse(a.created_at) - Date.parse(b.created_at) || a.code.localeCompare(b.code),
    );
    this.#renderGroups(cases, me);
    this.#renderCounts(cases);
    const shown = cases.filter((c) => this.#shown(c, me));
    const now = Date.now();
    rerender(this.rows, () =>
      fill(this.rows, shown.map((c) => this.#row(c, state, now))),
    );
    this.empty.hidden = shown.length > 0;
  }

  /** Updates the waiting times of open cases. */
  tick() {
    const now = Date.now();
    for (const cell of this.rows.querySelectorAll('[data-since]')) {
      cell.textContent = duration(now - Date.parse(cell.dataset.since));
    }
  }

  #row(c, state, now) {
    const { me, agents } = state;
    const { label, action } = actionFor(c, me);
    const assignee = c.assignee ? agents.get(c.assignee)?.name || c.assignee : 'Unassigned';
    const open = isOpen(c);
    return el(
      'tr',
      { dataset: { code: c.code }, class: c.code === state.openCode ? 'current' : undefined },
      el('td', { class: 'code' }, el('code', { text: c.code })),
      el('td', { text: c.name || '—' }),
      el(
        'td',
        { class: 'customer' },
        el('span', { text: c.customer?.name || '—' }),
        c.customer?.email ? el('span', { class: 'email', text: c.customer.email }) : null,
      ),
      el('td', { class: 'nowrap', text: c.group }),
      el('td', {}, el('span', { class: `badge ${c.status}`, text: STATUS_LABELS[c.status] || c.status })),
      el('td', { class: c.assignee ? undefined : 'muted', text: assignee }),
      el('td', { class: 'waiting', dataset: open ? { since: c.created_at } : {}, text: waited(c, now) }),
      el('td', { class: 'nowrap', text: c.source }),
      el(
        'td',
        {},
        el('button', {
          type: 'button',
          class: action === 'take' ? 'primary small' : 'small',
          dataset: { key: `${action}:${c.code}` },
          text: label,
          on: { click: () => this.onAction(action, c.code) },
        }),
      ),
    );
  }

  #renderCounts(cases) {
    const per = Object.fromEntries(STATUS_ORDER.map((s) => [s, 0]));
    let waiting = 0;
    for (const c of cases) {
      per[c.status] = (per[c.status] || 0) + 1;
      if (OPEN_STATUSES.includes(c.status) && !c.assignee) waiting += 1;
    }
    fill(
      this.counts,
      el('li', { class: 'waiting-count' }, el('strong', { text: waiting }), ' waiting'),
      STATUS_ORDER.map((s) =>
        el('li', { class: `count ${s}` }, el('strong', { text: per[s] }), ` ${STATUS_LABELS[s]}`),
      ),
    );
  }

  #renderGroups(cases, me) {
    const groups = new Set(me.groups);
    for (const c of cases) groups.add(c.group);
    const have = [...this.group.options].map((o) => o.value).filter(Boolean);
    const want = [...groups].sort();
    if (have.join('\n') === want.join('\n')) return;
    const selected = this.group.value;
    fill(
      this.group,
      el('option', { value: '', text: 'All groups' }),
      want.map((g) => el('option', { value: g, text: g })),
    );
    this.group.value = want.includes(selected) ? selected : '';
  }
}
