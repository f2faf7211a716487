// The open case on the dashboard: its details, the live state of both seats,
// what this agent may do with it (take, assign, return to the queue, close,
// delete, leave) or why it may not chat, its own status line, and the chat
// with its transcript.

import {
  el, fill, flash, rerender, chatLine, dateTime, groupName, isOpen, whereIs, STATUS_LABELS,
} from './dom.js';
import { topicOf } from './queue.js';

const ENDED_TEXT = {
  closed: 'This case is closed. The session has ended.',
  expired: 'This case expired. The session has ended.',
  deleted: 'This case was deleted.',
  reassigned: 'This case was given to another agent; you left its session.',
};

export class CasePanel {
  /**
   * `actions`: `take(code, takeover)`, `assign(code, agentId)`,
   * `transfer(code, groupId)`,
   * `unassign(code)`, `close(code)`, `remove(code)`, `leave(code)`,
   * `invite(code, agentId)`, `watch(code, on)`,
   * `send(code, text, internal)` (resolves true when sent), `hide()`.
   */
  constructor(root, actions) {
    this.root = root;
    this.actions = actions;
    this.code = null;
    this.shownLines = 0;
    this.actionsKey = '';
    this.parts = null;
    this.#placeholder();
  }

  #placeholder() {
    this.code = null;
    this.parts = null;
    fill(
      this.root,
      el('h2', { id: 'case-heading', text: 'Open case' }),
      el('p', {
        class: 'muted',
        text: 'No case open. View a case from the queue to read it, or take it to join its session.',
      }),
    );
  }

  /** The code of the case shown, or null. */
  get shown() {
    return this.code;
  }

  /** Says the outcome of an action in the panel's status line. */
  say(text) {
    if (this.parts) flash(this.parts.notice, text);
  }

  /** Draws the case `state.openCode` with its session. */
  render(state) {
    const code = state.openCode;
    if (!code) {
      if (this.code) this.#placeholder();
      return;
    }
    const session = state.sessions.get(code);
    const c = state.cases.get(code) || session?.lastCase;
    if (!c) {
      if (this.code) this.#placeholder();
      return;
    }
    if (code !== this.code) this.#build(code);
    const p = this.parts;
    // Not "Help request: Ana" beside "Ana": what the case is about.
    p.title.textContent = topicOf(c).topic || 'Untitled case';
    this.#details(c, state);
    this.#seats(c, state);
    this.#actions(c, session, state);
    const ended = session?.ended || (!isOpen(c) ? c.status : null);
    p.ended.hidden = !ended;
    p.ended.textContent = ended ? ENDED_TEXT[ended] || 'The session has ended.' : '';
    const joined = Boolean(session?.joined) && !ended;
    const watching = Boolean(session?.watching) && !ended;
    p.viewOnly.hidden = joined || watching || Boolean(ended);
    p.viewOnly.textContent = p.viewOnly.hidden ? '' : whyNotInSession(c, state);
    // A watcher has no seat: it may only write internal notes.
    p.input.disabled = !joined && !watching;
    p.send.disabled = !joined && !watching;
    p.internal.disabled = !joined;
    if (watching && !joined) p.internal.checked = true;
    this.#lines(session);
  }

  #build(code) {
    this.code = code;
    this.shownLines = 0;
    this.actionsKey = '';
    const inputId = 'chat-message';
    const p = {
      title: el('p', { class: 'case-title' }),
      ended: el('p', { class: 'ended', role: 'status' }),
      viewOnly: el('p', { class: 'view-only' }),
      details: el('dl', { class: 'details' }),
      seats: el('ul', { class: 'seats', 'aria-label': 'Seats' }),
      actions: el('div', { class: 'actions', role: 'group', 'aria-label': 'Case actions' }),
      notice: el('p', { class: 'panel-notice status-line', role: 'status', 'aria-live': 'polite', hidden: true }),
      log: el('ol', { class: 'chat-log', role: 'log', 'aria-live': 'polite', 'aria-label': 'Chat transcript' }),
      input: el('textarea', { id: inputId, name: 'message', rows: 2, maxlength: 4000, required: true }),
      send: el('button', { type: 'submit', class: 'primary', text: 'Send' }),
      internal: el('input', { type: 'checkbox', id: 'chat-internal' }),
    };
    p.input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        p.form.requestSubmit();
      }
    });
    p.form = el(
      'form',
      {
        class: 'chat-form',
        on: {
          submit: async (ev) => {
            ev.preventDefault();
            const text = p.input.value.trim();
            if (!text) return;
            if (await this.actions.send(code, text, p.internal.checked)) p.input.value = '';
          },
        },
      },
      el('label', { for: inputId, text: 'Message' }),
      el('div', { class: 'chat-row' }, p.input, p.send),
      el(
        'div',
        { class: 'chat-internal' },
        p.internal,
        el('label', { for: 'chat-internal', text: 'Internal note (agents only, never the customer)' }),
      ),
    );
    this.parts = p;
    fill(
      this.root,
      el(
        'div',
        { class: 'case-head' },
        el('h2', { id: 'case-heading' }, 'Case ', el('code', { text: code })),
        el('button', {
          type: 'button',
          class: 'small',
          text: 'Hide',
          'aria-label': 'Hide the open case',
          on: { click: () => this.actions.hide() },
        }),
      ),
      p.title,
      p.ended,
      p.viewOnly,
      p.details,
      el('h3', { text: 'Seats' }),
      p.seats,
      p.actions,
      p.notice,
      el('h3', { text: 'Chat' }),
      p.log,
      p.form,
    );
  }

  #details(c, state) {
    const agentName = (id) => (id ? state.agents.get(id)?.name || id : 'Unassigned');
    const row = (term, value, cls) =>
      value ? [el('dt', { text: term }), el('dd', { class: cls, text: value })] : null;
    fill(
      this.parts.details,
      el('dt', { text: 'Status' }),
      el('dd', {}, el('span', { class: `badge ${c.status}`, text: STATUS_LABELS[c.status] || c.status })),
      row('Customer', c.customer?.name || '—'),
      row('Email', c.customer?.email),
      row('Group', groupName(state.groups, c.group)),
      row('Source', c.source),
      row('Assignee', agentName(c.assignee)),
      row('Why this agent', whyThisAgent(state.sessions.get(c.code)?.routing, agentName)),
      c.helpers?.length ? row('Helpers', c.helpers.map(agentName).join(', ')) : null,
      c.sla ? row('Service level', slaText(c.sla)) : null,
      row('Created', dateTime(c.created_at)),
      c.closed_at ? row('Closed', `${dateTime(c.closed_at)} by ${agentName(c.closed_by) || c.closed_by}`) : null,
      row('Description', c.description, 'description'),
    );
  }

  #seats(c, state) {
    const seat = (on, text) =>
      el('li', { class: on ? 'seat on' : 'seat off' }, el('span', { class: 'dot', 'aria-hidden': 'true' }), text);
    const name = c.assignee ? state.agents.get(c.assignee)?.name || c.assignee : null;
    const supporter = !name
      ? 'Supporter: nobody assigned'
      : `Supporter: ${name} ${c.supporter_connected ? 'is in the session' : 'is not in the session'}`;
    fill(
      this.parts.seats,
      seat(c.customer_connected, `Customer: ${c.customer_connected ? 'connected' : 'not connected'}`),
      seat(c.supporter_connected, supporter),
    );
  }

  #actions(c, session, state) {
    const { me } = state;
    const open = isOpen(c);
    const mineOrFree = !c.assignee || c.assignee === me.id;
    const members = [...state.agents.values()].filter((a) => a.groups.includes(c.group));
    const canAssign = open && (me.admin || mineOrFree);
    const canReturn = open && c.assignee && (me.admin || c.assignee === me.id);
    const canClose = open && (me.admin || c.assignee === me.id || c.created_by === me.id);
    const joined = Boolean(session?.joined) && !session?.ended && open;
    // The broker seats the assignee, anyone on an unassigned case, and an
    // admin who takes it over.
    const helper = open && c.assignee && c.assignee !== me.id && (c.helpers || []).includes(me.id);
    const canJoin = open && !joined && (mineOrFree || me.admin || helper);
    const watching = Boolean(session?.watching) && open;
    // Invite: by the assignee or an admin, anyone not already in the case.
    const invitees = open && (me.admin || c.assignee === me.id)
      ? [...state.agents.values()].filter((a) => a.id !== c.assignee && !(c.helpers || []).includes(a.id))
      : [];
    // Transfer: by the assignee or an admin, to another group it knows.
    const otherGroups = open && (me.admin || c.assignee === me.id)
      ? [...(state.groups ? state.groups.keys() : me.groups)].filter((g) => g !== c.group)
      : [];
    const key = JSON.stringify([c.code, c.assignee, c.group, canAssign, canReturn, canClose, joined, canJoin, me.admin,
      members.map((a) => [a.id, a.name]), otherGroups, helper, watching, invitees.map((a) => a.id)]);
    if (key === this.actionsKey) return;
    this.actionsKey = key;
    const box = this.parts.actions;
    const keep = box.querySelector('#assign-to')?.value;
    rerender(box, () => {
      const controls = [];
      if (canAssign && members.length) {
        const select = el(
          'select',
          { id: 'assign-to', dataset: { key: 'assign-to' } },
          members.map((a) => el('option', { value: a.id, text: a.name })),
        );
        const fallback = members.find((a) => a.id !== c.assignee)?.id;
        select.value = keep && keep !== c.assignee && members.some((a) => a.id === keep) ? keep : fallback || members[0].id;
        controls.push(
          el(
            'span',
            { class: 'assign' },
            el('label', { for: 'assign-to', text: 'Assign to' }),
            select,
            el('button', {
              type: 'button',
              dataset: { key: 'assign' },
              text: 'Assign',
              on: { click: () => this.actions.assign(c.code, select.value) },
            }),
          ),
        );
      }
      if (otherGroups.length) {
        const select = el(
          'select',
          { id: 'transfer-to', dataset: { key: 'transfer-to' } },
          otherGroups.map((g) => el('option', { value: g, text: state.groups?.get(g) || g })),
        );
        controls.push(
          el(
            'span',
            { class: 'assign' },
            el('label', { for: 'transfer-to', text: 'Transfer to' }),
            select,
            el('button', {
              type: 'button',
              dataset: { key: 'transfer' },
              text: 'Transfer',
              on: { click: () => this.actions.transfer(c.code, select.value) },
            }),
          ),
        );
      }
      const button = (text, keyName, fn, cls) =>
        el('button', { type: 'button', class: cls, dataset: { key: keyName }, text, on: { click: fn } });
      if (canJoin) {
        const takeover = !mineOrFree && !helper;
        const text = helper ? 'Join as helper' : takeover ? 'Take over' : c.assignee ? 'Join session' : 'Take';
        controls.unshift(button(text, 'join', () => this.actions.take(c.code, takeover), 'primary'));
      }
      if (invitees.length) {
        const select = el(
          'select',
          { id: 'invite-who', dataset: { key: 'invite-who' } },
          invitees.map((a) => el('option', { value: a.id, text: a.name })),
        );
        controls.push(
          el(
            'span',
            { class: 'assign' },
            el('label', { for: 'invite-who', text: 'Ask for help' }),
            select,
            el('button', {
              type: 'button',
              dataset: { key: 'invite' },
              text: 'Invite',
              on: { click: () => this.actions.invite(c.code, select.value) },
            }),
          ),
        );
      }
      if (me.admin && open && !joined) {
        controls.push(
          watching
            ? button('Stop watching', 'unwatch', () => this.actions.watch(c.code, false))
            : button('Watch', 'watch', () => this.actions.watch(c.code, true)),
        );
      }
      if (canReturn) controls.push(button('Return to queue', 'return', () => this.actions.unassign(c.code)));
      if (joined) controls.push(button('Leave session', 'leave', () => this.actions.leave(c.code)));
      if (canClose) controls.push(button('Close case', 'close', () => this.actions.close(c.code), 'primary'));
      if (me.admin) controls.push(button('Delete', 'delete', () => this.actions.remove(c.code), 'danger'));
      fill(box, controls);
    });
  }

  #lines(session) {
    const lines = session?.messages || [];
    if (lines.length < this.shownLines) {
      fill(this.parts.log);
      this.shownLines = 0;
    }
    for (const line of lines.slice(this.shownLines)) {
      this.parts.log.appendChild(chatLine(line, { mine: line.mine }));
    }
    if (lines.length > this.shownLines) this.parts.log.scrollTop = this.parts.log.scrollHeight;
    this.shownLines = lines.length;
  }
}

/**
 * Why this agent is not chatting in the case, and what it can do: take it,
 * join it, take it over, or (a non-admin on someone else's case, which the
 * broker refuses to seat) whom to ask.
 */
function whyNotInSession(c, state) {
  const { me } = state;
  if (!c.assignee) {
    return 'You are viewing this case; the customer is not told. Take it to chat with the customer.';
  }
  if (c.assignee === me.id) return 'This case is yours. Join its session to chat with the customer.';
  const agent = state.agents.get(c.assignee);
  const name = agent?.name || c.assignee;
  const where = whereIs(agent);
  if (me.admin) {
    const who = where && where !== 'available' ? `${name}, who is ${where}` : name;
    return `Assigned to ${who}. Take it over to chat with the customer.`;
  }
  if (where === 'offline') return `Assigned to ${name}, who is offline: ask an admin to reassign it.`;
  if (where === 'away') return `Assigned to ${name}, who is away: ask ${name} or an admin to reassign it.`;
  return `Assigned to ${name}: only ${name} or an admin can chat with the customer.`;
}

/** The last automatic assignment's reasons, in a sentence; null when none. */
function whyThisAgent(decisions, agentName) {
  const d = decisions?.[decisions.length - 1];
  if (!d) return null;
  const policy = d.policy === 'round_robin' ? 'Round robin' : 'Least loaded';
  const others = d.candidates
    .filter((c) => c.agent !== d.chosen)
    .map((c) => `${agentName(c.agent)}: ${c.reason} (${c.open_cases} open)`);
  return [`${policy} picked ${agentName(d.chosen)}`, ...others].join('; ');
}

/** A case's service levels, in words. */
function slaText(sla) {
  const missed = { first_response: 'first response missed', resolution: 'resolution missed' };
  const parts = [];
  if (sla.first_response_due) parts.push(`first response by ${dateTime(sla.first_response_due)}`);
  if (sla.resolution_due) parts.push(`resolved by ${dateTime(sla.resolution_due)}`);
  for (const k of sla.breached) parts.push(missed[k] || k);
  return parts.join('; ');
}
