// End-to-end test of the agent dashboard and the customer help page in
// Chromium, against a running broker. Run by tests/browser.rs:
//
//   node tests/browser/e2e.mjs --url http://127.0.0.1:PORT --admin-token T
//     --admin-name NAME --agent-token T --agent-name NAME --module KEY
//     --assigned-module KEY --offline-agent ID --offline-agent-name NAME
//     [--screenshots DIR] [--chromium /usr/bin/chromium]
//
// --assigned-module names a module whose cases go to the plain agent at
// once; --offline-agent an agent of the module's group that never signs in.
// Every step waits for what it expects with a timeout (never a fixed
// sleep). Any console error or uncaught page error fails the run.

import { parseArgs } from 'node:util';
import path from 'node:path';
import { check, finish, launch, problems, step, unlabelled, watch } from './lib.mjs';
import { fitsWindow, times } from './queue-checks.mjs';

const { values: opt } = parseArgs({
  options: {
    url: { type: 'string' },
    'admin-token': { type: 'string' },
    'admin-name': { type: 'string' },
    'agent-token': { type: 'string' },
    'agent-name': { type: 'string' },
    module: { type: 'string' },
    'company-name': { type: 'string' },
    'assigned-module': { type: 'string' },
    'offline-agent': { type: 'string' },
    'offline-agent-name': { type: 'string' },
    screenshots: { type: 'string' },
    chromium: { type: 'string', default: process.env.CHROMIUM || '/usr/bin/chromium' },
  },
});
for (const k of ['url', 'admin-token', 'admin-name', 'agent-token', 'agent-name', 'module',
  'assigned-module', 'offline-agent', 'offline-agent-name', 'company-name']) {
  if (!opt[k]) {
    console.error(`e2e: --${k} is required`);
    process.exit(2);
  }
}
const URL_ = opt.url.replace(/\/$/, '');
const ADMIN = opt['admin-name'];
const AGENT = opt['agent-name'];
const OFFLINE = opt['offline-agent-name'];
const PAYLOAD = '<img src=x onerror=window.__pwned=1>';
/** The widths the dashboard must fit without scrolling sideways. */
const WIDE = 1280;
const NARROW = 400;
// Long names and addresses, to push the queue's columns apart.
const LONG = {
  manualName: 'Printer in the second-floor copy room jams on page 2 of every long double-sided job',
  manualCustomer: 'Maximiliane Alexandrina von Wolkenstein-Oberhausen',
  manualEmail: 'maximiliane.alexandrina.wolkenstein-oberhausen@accounting-department.example.com',
  offlineName: 'Quarterly invoices from the accounting system print with overlapping columns',
  offlineCustomer: 'Bartholomew Fitzgerald-Montgomery Vanderbilt-Ashworth',
  description:
    'My screen stays black after the update. It started this morning after the laptop restarted ' +
    'twice, and now the fan is very loud whenever I plug in the second monitor.',
};

/** A help request over HTTP, as a customer's app would make it. */
async function helpOverHttp(name) {
  const r = await fetch(`${URL_}/v1/help`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ module: opt.module, name, description: 'Sent while the dashboard was offline' }),
  });
  check(r.status === 201, `POST /v1/help answered ${r.status}`);
  return (await r.json()).code;
}

/** A case created over HTTP by the admin, as an integration would. */
async function caseOverHttp(body) {
  const r = await fetch(`${URL_}/v1/cases`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${opt['admin-token']}` },
    body: JSON.stringify(body),
  });
  const text = await r.text();
  check(r.status === 201, `POST /v1/cases answered ${r.status}: ${text}`);
  // The answer is the case itself.
  return JSON.parse(text).code;
}

const browser = await launch(opt.chromium);

let failure = null;
try {
  const agentCtx = await browser.newContext({ viewport: { width: WIDE, height: 900 } });
  const customerCtx = await browser.newContext({ viewport: { width: 360, height: 780 } });
  const bobCtx = await browser.newContext({ viewport: { width: WIDE, height: 900 } });
  for (const ctx of [agentCtx, customerCtx, bobCtx]) ctx.setDefaultTimeout(10_000);

  const dash = watch(await agentCtx.newPage(), 'dashboard');
  const frames = { sent: [], received: [] };
  dash.on('websocket', (ws) => {
    ws.on('framesent', (f) => frames.sent.push(String(f.payload)));
    ws.on('framereceived', (f) => frames.received.push(String(f.payload)));
  });
  dash.on('dialog', (d) => d.accept());
  // The queue's HTTP reads, to tell a live push from a reload.
  const listed = [];
  dash.on('request', (r) => {
    if (new URL(r.url()).pathname === '/v1/cases') listed.push(r.url());
  });
  const help = watch(await customerCtx.newPage(), 'help page');
  help.on('dialog', (d) => d.accept());
  const bob = watch(await bobCtx.newPage(), 'second dashboard');
  const bobSent = [];
  bob.on('websocket', (ws) => ws.on('framesent', (f) => bobSent.push(JSON.parse(String(f.payload)))));

  const row = (page, code) => page.locator(`#queue-rows tr[data-code="${code}"]`);
  const panel = dash.locator('#case-panel');
  let code = '';

  await step('dashboard: sign in with the keyboard', async () => {
    const resp = await dash.goto(`${URL_}/`);
    check(resp.status() === 200, `GET / answered ${resp.status()}`);
    const csp = resp.headers()['content-security-policy'] || '';
    check(csp.includes("default-src 'self'"), `CSP: ${csp}`);
    // Connections to the broker alone; "Live" below shows that Chromium
    // counts the page's own ws: origin as 'self'.
    const connect = csp.split(';').map((d) => d.trim()).find((d) => d.startsWith('connect-src'));
    check(connect === "connect-src 'self'", `CSP connect-src: ${connect}`);
    await dash.getByLabel('Agent token').waitFor();
    check(await dash.evaluate(() => document.activeElement?.id === 'token'), 'the token field has focus');
    await dash.keyboard.type(opt['admin-token']);
    await dash.keyboard.press('Enter');
    await dash.locator('#connection', { hasText: 'Live' }).waitFor();
    await dash.locator('#me', { hasText: ADMIN }).waitFor();
    const stored = await dash.evaluate(() => ({
      session: sessionStorage.getItem('casebroker.token'),
      local: JSON.stringify(localStorage),
    }));
    check(stored.session === opt['admin-token'], 'the token is kept in sessionStorage');
    check(!stored.local.includes(opt['admin-token']), 'the token is not in localStorage');
  });

  await step('second dashboard: a plain agent signs in', async () => {
    await bob.goto(`${URL_}/`);
    await bob.getByLabel('Agent token').fill(opt['agent-token']);
    await bob.getByRole('button', { name: 'Sign in' }).click();
    await bob.locator('#connection', { hasText: 'Live' }).waitFor();
    await dash.locator('#agents li', { hasText: AGENT }).filter({ hasText: 'Available' }).waitFor();
  });

  let manual = '';
  await step('dashboard: a new case by hand', async () => {
    await dash.getByText('New case', { exact: true }).click();
    await dash.getByLabel('Name', { exact: true }).fill(LONG.manualName);
    await dash.getByLabel('Customer name').fill(LONG.manualCustomer);
    await dash.getByLabel('Customer email').fill(LONG.manualEmail);
    await dash.getByLabel('Group').last().selectOption('support');
    await dash.getByLabel('Description').fill('Every second page jams in tray 2.');
    await dash.getByRole('button', { name: 'Create case' }).click();
    const r = dash.locator('#queue-rows tr', { hasText: LONG.manualName });
    await r.waitFor();
    manual = await r.getAttribute('data-code');
    await row(bob, manual).waitFor();
    // A case by hand keeps its name, with its description's first words.
    await r.locator('.topic', { hasText: LONG.manualName }).waitFor();
    await r.locator('.preview', { hasText: 'Every second page jams in tray 2.' }).waitFor();
    await r.locator('.customer-presence', { hasText: 'offline' }).waitFor();
    await dash.locator('#notice', { hasText: `Case ${manual} created.` }).waitFor();
  });

  let offline = '';
  await step('a case assigned to an agent who is offline', async () => {
    offline = await caseOverHttp({
      group: 'support',
      name: LONG.offlineName,
      description: 'Columns overlap on every invoice since the new template.',
      customer: { name: LONG.offlineCustomer, email: 'bartholomew@example.com' },
      assignee: opt['offline-agent'],
    });
    await row(dash, offline).locator('.assignee', { hasText: `${OFFLINE} (offline)` }).waitFor();
    // An admin may take it over; a plain agent may only look.
    await row(dash, offline).getByRole('button', { name: 'Take over', exact: true }).waitFor();
    await row(bob, offline).getByRole('button', { name: 'View', exact: true }).waitFor();
    check((await row(bob, offline).getByRole('button').count()) === 1, 'the plain agent has only View');
  });

  await step('customer: asks for help; the case reaches the dashboard live', async () => {
    const resp = await help.goto(`${URL_}/help/${opt.module}`);
    check(resp.status() === 200, `GET /help answered ${resp.status()}`);
    // The page names the company the link belongs to.
    await help.locator('#company', { hasText: `from ${opt['company-name']}` }).waitFor();
    check(await help.evaluate(() => document.activeElement?.id === 'name'), 'the name field has focus');
    await help.keyboard.type('Ana');
    await help.keyboard.press('Tab');
    await help.keyboard.type(LONG.description);
    await help.keyboard.press('Tab');
    await help.keyboard.press('Enter');
    const codeEl = help.locator('#code', { hasText: /^s\d{2}-\d{3}-\d{3}/ });
    await codeEl.waitFor();
    code = (await codeEl.textContent()).trim();
    const t0 = Date.now();
    const listedBefore = listed.length;
    await row(dash, code).waitFor();
    const took = Date.now() - t0;
    // Live: it came as an `event` over the socket, the queue was not read
    // again over HTTP (how fast is for the load tester, not this test).
    check(
      frames.received.some((f) => f.includes('"action":"created"') && f.includes(code)),
      `no created event for ${code} on the dashboard's socket`,
    );
    check(listed.length === listedBefore, `the queue was read again over HTTP: ${listed.slice(listedBefore)}`);
    await row(dash, code).getByText('Ana', { exact: true }).waitFor();
    await row(bob, code).waitFor();
    console.log(`   case ${code} on the dashboard ${took} ms after the customer saw its code`);
    // The row says whether the customer is there, and what the problem is
    // rather than "Help request: Ana" beside "Ana".
    const r = row(dash, code);
    await r.locator('.customer-presence', { hasText: 'online' }).waitFor();
    const topic = (await r.locator('.topic').textContent()) || '';
    check(topic.startsWith('My screen stays black after the update.') && topic.endsWith('…'),
      `the row shows the description's first words: ${JSON.stringify(topic)}`);
    check(!(await r.textContent()).includes('Help request'), 'the row does not repeat the customer');
    check(!(await r.textContent()).includes('second monitor'), 'the preview is cut');
  });

  await step('customer: waits in line with its position', async () => {
    await help.locator('#status', { hasText: 'Waiting for an agent' }).waitFor();
    await help.locator('#status', { hasText: 'number 2 in line' }).waitFor();
  });

  await step('dashboard: counts, waiting time and title', async () => {
    // Every open case with no supporter in it waits, the one assigned to an
    // offline agent included.
    await dash.locator('#counts li.waiting-count', { hasText: '3' }).waitFor();
    await dash.waitForFunction(() => document.title.startsWith('(3) '));
    // The groups' numbers: two unassigned cases wait in support's line.
    await dash.locator('#stats-tiles li[data-group="support"] dd.waiting', { hasText: /^2$/ }).waitFor();
    const before = await times(dash, code);
    check(/^Waiting \d/.test(before.wait), `the wait of a waiting case: ${before.wait}`);
    await dash.waitForFunction(
      ([c, b]) => document.querySelector(`#queue-rows tr[data-code="${c}"] .wait`)?.textContent !== b,
      [code, before.wait],
    );
  });

  await step('a plain agent views a case without taking it', async () => {
    const sentBefore = bobSent.length;
    await row(bob, code).getByRole('button', { name: 'View', exact: true }).click();
    const bobPanel = bob.locator('#case-panel');
    await bobPanel.locator('#case-heading', { hasText: code }).waitFor();
    await bobPanel.getByText(LONG.description).waitFor();
    await bobPanel.locator('.view-only', { hasText: 'the customer is not told' }).waitFor();
    await bobPanel.getByRole('button', { name: 'Take', exact: true }).waitFor();
    check(await bob.getByLabel('Message').isDisabled(), 'no chat while viewing');
    check(!bobSent.slice(sentBefore).some((m) => m.type === 'join'), 'View sent no join');
    await row(dash, code).locator('.assignee', { hasText: 'Unassigned' }).waitFor();
    check(!(await help.locator('#status').textContent()).includes(AGENT), 'the customer was not told');
    // A case of its group assigned to an offline agent: why not, and what to do.
    await row(bob, offline).getByRole('button', { name: 'View', exact: true }).click();
    await bobPanel.locator('#case-heading', { hasText: offline }).waitFor();
    await bobPanel.locator('.view-only', {
      hasText: `Assigned to ${OFFLINE}, who is offline: ask an admin to reassign it.`,
    }).waitFor();
    check((await bobPanel.getByRole('button', { name: /^Take/ }).count()) === 0, 'no Take for a plain agent');
    await bobPanel.getByRole('button', { name: 'Hide the open case' }).click();
  });

  await step('dashboard: filters by status, group and mine', async () => {
    await dash.getByLabel('Mine').check();
    await dash.locator('#queue-empty').waitFor();
    await dash.getByLabel('Mine').uncheck();
    await dash.locator('#filter-group').selectOption('sales');
    await dash.locator('#queue-empty').waitFor();
    await dash.locator('#filter-group').selectOption('');
    await dash.locator('#filter-status').selectOption('new');
    await row(dash, manual).waitFor();
    check((await row(dash, code).count()) === 0, 'a pending case is hidden by the "new" filter');
    await dash.locator('#filter-status').selectOption('open');
    await row(dash, code).waitFor();
  });

  await step('agent takes the case; the customer sees who took it', async () => {
    await row(dash, code).getByRole('button', { name: 'Take', exact: true }).click();
    await panel.locator('#case-heading', { hasText: code }).waitFor();
    await panel.getByText(LONG.description).waitFor();
    await help.locator('#status', { hasText: `${ADMIN} has joined` }).waitFor();
    await panel.locator('.seat.on', { hasText: 'Customer' }).waitFor();
    await panel.locator('.seat.on', { hasText: 'Supporter' }).waitFor();
    await row(dash, code).locator('.badge', { hasText: 'In progress' }).waitFor();
  });

  await step('the wait stops when a supporter joins; the age goes on', async () => {
    await dash.locator('#counts li.waiting-count', { hasText: '2' }).waitFor();
    await row(dash, code).locator('.wait', { hasText: /^Answered after \d/ }).waitFor();
    const before = await times(dash, code);
    await dash.waitForFunction(
      ([c, b]) => document.querySelector(`#queue-rows tr[data-code="${c}"] .age`)?.textContent !== b,
      [code, before.age],
    );
    const after = await times(dash, code);
    check(after.wait === before.wait, `the wait moved on: ${before.wait} → ${after.wait}`);
    // A dashboard that did not see the supporter join does not guess when.
    await bob.reload();
    await bob.locator('#connection', { hasText: 'Live' }).waitFor();
    await row(bob, code).locator('.wait', { hasText: /^Answered$/ }).waitFor();
  });

  await step('chat both ways', async () => {
    await dash.getByLabel('Message').fill('Hello Ana, I am looking at it now.');
    await dash.getByRole('button', { name: 'Send' }).click();
    await help.locator('#chat-log', { hasText: 'Hello Ana, I am looking at it now.' }).waitFor();
    await help.getByLabel('Message').fill('Thank you! It is still black.');
    await help.getByLabel('Message').press('Enter');
    await panel.locator('.chat-log', { hasText: 'Thank you! It is still black.' }).waitFor();
  });

  await step('the customer shares the screen; the agent watches and points; either side stops it', async () => {
    const share = help.getByRole('button', { name: 'Share my screen' });
    await help.locator('#share-status', { hasText: 'Nothing is shared until you choose' }).waitFor();
    check(await dash.locator('#screen').isHidden(), 'no screen before the customer shares');
    await share.click();
    const video = dash.getByRole('region', { name: 'Shared screen' }).locator('video');
    check((await video.getAttribute('aria-label')) === "Customer's screen", 'the video is named');
    await dash.locator('#screen').waitFor();
    // Frames arrive: a picture, and time moving on.
    await dash.waitForFunction(() => document.querySelector('#screen-video').videoWidth > 0);
    const t0 = await video.evaluate((v) => v.currentTime);
    await dash.waitForFunction((t) => document.querySelector('#screen-video').currentTime > t, t0);
    await help.locator('#share-status', { hasText: `${ADMIN} is watching` }).waitFor();
    await dash.locator('#screen-case', { hasText: code }).waitFor();
    // The agent points; the customer sees the marker over its preview.
    const box = await video.boundingBox();
    await video.click({ position: { x: box.width / 2, y: box.height / 2 } });
    await help.locator('#share-pointer').waitFor();
    await dash.locator('#screen-pointer').waitFor();
    if (opt.screenshots) await dash.screenshot({ path: path.join(opt.screenshots, 'screen.png') });
    // The customer stops: gone on both sides.
    await help.getByRole('button', { name: 'Stop sharing' }).click();
    await dash.locator('#screen').waitFor({ state: 'hidden' });
    await help.locator('#share-status', { hasText: 'You stopped sharing your screen.' }).waitFor();
    // Shared again, the agent stops watching: the customer is told.
    await share.click();
    await dash.locator('#screen').waitFor();
    await dash.getByRole('button', { name: 'Stop watching' }).click();
    await dash.locator('#screen').waitFor({ state: 'hidden' });
    await help.locator('#share-status', { hasText: 'The agent stopped watching your screen.' }).waitFor();
    check(await share.isVisible(), 'the customer may share again');
    // A reload of the customer's page ends the share on the agent's side.
    await share.click();
    await dash.locator('#screen').waitFor();
    await help.reload();
    await dash.locator('#screen').waitFor({ state: 'hidden' });
    await help.locator('#status', { hasText: `${ADMIN} has joined` }).waitFor();
    await help.getByRole('button', { name: 'Share my screen' }).waitFor();
  });

  await step('a helper joins beside the assignee; internal notes never reach the customer', async () => {
    await panel.getByLabel('Ask for help').selectOption({ label: AGENT });
    await panel.getByRole('button', { name: 'Invite', exact: true }).click();
    await panel.locator('.panel-notice', { hasText: `${AGENT} is asked to help with ${code}.` }).waitFor();
    await bob.locator('#notice', { hasText: `${ADMIN} asks you to help with case ${code}.` }).waitFor();
    const bobPanel = bob.locator('#case-panel');
    await row(bob, code).getByRole('button', { name: 'View', exact: true }).click();
    await bobPanel.getByRole('button', { name: 'Join as helper' }).click();
    await bobPanel.locator('.chat-log', { hasText: 'Thank you! It is still black.' }).waitFor();
    // The customer still sees one supporter, the assignee.
    await help.locator('#status', { hasText: `${ADMIN} has joined` }).waitFor();
    await dash.getByLabel('Internal note (agents only, never the customer)').check();
    await dash.getByLabel('Message').fill('Check the toner first.');
    await dash.getByRole('button', { name: 'Send' }).click();
    await bobPanel.locator('.line.internal', { hasText: 'Check the toner first.' }).waitFor();
    await bobPanel.locator('.line.internal .who', { hasText: 'internal, agents only' }).waitFor();
    await dash.getByLabel('Internal note (agents only, never the customer)').uncheck();
    await bob.getByLabel('Message').fill('Helper here: try a power cycle.');
    await bob.getByRole('button', { name: 'Send' }).click();
    await help.locator('#chat-log', { hasText: 'Helper here: try a power cycle.' }).waitFor();
    await panel.locator('.chat-log', { hasText: 'Helper here: try a power cycle.' }).waitFor();
    check(!(await help.locator('#chat-log').textContent()).includes('Check the toner'),
      'the customer saw an internal note');
    await bobPanel.getByRole('button', { name: 'Leave session' }).click();
    await bobPanel.getByRole('button', { name: 'Join as helper' }).waitFor();
  });

  await step('presence: away and back', async () => {
    await dash.getByRole('button', { name: 'Away', exact: true }).click();
    await dash.locator('#agents li', { hasText: ADMIN }).filter({ hasText: 'Away' }).waitFor();
    await bob.locator('#agents li', { hasText: ADMIN }).filter({ hasText: 'Away' }).waitFor();
    await dash.getByRole('button', { name: 'Available', exact: true }).click();
    await dash.locator('#agents li', { hasText: ADMIN }).filter({ hasText: 'Available' }).waitFor();
  });

  await step(`every control is labelled; the dashboards fit ${WIDE} px and ${NARROW} px, the help page 360 px`, async () => {
    for (const [label, page] of [['dashboard', dash], ['second dashboard', bob], ['help page', help]]) {
      const bad = await unlabelled(page);
      check(bad.length === 0, `${label}: unlabelled controls: ${bad.join(' | ')}`);
      const [scroll, width] = await page.evaluate(() => [document.documentElement.scrollWidth, innerWidth]);
      check(scroll <= width, `${label}: ${scroll} px wide in a ${width} px window`);
    }
    for (const [label, page] of [['dashboard', dash], ['second dashboard', bob]]) {
      await fitsWindow(page, `${label} at ${WIDE} px`);
      await page.setViewportSize({ width: NARROW, height: 900 });
      await fitsWindow(page, `${label} at ${NARROW} px`);
      const bad = await unlabelled(page);
      check(bad.length === 0, `${label} at ${NARROW} px: unlabelled controls: ${bad.join(' | ')}`);
    }
    if (opt.screenshots) {
      // The top of the page: the header and the first cases as cards.
      await dash.locator('#notice').waitFor({ state: 'hidden' });
      await dash.screenshot({ path: path.join(opt.screenshots, 'dashboard-narrow.png') });
    }
    for (const page of [dash, bob]) await page.setViewportSize({ width: WIDE, height: 900 });
  });

  await step('customer: an assigned agent is named, and nothing is promised', async () => {
    const other = watch(await customerCtx.newPage(), 'help page (assigned)');
    other.on('dialog', (d) => d.accept());
    await other.goto(`${URL_}/help/${opt['assigned-module']}`);
    await other.getByLabel('Your name').fill('Ola');
    await other.getByLabel('Describe the problem').fill('The scanner is not found.');
    await other.getByRole('button', { name: 'Get help' }).click();
    const status = other.locator('#status', { hasText: `assigned to ${AGENT}, who has not joined yet` });
    await status.waitFor();
    check(!(await status.textContent()).includes('shortly'), 'no arrival is promised');
    await other.getByRole('button', { name: 'End session' }).click();
    await other.locator('#ended', { hasText: 'closed' }).waitFor();
    await other.close();
  });

  if (opt.screenshots) {
    await step('screenshots', async () => {
      await dash.getByText('New case', { exact: true }).click();
      await dash.locator('#new-case-form').waitFor({ state: 'hidden' });
      await dash.locator('#notice').waitFor({ state: 'hidden' });
      await dash.locator('.panel-notice').waitFor({ state: 'hidden' });
      await dash.screenshot({ path: path.join(opt.screenshots, 'dashboard.png'), fullPage: true });
      await help.screenshot({ path: path.join(opt.screenshots, 'help.png'), fullPage: true });
    });
  }

  await step('customer: a reload keeps the case', async () => {
    await help.reload();
    await help.locator('#code', { hasText: code }).waitFor();
    await help.locator('#status', { hasText: `${ADMIN} has joined` }).waitFor();
    await help.locator('#chat-log', { hasText: 'Hello Ana, I am looking at it now.' }).waitFor();
    await dash.getByLabel('Message').fill('Are you still there?');
    await dash.getByRole('button', { name: 'Send' }).click();
    await help.locator('#chat-log', { hasText: 'Are you still there?' }).waitFor();
  });

  await step('dashboard: survives a dropped connection without losing an event', async () => {
    const before = frames.sent.length;
    const receivedBefore = frames.received.length;
    await dash.evaluate(() => window.casebroker.drop(3000));
    await dash.locator('#connection', { hasText: 'Reconnecting' }).waitFor();
    const missed = await helpOverHttp('Kim');
    await row(dash, missed).waitFor();
    await dash.locator('#connection', { hasText: 'Live' }).waitFor();
    const sent = frames.sent.slice(before).map((f) => JSON.parse(f));
    const sub = sent.find((m) => m.type === 'subscribe');
    check(sub && sub.resume && typeof sub.resume.seq === 'number' && sub.resume.epoch,
      `the dashboard subscribed with resume: ${JSON.stringify(sub)}`);
    const got = frames.received.slice(receivedBefore).map((f) => JSON.parse(f));
    const resumed = got.findIndex((m) => m.type === 'resumed' && m.id === sub.id);
    check(resumed >= 0, `the broker answered resumed: ${JSON.stringify(got.slice(0, 3))}`);
    const replayed = got.findIndex((m) => m.type === 'event' && m.case.code === missed);
    check(replayed > resumed && got[replayed].seq <= got[resumed].seq,
      'the missed event came in the replay after resumed');
    check(!got.some((m) => m.type === 'snapshot'), 'no fresh snapshot was needed');
    // The seat is taken again: the customer sees the agent back, chat flows.
    await help.locator('#status', { hasText: `${ADMIN} has joined` }).waitFor();
    await dash.getByLabel('Message').fill('Back after a hiccup.');
    await dash.getByRole('button', { name: 'Send' }).click();
    await help.locator('#chat-log', { hasText: 'Back after a hiccup.' }).waitFor();
  });

  await step('assign, return to queue, transfer and delete', async () => {
    await row(dash, manual).getByRole('button', { name: 'Take', exact: true }).click();
    await panel.locator('#case-heading', { hasText: manual }).waitFor();
    await panel.getByLabel('Assign to').selectOption({ label: AGENT });
    await panel.getByRole('button', { name: 'Assign', exact: true }).click();
    await row(dash, manual).locator('.assignee-name', { hasText: AGENT }).waitFor();
    await panel.locator('.panel-notice', { hasText: `Case ${manual} assigned to ${AGENT}.` }).waitFor();
    await row(bob, manual).getByRole('button', { name: 'Open', exact: true }).waitFor();
    await panel.locator('.ended', { hasText: 'another agent' }).waitFor();
    await panel.getByRole('button', { name: 'Return to queue' }).click();
    await row(dash, manual).locator('.assignee', { hasText: 'Unassigned' }).waitFor();
    // Moved to sales, a group the plain agent does not watch: it leaves
    // his queue, live, and stays on the admin's.
    await panel.getByLabel('Transfer to').selectOption('sales');
    await panel.getByRole('button', { name: 'Transfer', exact: true }).click();
    await panel.locator('.panel-notice', { hasText: `Case ${manual} moved to sales.` }).waitFor();
    await row(bob, manual).waitFor({ state: 'detached' });
    await row(dash, manual).waitFor();
    check((await panel.getByLabel('Transfer to').locator('option').allTextContents()).includes('support'),
      'the transfer list now offers the group the case left');
    await panel.getByRole('button', { name: 'Delete', exact: true }).click();
    await row(dash, manual).waitFor({ state: 'detached' });
    await row(bob, manual).waitFor({ state: 'detached' });
  });

  await step('close ends the case on both pages', async () => {
    await row(dash, code).getByRole('button', { name: 'Open', exact: true }).click();
    await panel.locator('#case-heading', { hasText: code }).waitFor();
    // A share under way ends with the case, on both sides.
    await help.getByRole('button', { name: 'Share my screen' }).click();
    await dash.locator('#screen').waitFor();
    await panel.getByRole('button', { name: 'Close case' }).click();
    await help.locator('#ended', { hasText: /closed|ended/ }).waitFor();
    await dash.locator('#screen').waitFor({ state: 'hidden' });
    check(await help.locator('#share').isHidden(), 'no share controls once ended');
    await panel.locator('.ended', { hasText: /closed|ended/ }).waitFor();
    // Said in the case's own status line, covering neither chat nor details.
    await panel.locator('.panel-notice', { hasText: `Case ${code} closed.` }).waitFor();
    check(!((await dash.locator('#notice').textContent()) || '').includes('closed'), 'said once, in the panel');
    check(await help.getByLabel('Message').isHidden(), 'the customer chat is gone once ended');
    await row(dash, code).waitFor({ state: 'detached' });
    await dash.locator('#filter-status').selectOption('closed');
    await row(dash, code).locator('.badge', { hasText: 'Closed' }).waitFor();
    await dash.locator('#filter-status').selectOption('open');
    await help.reload();
    await help.getByLabel('Your name').waitFor();
  });

  await step('a customer who types HTML sees it as text, on both pages', async () => {
    const evil = watch(await customerCtx.newPage(), 'help page (HTML)');
    await evil.goto(`${URL_}/help/${opt.module}`);
    await evil.getByLabel('Your name').fill(PAYLOAD);
    await evil.getByLabel('Describe the problem').fill(PAYLOAD);
    await evil.getByRole('button', { name: 'Get help' }).click();
    const codeEl = evil.locator('#code', { hasText: /^s\d/ });
    await codeEl.waitFor();
    const evilCode = (await codeEl.textContent()).trim();
    for (const part of ['.customer-name', '.topic']) {
      const node = row(dash, evilCode).locator(part);
      await node.waitFor();
      check((await node.textContent()) === PAYLOAD, `${part} shows the payload as text`);
    }
    await row(dash, evilCode).getByRole('button', { name: 'Take', exact: true }).click();
    await panel.locator('#case-heading', { hasText: evilCode }).waitFor();
    await panel.locator('.details dd', { hasText: PAYLOAD }).first().waitFor();
    await evil.getByLabel('Message').fill(PAYLOAD);
    await evil.getByRole('button', { name: 'Send' }).click();
    await panel.locator('.chat-log .text', { hasText: PAYLOAD }).waitFor();
    await dash.getByLabel('Message').fill(`you wrote ${PAYLOAD}`);
    await dash.getByRole('button', { name: 'Send' }).click();
    await evil.locator('#chat-log .text', { hasText: `you wrote ${PAYLOAD}` }).waitFor();
    for (const [label, page] of [['dashboard', dash], ['help page', evil], ['second dashboard', bob]]) {
      check(await page.evaluate(() => window.__pwned === undefined), `${label}: the payload ran`);
      check((await page.locator('img[src="x"]').count()) === 0, `${label}: an <img> was created`);
    }
    await panel.getByRole('button', { name: 'Close case' }).click();
    await evil.locator('#ended', { hasText: /closed|ended/ }).waitFor();
    await evil.close();
  });

  await step('an unknown module key shows a clear error', async () => {
    // The broker answers an unknown key with a 404 page; the browser logs
    // the 404 of that document, which is expected here.
    const lost = watch(await customerCtx.newPage(), 'help page (unknown key)', {
      allow: [/status of 404/],
    });
    const resp = await lost.goto(`${URL_}/help/no-such-module`);
    check(resp.status() === 404, `an unknown key answered ${resp.status()}`);
    await lost.getByRole('heading', { name: 'This help link is not valid' }).waitFor();
    // The page itself also copes when the broker refuses the key on the
    // WebSocket (a key removed from the config after the page was loaded):
    // the key is swapped in flight for one the broker does not know.
    await lost.routeWebSocket(/\/v1\/ws$/, (ws) => {
      const server = ws.connectToServer();
      ws.onMessage((text) => {
        const msg = JSON.parse(String(text));
        if (msg.type === 'request_help') msg.module = 'removed-module';
        server.send(JSON.stringify(msg));
      });
    });
    await lost.goto(`${URL_}/help/${opt.module}`);
    await lost.getByLabel('Your name').fill('Lee');
    await lost.getByLabel('Describe the problem').fill('Nothing works');
    await lost.getByRole('button', { name: 'Get help' }).click();
    await lost.locator('#request-error', { hasText: 'not valid' }).waitFor();
    check(await lost.getByRole('button', { name: 'Get help' }).isEnabled(), 'the form can be sent again');
    await lost.close();
  });

  await step('dashboard: sign out', async () => {
    await dash.getByRole('button', { name: 'Sign out' }).click();
    await dash.getByLabel('Agent token').waitFor();
    check(await dash.evaluate(() => sessionStorage.getItem('casebroker.token') === null), 'the token is forgotten');
  });

  await step('no console errors', async () => {
    check(problems.length === 0, problems.join('\n'));
  });
} catch (e) {
  failure = e;
} finally {
  await browser.close();
}
finish('e2e', failure);
