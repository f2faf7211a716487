// The admin page of the dashboard: the company's agents, groups and module
// keys, listed and changed through the HTTP API (/v1/admin/...). Entries
// declared in the config file are shown read-only; a new token is shown
// once. Rows are kept while their entry is unchanged, so a refresh never
// loses what an admin is typing or where the focus is.

import { el, fill, flash, rerender } from './dom.js';

const CONFIG_NOTE = 'Declared in the config file';
const KINDS = ['agents', 'groups', 'modules'];

/** A copy to the clipboard; with no clipboard access, the field's text is selected for Ctrl+C. */
async function copy(text, field) {
  try {
    await navigator.clipboard.writeText(text);
    return 'Copied.';
  } catch {
    if (!field) return 'Could not copy: copy it by hand.';
    field.select();
    return 'Selected: press Ctrl+C to copy.';
  }
}

/** A button; `key` keeps the focus on it when its row is drawn again. */
const button = (text, key, onClick, cls) =>
  el('button', { type: 'button', class: cls, dataset: { key }, text, on: { click: onClick } });

/** A labelled field of a form; its control keeps the focus when its row is drawn again. */
function field(label, control, hint) {
  control.dataset.key = control.id;
  return el('div', { class: 'field' }, el('label', { for: control.id, text: label }), control,
    hint ? el('span', { class: 'hint muted', text: hint }) : null);
}

/** Sets a select's options (`[value, text]`), leaving it alone when they are the same. */
function options(select, list) {
  const have = [...select.options].map((o) => [o.value, o.text]);
  if (JSON.stringify(have) === JSON.stringify(list)) return;
  fill(select, list.map(([value, text]) => el('option', { value, text })));
}

/** The values of the checked boxes in `box`. */
const checked = (box) => [...box.querySelectorAll('input:checked')].map((i) => i.value);

export class AdminView {
  /**
   * `root`: where to draw. `call(method, path, body)`: the HTTP API as the
   * signed-in agent (resolves with the answer, rejects with an ApiError).
   * `me()`: the signed-in agent. `close()`: back to the queue.
   */
  constructor(root, { call, me, close }) {
    this.root = root;
    this.call = call;
    this.me = me;
    this.close = close;
    this.reset();
  }

  /** Forgets everything, the token on show included. */
  reset() {
    fill(this.root);
    this.parts = null;
    this.data = { agents: [], groups: [], modules: [] };
    /** Whether the broker manages groups at run time (an older one answers 404). */
    this.groupsApi = true;
    this.loadErrors = {};
    this.rows = {};
    this.editing = null;
    this.confirming = null;
    this.errors = new Map();
    this.pending = new Set();
    clearTimeout(this.timer);
  }

  get shown() {
    return !this.root.hidden;
  }

  /** Shows the page, loaded afresh, with the focus on its heading. */
  async open() {
    if (!this.parts) this.#build();
    this.root.hidden = false;
    this.parts.heading.focus();
    await this.load(KINDS);
  }

  /** Hides the page; a token on show is gone for good. */
  hide() {
    this.root.hidden = true;
    this.#dismissToken(false);
  }

  /** Loads the lists again soon, once for a burst of changes (pushes). */
  refresh(kind) {
    if (!this.shown) return;
    this.pending.add(kind);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      const kinds = [...this.pending];
      this.pending.clear();
      this.load(kinds);
    }, 150);
  }

  async load(kinds) {
    await Promise.all(kinds.map(async (kind) => {
      try {
        this.data[kind] = (await this.call('GET', `/v1/admin/${kind}`))[kind];
        this.loadErrors[kind] = '';
      } catch (e) {
        if (kind === 'groups' && e.status === 404) this.groupsApi = false;
        else this.loadErrors[kind] = `Could not load the list: ${e.message}`;
      }
    }));
    this.#draw();
  }

  /** The groups to offer: the broker's, or (older broker) those in use. */
  groups() {
    if (this.groupsApi) return this.data.groups;
    const ids = new Set(this.me().groups);
    for (const a of this.data.agents) for (const g of a.groups) ids.add(g);
    for (const m of this.data.modules) ids.add(m.group);
    return [...ids].sort().map((id) => ({ id, name: id, source: 'config' }));
  }

  groupName(id) {
    return this.groups().find((g) => g.id === id)?.name || id;
  }

  agentName(id) {
    return this.data.agents.find((a) => a.id === id)?.name || id;
  }

  // ---- the page

  #build() {
    const section = (kind, title, intro, form) => {
      const p = {
        heading: el('h3', { id: `dir-${kind}-heading`, tabindex: '-1', text: title }),
        list: el('ul', { class: 'dir-list', 'aria-label': title }),
        error: el('p', { class: 'error', role: 'alert' }),
        status: el('p', { class: 'status-line dir-status', role: 'status', 'aria-live': 'polite', hidden: true }),
        form,
      };
      p.node = el('section', { class: `card dir-section dir-${kind}`, 'aria-labelledby': `dir-${kind}-heading` },
        p.heading, el('p', { class: 'muted', text: intro }),
        p.status, p.error, p.list, form);
      return p;
    };
    this.parts = {
      heading: el('h2', { id: 'admin-heading', tabindex: '-1', text: 'Admin: the company directory' }),
      token: el('div', { class: 'token-slot' }),
    };
    this.parts.agents = section('agents', 'Agents', 'Who signs in to this dashboard, in which groups, with how many cases.',
      this.#addAgentForm());
    this.parts.groups = section('groups', 'Groups', 'Cases, agents and module keys belong to a group.',
      this.#addGroupForm());
    this.parts.modules = section('modules', 'Module keys',
      'Each key is a help link for customers; its cases go to its group.', this.#addModuleForm());
    this.parts.agents.node.insertBefore(this.parts.token, this.parts.agents.status);
    fill(this.root,
      el('div', { class: 'admin-head' }, this.parts.heading,
        button('Back to the queue', 'admin-back', () => this.close(), 'small')),
      el('div', { class: 'admin-grid' }, this.parts.agents.node, this.parts.groups.node, this.parts.modules.node));
  }

  #draw() {
    if (!this.parts) return;
    const groups = this.groups();
    // What a row shows besides its entry: the names of groups and agents.
    const names = JSON.stringify([groups, this.data.agents.map((a) => [a.id, a.name])]);
    for (const kind of KINDS) this.parts[kind].error.textContent = this.loadErrors[kind] || '';
    this.#list('agents', this.data.agents, (a) => a.id, names, (a, key) => this.#agentRow(a, key),
      (a, key) => this.#agentEdit(a, key));
    this.#list('groups', groups, (g) => g.id, names, (g, key) => this.#groupRow(g, key),
      (g, key) => this.#groupEdit(g, key));
    this.#list('modules', this.data.modules, (m) => m.key, names, (m, key) => this.#moduleRow(m, key),
      (m, key) => this.#moduleEdit(m, key));
    this.#groupChoices(this.parts.agentGroups, 'add-agent-group', checked(this.parts.agentGroups));
    this.#groupSelect(this.parts.moduleGroup);
    this.#assigneeSelect(this.parts.moduleAssignee, this.parts.moduleGroup.value);
    this.parts.groups.form.hidden = !this.groupsApi;
  }

  /**
   * Draws `items` into the section's list, one row each, keeping the rows
   * whose entry and state are unchanged and the one being edited.
   */
  #list(kind, items, idOf, names, view, edit) {
    const before = this.rows[kind] || new Map();
    const after = new Map();
    const nodes = items.map((item) => {
      const key = `${kind}:${idOf(item)}`;
      const sig = this.editing === key
        ? 'edit'
        : JSON.stringify([item, names, this.confirming === key, this.errors.get(key) || '']);
      const old = before.get(key);
      const node = old && old.sig === sig ? old.node : sig === 'edit' ? edit(item, key) : view(item, key);
      after.set(key, { sig, node });
      return node;
    });
    this.rows[kind] = after;
    const list = this.parts[kind].list;
    const kept = list.children;
    if (nodes.length && nodes.length === kept.length && nodes.every((n, i) => kept[i] === n)) return;
    rerender(list, () => fill(list, nodes.length ? nodes : el('li', { class: 'muted', text: 'None yet.' })));
  }

  /** Focuses the control with `data-key` once drawn. */
  #focus(key) {
    const node = this.root.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (node) node.focus();
  }

  /** Runs a call for a row; a refusal is said in the row. Resolves true when done. */
  async #rowCall(key, method, path, body) {
    this.errors.delete(key);
    try {
      const r = await this.call(method, path, body);
      return r ?? true;
    } catch (e) {
      this.errors.set(key, e.message);
      this.#draw();
      return null;
    }
  }

  /** After a change made here: the lists again, and a word in the section. */
  async #done(kind, text) {
    flash(this.parts[kind].status, text);
    await this.load(KINDS);
  }

  #edit(key) {
    this.editing = key;
    this.confirming = null;
    this.errors.delete(key);
    this.#draw();
    this.root.querySelector(`[data-key="${CSS.escape(key)}"] input, [data-key="${CSS.escape(key)}"] select`)?.focus();
  }

  #cancel(key) {
    const back = this.editing === key ? 'edit' : 'delete';
    if (this.editing === key) this.editing = null;
    if (this.confirming === key) this.confirming = null;
    this.#draw();
    this.#focus(`${key}:${back}`);
  }

  /**
   * Deletes a row's entry once confirmed. A refusal (a group still in use)
   * is said in the row, the focus back on its Delete button.
   */
  async #remove(kind, key, path, text) {
    const done = await this.#rowCall(key, 'DELETE', path);
    this.confirming = null;
    if (done) {
      await this.#done(kind, text);
      this.parts[kind].heading.focus();
    } else {
      this.#draw();
      this.#focus(`${key}:delete`);
    }
  }

  #askDelete(key) {
    this.confirming = key;
    this.errors.delete(key);
    this.#draw();
    this.#focus(`${key}:cancel`);
  }

  /** A row's frame: what it is, its actions or why it has none, its confirmation and its error. */
  #row(key, source, main, actions, confirmText, remove) {
    const error = this.errors.get(key);
    let tail;
    if (source === 'config') tail = el('p', { class: 'dir-note', text: CONFIG_NOTE });
    else if (this.confirming === key) {
      tail = el('div', { class: 'dir-confirm', role: 'group', 'aria-label': 'Confirm the deletion' },
        el('p', { text: confirmText }),
        button('Delete for good', `${key}:confirm`, remove, 'danger'),
        button('Cancel', `${key}:cancel`, () => this.#cancel(key)));
    } else tail = el('div', { class: 'row-actions' }, actions);
    return el('li', { class: 'dir-item', dataset: { key } }, main, tail,
      error ? el('p', { class: 'error', role: 'alert', text: error }) : null);
  }

  /** An edit form in a row. */
  #editForm(key, label, controls, save) {
    const error = el('p', { class: 'error', role: 'alert' });
    return el('li', { class: 'dir-item editing', dataset: { key } },
      el('form', {
        class: 'dir-form', 'aria-label': label,
        on: {
          submit: async (ev) => {
            ev.preventDefault();
            error.textContent = '';
            try {
              await save();
            } catch (e) {
              error.textContent = e.message;
            }
          },
        },
      }, controls,
      el('div', { class: 'row-actions' },
        el('button', { type: 'submit', class: 'primary small', text: 'Save' }),
        button('Cancel', `${key}:cancel`, () => this.#cancel(key), 'small')),
      error));
  }

  /** A form that adds an entry, with its error said under it. */
  #addForm(label, controls, submitText, add) {
    const error = el('p', { class: 'error', role: 'alert' });
    const form = el('form', {
      class: 'dir-form dir-add', 'aria-label': label,
      on: {
        submit: async (ev) => {
          ev.preventDefault();
          error.textContent = '';
          try {
            await add(form);
          } catch (e) {
            error.textContent = e.message;
          }
        },
      },
    }, el('h4', { text: label }), controls,
    el('button', { type: 'submit', class: 'primary', text: submitText }), error);
    return form;
  }

  // ---- agents

  #agentRow(a, key) {
    const path = `/v1/admin/agents/${encodeURIComponent(a.id)}`;
    const you = a.id === this.me().id;
    const main = el('div', { class: 'dir-main' },
      el('span', { class: 'dir-name', text: you ? `${a.name} (you)` : a.name }),
      el('code', { class: 'dir-id', text: a.id }),
      a.admin ? el('span', { class: 'badge', text: 'admin' }) : null,
      a.disabled ? el('span', { class: 'badge expired', text: 'disabled' }) : null,
      el('span', { class: 'dir-meta', text: `Groups: ${a.groups.map((g) => this.groupName(g)).join(', ')} · up to ${a.max_cases} cases` }));
    const actions = [
      button('Edit', `${key}:edit`, () => this.#edit(key), 'small'),
      button(a.disabled ? 'Enable' : 'Disable', `${key}:disable`, async () => {
        if (await this.#rowCall(key, 'PATCH', path, { disabled: !a.disabled })) {
          await this.#done('agents', `${a.name} is ${a.disabled ? 'enabled' : 'disabled'}.`);
        }
      }, 'small'),
      button('New token', `${key}:token`, async () => {
        const r = await this.#rowCall(key, 'POST', `${path}/token`);
        if (r) {
          this.#showToken(a, r.token, 'Its old token no longer works.');
          await this.load(KINDS);
        }
      }, 'small'),
      button('Delete', `${key}:delete`, () => this.#askDelete(key), 'small danger'),
    ];
    return this.#row(key, a.source, main, actions,
      `Delete ${a.name} (${a.id})? The agent can no longer sign in and its open cases go back to the queue.`,
      () => this.#remove('agents', key, path, `${a.name} was deleted.`));
  }

  #agentEdit(a, key) {
    const id = (what) => `edit-${key}-${what}`;
    const name = el('input', { id: id('name'), value: a.name, maxlength: 100, required: true });
    const groups = el('fieldset', { class: 'dir-group-choices' });
    this.#groupChoices(groups, id('group'), a.groups);
    const admin = el('input', { type: 'checkbox', id: id('admin'), checked: a.admin, dataset: { key: id('admin') } });
    const max = el('input', { type: 'number', id: id('max'), min: 0, max: 1000, value: a.max_cases, required: true });
    return this.#editForm(key, `Edit ${a.name}`, [
      field('Name', name), groups,
      el('label', { class: 'check', for: admin.id }, admin, 'Admin'),
      field('Most open cases', max),
    ], async () => {
      await this.call('PATCH', `/v1/admin/agents/${encodeURIComponent(a.id)}`, {
        name: name.value.trim(), groups: checked(groups), admin: admin.checked, max_cases: Number(max.value),
      });
      this.editing = null;
      await this.#done('agents', `${name.value.trim()} was saved.`);
      this.#focus(`${key}:edit`);
    });
  }

  #addAgentForm() {
    const id = el('input', { id: 'add-agent-id', maxlength: 64, required: true, autocomplete: 'off', spellcheck: 'false' });
    const name = el('input', { id: 'add-agent-name', maxlength: 100, required: true, autocomplete: 'off' });
    const groups = el('fieldset', { class: 'dir-group-choices' });
    const admin = el('input', { type: 'checkbox', id: 'add-agent-admin' });
    const max = el('input', { type: 'number', id: 'add-agent-max', min: 0, max: 1000, placeholder: '5' });
    this.parts.agentGroups = groups;
    return this.#addForm('Add an agent', [
      field('Agent ID', id, 'Letters, digits, - _ and .'), field('Name', name), groups,
      el('label', { class: 'check', for: admin.id }, admin, 'Admin'),
      field('Most open cases', max, 'Empty: 5'),
    ], 'Add agent', async (form) => {
      const body = { id: id.value.trim(), name: name.value.trim(), groups: checked(groups) };
      if (admin.checked) body.admin = true;
      if (max.value !== '') body.max_cases = Number(max.value);
      const r = await this.call('POST', '/v1/admin/agents', body);
      form.reset();
      this.#showToken(r.agent, r.token, 'The agent signs in with it.');
      await this.#done('agents', `${r.agent.name} was added.`);
    });
  }

  /** Fills a fieldset with one checkbox per group, `want` checked. */
  #groupChoices(box, prefix, want) {
    const groups = this.groups();
    const sig = JSON.stringify([groups.map((g) => [g.id, g.name]), want]);
    if (box.dataset.sig === sig) return;
    box.dataset.sig = sig;
    fill(box, el('legend', { text: 'Groups' }), groups.map((g) => {
      const id = `${prefix}-${g.id}`;
      const input = el('input', { type: 'checkbox', id, value: g.id, checked: want.includes(g.id), dataset: { key: id } });
      return el('label', { class: 'check', for: input.id }, input, g.name);
    }));
  }

  /** Shows a token once, with a copy button, until dismissed. */
  #showToken(agent, token, note) {
    const value = el('input', { id: 'new-token', class: 'token-value', readOnly: true, value: token, spellcheck: 'false' });
    const said = el('p', { class: 'status-line', role: 'status', 'aria-live': 'polite', hidden: true });
    fill(this.parts.token, el('div', { class: 'token-once', role: 'region', 'aria-labelledby': 'token-heading' },
      el('h4', { id: 'token-heading', text: `Token for ${agent.name} (${agent.id})` }),
      el('label', { for: value.id, text: 'Token' }),
      el('div', { class: 'token-row' }, value,
        button('Copy', 'token-copy', async () => flash(said, await copy(token, value)), 'primary')),
      el('p', { class: 'token-note', text: `Copy it now: it will not be shown again. ${note}` }),
      said,
      button('Done', 'token-done', () => this.#dismissToken(true))));
    value.focus();
    value.select();
  }

  #dismissToken(focus) {
    if (!this.parts) return;
    fill(this.parts.token);
    if (focus) this.#focus('add-agent-id');
  }

  // ---- groups

  #groupRow(g, key) {
    const path = `/v1/admin/groups/${encodeURIComponent(g.id)}`;
    const main = el('div', { class: 'dir-main' },
      el('span', { class: 'dir-name', text: g.name }), el('code', { class: 'dir-id', text: g.id }));
    const actions = [
      button('Rename', `${key}:edit`, () => this.#edit(key), 'small'),
      button('Delete', `${key}:delete`, () => this.#askDelete(key), 'small danger'),
    ];
    return this.#row(key, this.groupsApi ? g.source : 'config', main, actions,
      `Delete the group ${g.name} (${g.id})?`,
      () => this.#remove('groups', key, path, `The group ${g.name} was deleted.`));
  }

  #groupEdit(g, key) {
    const name = el('input', { id: `edit-${key}-name`, value: g.name, maxlength: 100, required: true });
    return this.#editForm(key, `Rename ${g.name}`, [field('Name', name)], async () => {
      await this.call('PATCH', `/v1/admin/groups/${encodeURIComponent(g.id)}`, { name: name.value.trim() });
      this.editing = null;
      await this.#done('groups', `The group ${g.id} is now ${name.value.trim()}.`);
      this.#focus(`${key}:edit`);
    });
  }

  #addGroupForm() {
    const id = el('input', { id: 'add-group-id', maxlength: 64, required: true, autocomplete: 'off', spellcheck: 'false' });
    const name = el('input', { id: 'add-group-name', maxlength: 100, required: true, autocomplete: 'off' });
    return this.#addForm('Add a group', [field('Group ID', id, 'Letters, digits, - _ and .'), field('Name', name)],
      'Add group', async (form) => {
        const r = await this.call('POST', '/v1/admin/groups', { id: id.value.trim(), name: name.value.trim() });
        form.reset();
        await this.#done('groups', `The group ${r.group.name} was added.`);
      });
  }

  // ---- module keys

  #moduleRow(m, key) {
    const path = `/v1/admin/modules/${encodeURIComponent(m.key)}`;
    const link = new URL(m.help_path, location.origin).href;
    const said = el('span', { class: 'copied', role: 'status', 'aria-live': 'polite' });
    const main = el('div', { class: 'dir-main' },
      el('code', { class: 'dir-name', text: m.key }),
      el('span', { class: 'dir-meta', text: `Group: ${this.groupName(m.group)} · ${
        m.default_assignee ? `cases go to ${this.agentName(m.default_assignee)}` : 'no default assignee'}` }),
      el('span', { class: 'dir-link' }, 'Help link: ',
        el('a', { href: link, target: '_blank', rel: 'noopener', text: link }), ' ',
        button('Copy link', `${key}:copy`, async () => flash(said, await copy(link)), 'small'), ' ', said));
    const actions = [
      button('Edit', `${key}:edit`, () => this.#edit(key), 'small'),
      button('Delete', `${key}:delete`, () => this.#askDelete(key), 'small danger'),
    ];
    return this.#row(key, m.source, main, actions,
      `Delete the module key ${m.key}? Its help link stops working; its cases stay.`,
      () => this.#remove('modules', key, path, `The module key ${m.key} was deleted.`));
  }

  #moduleEdit(m, key) {
    const group = el('select', { id: `edit-${key}-group` });
    const assignee = el('select', { id: `edit-${key}-assignee` });
    this.#groupSelect(group, m.group);
    this.#assigneeSelect(assignee, m.group, m.default_assignee || '');
    group.addEventListener('change', () => this.#assigneeSelect(assignee, group.value));
    return this.#editForm(key, `Edit ${m.key}`, [field('Group', group), field('Default assignee', assignee)],
      async () => {
        await this.call('PATCH', `/v1/admin/modules/${encodeURIComponent(m.key)}`, {
          group: group.value, default_assignee: assignee.value || null,
        });
        this.editing = null;
        await this.#done('modules', `The module key ${m.key} was saved.`);
        this.#focus(`${key}:edit`);
      });
  }

  #addModuleForm() {
    const key = el('input', { id: 'add-module-key', maxlength: 64, autocomplete: 'off', spellcheck: 'false' });
    const group = el('select', { id: 'add-module-group', required: true });
    const assignee = el('select', { id: 'add-module-assignee' });
    group.addEventListener('change', () => this.#assigneeSelect(assignee, group.value));
    this.parts.moduleGroup = group;
    this.parts.moduleAssignee = assignee;
    return this.#addForm('Add a module key', [
      field('Key', key, 'Empty: a key is drawn'), field('Group', group), field('Default assignee', assignee),
    ], 'Add module key', async (form) => {
      const body = { group: group.value };
      if (key.value.trim()) body.key = key.value.trim();
      if (assignee.value) body.default_assignee = assignee.value;
      const r = await this.call('POST', '/v1/admin/modules', body);
      form.reset();
      await this.#done('modules', `The module key ${r.module.key} was added.`);
    });
  }

  /** Fills a select with the groups, keeping (or setting) its choice. */
  #groupSelect(select, want = select.value) {
    const groups = this.groups();
    options(select, groups.map((g) => [g.id, g.name]));
    if (groups.some((g) => g.id === want)) select.value = want;
  }

  /** Fills a select with the active agents of `group` who may take its cases by default. */
  #assigneeSelect(select, group, want = select.value) {
    const agents = this.data.agents.filter((a) => !a.disabled && a.groups.includes(group));
    options(select, [['', 'None'], ...agents.map((a) => [a.id, a.name])]);
    select.value = agents.some((a) => a.id === want) ? want : '';
  }
}
