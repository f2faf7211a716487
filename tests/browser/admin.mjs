// End-to-end test of the dashboard's admin page in Chromium, against a
// running broker. Run by tests/browser.rs:
//
//   node tests/browser/admin.mjs --url http://127.0.0.1:PORT --admin-token T
//     --admin-name NAME --agent-token T --agent-name NAME --agent-id ID
//     --module KEY --company-name NAME [--screenshots DIR]
//     [--chromium /usr/bin/chromium]
//
// --agent-* is a plain agent declared in the config file, --module a key
// declared there. An admin adds, changes and deletes agents, groups and
// module keys through the page; what it does is checked where it shows:
// in the admin's second dashboard tab (without reload), in the dashboard
// of the agent it added, on the help page of the key it added, and in the
// API. Every step waits for what it expects with a timeout (never a fixed
// sleep). Any console error or uncaught page error fails the run.

import { parseArgs } from 'node:util';
import path from 'node:path';
import { check, finish, launch, problems, signIn, step, unlabelled, watch } from './lib.mjs';

const { values: opt } = parseArgs({
  options: {
    url: { type: 'string' },
    'admin-token': { type: 'string' },
    'admin-name': { type: 'string' },
    'agent-token': { type: 'string' },
    'agent-name': { type: 'string' },
    'agent-id': { type: 'string' },
    module: { type: 'string' },
    'company-name': { type: 'string' },
    screenshots: { type: 'string' },
    chromium: { type: 'string', default: process.env.CHROMIUM || '/usr/bin/chromium' },
  },
});
for (const k of ['url', 'admin-token', 'admin-name', 'agent-token', 'agent-name', 'agent-id', 'module',
  'company-name']) {
  if (!opt[k]) {
    console.error(`admin: --${k} is required`);
    process.exit(2);
  }
}
const URL_ = opt.url.replace(/\/$/, '');
const ADMIN = opt['admin-name'];
const AGENT = opt['agent-name'];
const WIDE = 1280;
const NARROW = 400;
const PAYLOAD = '<img src=x onerror=window.__pwned=1>';

/** The HTTP API as the holder of `token`: status and JSON body. */
async function api(token, method, route, body) {
  const headers = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(`${URL_}${route}`, { method, headers, body: body && JSON.stringify(body) });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

const browser = await launch(opt.chromium);

let failure = null;
try {
  const adminCtx = await browser.newContext({
    viewport: { width: WIDE, height: 900 },
    permissions: ['clipboard-read', 'clipboard-write'],
  });
  // One page per context: a page in the background of its window gets few
  // animation frames, and Playwright waits for frames before it clicks.
  const tabCtx = await browser.newContext({ viewport: { width: WIDE, height: 900 } });
  const otherCtx = await browser.newContext({ viewport: { width: WIDE, height: 900 } });
  const newCtx = await browser.newContext({ viewport: { width: WIDE, height: 900 } });
  for (const ctx of [adminCtx, tabCtx, otherCtx, newCtx]) ctx.setDefaultTimeout(10_000);

  // Refusals the page shows on purpose (no group: 400, a group in use: 409)
  // are logged by Chromium as failed loads too.
  const dash = watch(await adminCtx.newPage(), 'admin page', { allow: [/status of (400|409)/] });
  const tab = watch(await tabCtx.newPage(), 'second admin tab');
  const plain = watch(await otherCtx.newPage(), 'plain agent');
  const erin = watch(await newCtx.newPage(), 'new agent');
  const page = dash.locator('#admin');
  const agentsList = page.locator('.dir-agents .dir-list');
  const modulesList = page.locator('.dir-modules .dir-list');
  const item = (kind, id) => page.locator(`li.dir-item[data-key="${kind}:${id}"]`);
  const token = page.getByRole('region', { name: /^Token for / });

  await step('an admin opens the admin page from the header', async () => {
    await signIn(dash, URL_, opt['admin-token']);
    const toggle = dash.getByRole('button', { name: 'Admin', exact: true });
    check((await toggle.getAttribute('aria-pressed')) === 'false', 'the Admin button is not pressed');
    await toggle.click();
    await dash.getByRole('heading', { name: 'Admin: the company directory' }).waitFor();
    check((await toggle.getAttribute('aria-pressed')) === 'true', 'the Admin button is pressed');
    check(await dash.locator('#app').isHidden(), 'the queue is hidden');
    await item('agents', opt['agent-id']).filter({ hasText: AGENT }).waitFor();
    await agentsList.getByText(`${ADMIN} (you)`).waitFor();
    await item('modules', opt.module).waitFor();
    // The config file's entries are read-only here.
    for (const row of [item('agents', opt['agent-id']), item('modules', opt.module)]) {
      await row.getByText('Declared in the config file').waitFor();
      check((await row.getByRole('button', { name: 'Edit' }).count()) === 0, 'a config entry has no Edit');
    }
    await dash.getByRole('button', { name: 'Back to the queue' }).click();
    await dash.locator('#queue-heading').waitFor();
    check(await page.isHidden(), 'the admin page is hidden again');
    await toggle.click();
    await page.getByRole('heading', { name: 'Agents', exact: true }).waitFor();
  });

  await step('a plain agent has no Admin button and the API refuses it (403)', async () => {
    await signIn(plain, URL_, opt['agent-token']);
    await plain.locator('#me', { hasText: AGENT }).waitFor();
    check(await plain.locator('#admin-toggle').isHidden(), 'the plain agent sees no Admin button');
    for (const route of ['/v1/admin/agents', '/v1/admin/groups', '/v1/admin/modules']) {
      const r = await api(opt['agent-token'], 'GET', route);
      check(r.status === 403 && r.body?.code === 'forbidden', `GET ${route} as a plain agent: ${r.status}`);
    }
  });

  await step('a second admin tab is open on the queue', async () => {
    await signIn(tab, URL_, opt['admin-token']);
    await tab.locator('#agents li', { hasText: AGENT }).waitFor();
  });

  let code = '';
  await step('the second tab opens a case of the group the new agent will join', async () => {
    const r = await api(opt['admin-token'], 'POST', '/v1/cases', { group: 'support', name: 'Printer offline' });
    check(r.status === 201, `POST /v1/cases answered ${r.status}`);
    code = r.body.code;
    await tab.locator(`#queue-rows tr[data-code="${code}"]`).getByRole('button', { name: 'View', exact: true }).click();
    await tab.locator('#assign-to option', { hasText: AGENT }).waitFor({ state: 'attached' });
  });

  let first = '';
  await step('add an agent: its token is shown once, with a copy button', async () => {
    const form = page.getByRole('form', { name: 'Add an agent' });
    await form.getByLabel('Agent ID').fill('erin');
    await form.getByLabel('Name', { exact: true }).fill('Erin');
    await form.getByLabel('support', { exact: true }).check();
    await form.getByLabel('Most open cases').fill('3');
    await form.getByRole('button', { name: 'Add agent' }).click();
    await token.waitFor();
    await token.getByText('it will not be shown again').waitFor();
    first = await token.getByLabel('Token').inputValue();
    check(/^[0-9a-f]{64}$/.test(first), `the token is 64 hex digits: ${first}`);
    check(await token.getByLabel('Token').evaluate((n) => n.readOnly), 'the token field is read-only');
    await token.getByRole('button', { name: 'Copy' }).click();
    await token.getByText('Copied.').waitFor();
    check((await dash.evaluate(() => navigator.clipboard.readText())) === first, 'the token was copied');
    await item('agents', 'erin').filter({ hasText: 'up to 3 cases' }).waitFor();
    await page.locator('.dir-agents .dir-status', { hasText: 'Erin was added.' }).waitFor();
    // The other dashboards hear of the new agent: in the agents panel and
    // in the open case's assign-to list.
    await tab.locator('#agents li', { hasText: 'Erin' }).waitFor();
    await tab.locator('#assign-to option[value="erin"]', { hasText: 'Erin' }).waitFor({ state: 'attached' });
    await token.getByRole('button', { name: 'Done' }).click();
    await token.waitFor({ state: 'detached' });
    check(!(await dash.content()).includes(first), 'the token is gone from the page once dismissed');
  });

  await step('the new token signs in', async () => {
    await signIn(erin, URL_, first);
    await erin.locator('#me', { hasText: 'Erin' }).waitFor();
    check(await erin.locator('#admin-toggle').isHidden(), 'a new plain agent has no Admin button');
  });

  await step('change its name and groups; its dashboard follows', async () => {
    await item('agents', 'erin').getByRole('button', { name: 'Edit' }).click();
    const form = page.getByRole('form', { name: 'Edit Erin' });
    check(await dash.evaluate(() => document.activeElement?.id === 'edit-agents:erin-name'),
      'the name field has the focus');
    await form.getByLabel('Name', { exact: true }).fill('Erin Novak');
    await form.getByLabel('sales', { exact: true }).check();
    await form.getByRole('button', { name: 'Save' }).click();
    await item('agents', 'erin').filter({ hasText: 'Erin Novak' }).filter({ hasText: /Groups: .*sales/ }).waitFor();
    await tab.locator('#agents li', { hasText: 'Erin Novak' }).waitFor();
    await tab.locator('#assign-to option[value="erin"]', { hasText: 'Erin Novak' }).waitFor({ state: 'attached' });
    // The agent's connection is renewed with what it now is.
    await erin.locator('#me', { hasText: 'Erin Novak' }).waitFor();
    await erin.locator('#nc-group option[value="sales"]').waitFor({ state: 'attached' });
  });

  await step('a refused change is said next to its form', async () => {
    await item('agents', 'erin').getByRole('button', { name: 'Edit' }).click();
    const form = page.getByRole('form', { name: 'Edit Erin Novak' });
    await form.getByLabel('support', { exact: true }).uncheck();
    await form.getByLabel('sales', { exact: true }).uncheck();
    await form.getByRole('button', { name: 'Save' }).click();
    await form.getByRole('alert').filter({ hasText: 'groups' }).waitFor();
    await form.getByRole('button', { name: 'Cancel' }).click();
    await form.waitFor({ state: 'detached' });
    await item('agents', 'erin').getByRole('button', { name: 'Edit' }).waitFor();
  });

  await step('replace its token: the old one is refused, the new one signs in', async () => {
    await item('agents', 'erin').getByRole('button', { name: 'New token' }).click();
    await token.getByText('it will not be shown again').waitFor();
    const second = await token.getByLabel('Token').inputValue();
    check(/^[0-9a-f]{64}$/.test(second) && second !== first, 'a different token');
    // The agent's open dashboard is signed out at once.
    await erin.locator('#signin-error', { hasText: 'not accepted' }).waitFor();
    await erin.getByLabel('Agent token').fill(first);
    await erin.getByRole('button', { name: 'Sign in' }).click();
    await erin.locator('#signin-error', { hasText: 'not accepted' }).waitFor();
    await signIn(erin, URL_, second);
    await token.getByRole('button', { name: 'Done' }).click();
    await token.waitFor({ state: 'detached' });
  });

  await step('disable and enable it', async () => {
    await item('agents', 'erin').getByRole('button', { name: 'Disable' }).click();
    await item('agents', 'erin').locator('.badge', { hasText: 'disabled' }).waitFor();
    await erin.locator('#signin-error', { hasText: 'not accepted' }).waitFor();
    const r = await api(opt['admin-token'], 'GET', '/v1/admin/agents');
    check(r.body.agents.find((a) => a.id === 'erin')?.disabled === true, 'the API says disabled');
    await item('agents', 'erin').getByRole('button', { name: 'Enable' }).click();
    await item('agents', 'erin').getByRole('button', { name: 'Disable' }).waitFor();
    check((await item('agents', 'erin').locator('.badge', { hasText: 'disabled' }).count()) === 0, 'enabled');
  });

  await step('delete it after confirming', async () => {
    const row = item('agents', 'erin');
    await row.getByRole('button', { name: 'Delete' }).click();
    await row.getByText('Delete Erin Novak (erin)?').waitFor();
    check(await dash.evaluate(() => document.activeElement?.textContent === 'Cancel'), 'Cancel has the focus');
    await row.getByRole('button', { name: 'Cancel' }).click();
    await row.getByRole('button', { name: 'Delete' }).click();
    await row.getByRole('button', { name: 'Delete for good' }).click();
    await row.waitFor({ state: 'detached' });
    await page.locator('.dir-agents .dir-status', { hasText: 'Erin Novak was deleted.' }).waitFor();
    const r = await api(opt['admin-token'], 'GET', '/v1/admin/agents');
    check(!r.body.agents.some((a) => a.id === 'erin'), 'the API no longer lists it');
  });

  await step('a deleted agent leaves the other dashboards without reload', async () => {
    await tab.locator('#agents li', { hasText: 'Erin' }).waitFor({ state: 'detached' });
    await tab.locator('#assign-to option[value="erin"]').waitFor({ state: 'detached' });
    await tab.locator('#assign-to option', { hasText: AGENT }).waitFor({ state: 'attached' });
  });

  await step('add a group: an open dashboard offers it without reload', async () => {
    const form = page.getByRole('form', { name: 'Add a group' });
    await form.getByLabel('Group ID').fill('billing');
    await form.getByLabel('Name', { exact: true }).fill('Billing');
    await form.getByRole('button', { name: 'Add group' }).click();
    await item('groups', 'billing').filter({ hasText: 'Billing' }).waitFor();
    await tab.locator('#filter-group option[value="billing"]', { hasText: 'Billing' }).waitFor({ state: 'attached' });
    await tab.locator('#nc-group option[value="billing"]', { hasText: 'Billing' }).waitFor({ state: 'attached' });
    // The add forms offer it too.
    await page.getByRole('form', { name: 'Add an agent' }).getByLabel('Billing', { exact: true }).waitFor();
  });

  await step('rename a group: the open dashboard shows the new name', async () => {
    await item('groups', 'billing').getByRole('button', { name: 'Rename' }).click();
    const form = page.getByRole('form', { name: 'Rename Billing' });
    await form.getByLabel('Name', { exact: true }).fill('Billing and invoices');
    await form.getByRole('button', { name: 'Save' }).click();
    await item('groups', 'billing').filter({ hasText: 'Billing and invoices' }).waitFor();
    await tab.locator('#filter-group option[value="billing"]', { hasText: 'Billing and invoices' })
      .waitFor({ state: 'attached' });
  });

  let drawn = '';
  await step('add module keys: with a key given and with one drawn', async () => {
    const form = page.getByRole('form', { name: 'Add a module key' });
    await form.getByLabel('Key').fill('acme-billing');
    await form.getByLabel('Group').selectOption('billing');
    await form.getByRole('button', { name: 'Add module key' }).click();
    await item('modules', 'acme-billing').waitFor();
    await form.getByLabel('Group').selectOption('billing');
    await form.getByRole('button', { name: 'Add module key' }).click();
    const row = modulesList.locator('li.dir-item[data-key^="modules:qs-"]');
    await row.waitFor();
    drawn = (await row.getAttribute('data-key')).slice('modules:'.length);
  });

  await step('a module key shows its help link; the link opens the help page', async () => {
    const row = item('modules', 'acme-billing');
    const link = row.getByRole('link', { name: `${URL_}/help/acme-billing` });
    check((await link.getAttribute('href')) === `${URL_}/help/acme-billing`, 'the link is absolute');
    await row.getByRole('button', { name: 'Copy link' }).click();
    await row.getByText('Copied.').waitFor();
    check((await dash.evaluate(() => navigator.clipboard.readText())) === `${URL_}/help/acme-billing`,
      'the link was copied');
    const [help] = await Promise.all([adminCtx.waitForEvent('page'), link.click()]);
    watch(help, 'help page');
    await help.locator('#company', { hasText: `from ${opt['company-name']}` }).waitFor();
    await help.getByLabel('Your name').waitFor();
    await help.close();
    await dash.bringToFront();
  });

  await step('change a module key\'s default assignee, then clear it', async () => {
    const row = item('modules', drawn);
    await row.getByRole('button', { name: 'Edit' }).click();
    const form = page.getByRole('form', { name: `Edit ${drawn}` });
    await form.getByLabel('Group').selectOption('support');
    await form.getByLabel('Default assignee').selectOption({ label: AGENT });
    await form.getByRole('button', { name: 'Save' }).click();
    await row.filter({ hasText: `cases go to ${AGENT}` }).waitFor();
    await row.getByRole('button', { name: 'Edit' }).click();
    await form.getByLabel('Default assignee').selectOption('');
    await form.getByRole('button', { name: 'Save' }).click();
    await row.filter({ hasText: 'no default assignee' }).waitFor();
    const r = await api(opt['admin-token'], 'GET', '/v1/admin/modules');
    const m = r.body.modules.find((x) => x.key === drawn);
    check(m.group === 'support' && m.default_assignee === null, `the API says ${JSON.stringify(m)}`);
  });

  await step('a group in use is not deleted; the broker\'s reason is shown', async () => {
    const row = item('groups', 'billing');
    await row.getByRole('button', { name: 'Delete' }).click();
    await row.getByRole('button', { name: 'Delete for good' }).click();
    await row.getByRole('alert').filter({ hasText: 'group "billing" still has module keys ("acme-billing")' })
      .waitFor();
    check(await dash.evaluate(() => document.activeElement?.textContent === 'Delete'),
      'the focus is back on Delete');
    await tab.locator('#filter-group option[value="billing"]').waitFor({ state: 'attached' });
  });

  if (opt.screenshots) {
    await step('screenshot', async () => {
      // An agent added through the API, with its actions, beside the config file's.
      const r = await api(opt['admin-token'], 'POST', '/v1/admin/agents',
        { id: 'fatima', name: 'Fatima Rossi', groups: ['sales'], max_cases: 8 });
      check(r.status === 201, `POST /v1/admin/agents answered ${r.status}`);
      await item('agents', 'fatima').getByRole('button', { name: 'New token' }).waitFor();
      await dash.getByRole('heading', { name: 'Agents', exact: true }).scrollIntoViewIfNeeded();
      for (const status of await page.locator('.dir-status').all()) await status.waitFor({ state: 'hidden' });
      await dash.screenshot({ path: path.join(opt.screenshots, 'admin.png'), fullPage: true });
    });
  }

  await step('text from the API is shown as text', async () => {
    const r = await api(opt['admin-token'], 'POST', '/v1/admin/agents',
      { id: 'html', name: PAYLOAD, groups: ['support'] });
    check(r.status === 201, `POST /v1/admin/agents answered ${r.status}`);
    await item('agents', 'html').locator('.dir-name', { hasText: PAYLOAD }).waitFor();
    check(await dash.evaluate(() => window.__pwned === undefined), 'the payload ran');
    check((await dash.locator('img[src="x"]').count()) === 0, 'an <img> was created');
  });

  await step('delete module keys after confirming; the deleted key\'s help page is gone', async () => {
    for (const key of ['acme-billing', drawn]) {
      const row = item('modules', key);
      await row.getByRole('button', { name: 'Delete' }).click();
      await row.getByRole('button', { name: 'Delete for good' }).click();
      await row.waitFor({ state: 'detached' });
    }
    const r = await fetch(`${URL_}/help/acme-billing`);
    check(r.status === 404, `the help page of a deleted key answered ${r.status}`);
  });

  await step('a group no longer in use is deleted; the open dashboard drops it', async () => {
    const row = item('groups', 'billing');
    await row.getByRole('button', { name: 'Delete' }).click();
    await row.getByRole('button', { name: 'Delete for good' }).click();
    await row.waitFor({ state: 'detached' });
    await tab.locator('#filter-group option[value="billing"]').waitFor({ state: 'detached' });
    await tab.locator('#nc-group option[value="billing"]').waitFor({ state: 'detached' });
  });

  await step(`every control is labelled; the admin page fits ${WIDE} px and ${NARROW} px`, async () => {
    await item('agents', 'html').getByRole('button', { name: 'Edit' }).click();
    for (const width of [WIDE, NARROW]) {
      await dash.setViewportSize({ width, height: 900 });
      const bad = await unlabelled(dash);
      check(bad.length === 0, `at ${width} px: unlabelled controls: ${bad.join(' | ')}`);
      const scroll = await dash.evaluate(() => document.documentElement.scrollWidth);
      check(scroll <= width, `at ${width} px the page is ${scroll} px wide`);
      if (opt.screenshots && width === NARROW) {
        await dash.screenshot({ path: path.join(opt.screenshots, 'admin-narrow.png'), fullPage: true });
      }
    }
    await dash.setViewportSize({ width: WIDE, height: 900 });
    await page.getByRole('form', { name: /^Edit / }).getByRole('button', { name: 'Cancel' }).click();
  });

  await step('signing out leaves no admin page behind', async () => {
    await dash.getByRole('button', { name: 'Sign out' }).click();
    await dash.getByLabel('Agent token').waitFor();
    check(await page.isHidden(), 'the admin page is hidden');
    check((await page.locator('*').count()) === 0, 'the admin page is emptied');
  });

  await step('no console errors', async () => {
    check(problems.length === 0, problems.join('\n'));
  });
} catch (e) {
  failure = e;
} finally {
  await browser.close();
}
finish('admin', failure);
