// End-to-end test of what automation and opening hours show in the pages,
// in Chromium, against a running broker whose company offers cases
// (`offer_timeout`). Run by tests/browser.rs:
//
//   node tests/browser/supervise.mjs --url http://127.0.0.1:PORT
//     --agent-token T --agent-name NAME --module KEY --closed-module KEY
//     [--screenshots DIR] [--chromium /usr/bin/chromium]
//
// --agent-* is the only agent of --module's group who signs in;
// --closed-module's group is outside its opening hours until tomorrow. Every step
// waits for what it expects with a timeout (never a fixed sleep). Any
// console error or uncaught page error fails the run.

import { parseArgs } from 'node:util';
import path from 'node:path';
import { check, finish, launch, problems, signIn, step, unlabelled, watch } from './lib.mjs';

const { values: opt } = parseArgs({
  options: {
    url: { type: 'string' },
    'agent-token': { type: 'string' },
    'agent-name': { type: 'string' },
    module: { type: 'string' },
    'closed-module': { type: 'string' },
    screenshots: { type: 'string' },
    chromium: { type: 'string', default: process.env.CHROMIUM || '/usr/bin/chromium' },
  },
});
for (const k of ['url', 'agent-token', 'agent-name', 'module', 'closed-module']) {
  if (!opt[k]) {
    console.error(`supervise: --${k} is required`);
    process.exit(2);
  }
}
const URL_ = opt.url.replace(/\/$/, '');
const AGENT = opt['agent-name'];

/** A help request over HTTP, as a customer's app would make it. */
async function help(name, description) {
  const r = await fetch(`${URL_}/v1/help`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ module: opt.module, name, description }),
  });
  const text = await r.text();
  check(r.status === 201, `POST /v1/help answered ${r.status}: ${text}`);
  return JSON.parse(text).code;
}

const browser = await launch(opt.chromium);

let failure = null;
try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  ctx.setDefaultTimeout(10_000);
  const dash = watch(await ctx.newPage(), 'dashboard');
  const offer = dash.locator('#offer');
  const offersFor = (code) =>
    dash.evaluate((c) => document.querySelector('#offer-text')?.textContent.includes(c), code);
  let first = '';
  let second = '';

  await step('the agent signs in', async () => {
    await signIn(dash, URL_, opt['agent-token']);
    await dash.locator('#connection', { hasText: 'Live' }).waitFor();
    await dash.locator('#me', { hasText: AGENT }).waitFor();
    check(await offer.isHidden(), 'no offer before any case');
  });

  await step('a case is offered with a countdown and an alert', async () => {
    const alerts = await dash.evaluate(() => Number(document.documentElement.dataset.alerts || 0));
    first = await help('Ana', 'The printer prints blank pages');
    await offer.waitFor();
    check(await offersFor(first), `the offer names ${first}`);
    await dash.locator('#offer-text', { hasText: 'The printer prints blank pages' }).waitFor();
    await dash.locator('#offer-text', { hasText: 'from Ana' }).waitFor();
    await dash.locator(`#queue-rows tr[data-code="${first}"] .offered-to`, { hasText: `Offered to ${AGENT}` }).waitFor();
    const shown = await dash.locator('#offer-countdown').textContent();
    check(/^\d+ s$/.test(shown), `the countdown: ${shown}`);
    // It counts down.
    await dash.waitForFunction(
      (before) => document.querySelector('#offer-countdown').textContent !== before,
      shown,
    );
    const after = await dash.evaluate(() => Number(document.documentElement.dataset.alerts || 0));
    check(after > alerts, 'the offer raised an alert (sound, and a notification when allowed)');
    const bad = await unlabelled(dash);
    check(bad.length === 0, `unlabelled controls: ${bad.join(' | ')}`);
    if (opt.screenshots) await dash.screenshot({ path: path.join(opt.screenshots, 'offer.png') });
  });

  await step('declined, the case comes back while nobody else is eligible', async () => {
    await dash.getByRole('button', { name: 'Decline' }).click();
    await dash.locator('#notice', { hasText: `Declined case ${first}` }).waitFor();
    // Nobody else of the group is online: offered again.
    await offer.waitFor();
    check(await offersFor(first), `offered ${first} again`);
  });

  await step('accepted, the case opens in the panel, joined', async () => {
    await dash.getByRole('button', { name: 'Accept' }).click();
    await offer.waitFor({ state: 'hidden' });
    await dash.locator('#case-panel', { hasText: `Case ${first}` }).waitFor();
    await dash.locator('#case-panel', { hasText: `${AGENT} is in the session` }).waitFor();
    await dash.locator(`#queue-rows tr[data-code="${first}"]`, { hasText: AGENT }).waitFor();
    // The panel tells why automation picked the agent.
    await dash.locator('#case-panel', { hasText: `picked ${AGENT}` }).waitFor();
  });

  await step('going away gives the offer up; back, it returns', async () => {
    second = await help('Ben', 'The scanner is offline');
    await offer.waitFor();
    check(await offersFor(second), `the offer names ${second}`);
    await dash.getByRole('button', { name: 'Away', exact: true }).click();
    await offer.waitFor({ state: 'hidden' });
    await dash.getByRole('button', { name: 'Available', exact: true }).click();
    await offer.waitFor();
    check(await offersFor(second), `offered ${second} again`);
    await dash.getByRole('button', { name: 'Accept' }).click();
    await dash.locator('#case-panel', { hasText: `Case ${second}` }).waitFor();
  });

  await step('outside the opening hours the help page says so, and when it opens', async () => {
    const page = watch(await ctx.newPage(), 'help page');
    const resp = await page.goto(`${URL_}/help/${opt['closed-module']}`);
    check(resp.status() === 200, `GET /help answered ${resp.status()}`);
    const closed = page.locator('#closed');
    await closed.waitFor();
    await page.locator('#closed', { hasText: 'Sales is closed today.' }).waitFor();
    await page.locator('#closed', { hasText: 'We open again' }).waitFor();
    check(await page.getByRole('button', { name: 'Get help' }).isDisabled(), 'Get help waits for the opening');
    if (opt.screenshots) {
      await page.setViewportSize({ width: 360, height: 640 });
      await page.screenshot({ path: path.join(opt.screenshots, 'help-closed.png'), fullPage: true });
    }
    // The API says the same to a customer's app.
    const r = await fetch(`${URL_}/v1/help`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ module: opt['closed-module'], name: 'Cy' }),
    });
    const body = await r.json();
    check(r.status === 503 && body.code === 'closed', `POST /v1/help answered ${r.status} ${JSON.stringify(body)}`);
    check(Date.parse(body.opens_at) > Date.now(), `opens_at ${body.opens_at}`);
    await page.close();
  });

  await step('no console errors', async () => {
    check(problems.length === 0, problems.join('\n'));
  });
} catch (e) {
  failure = e;
} finally {
  await browser.close();
}
finish('supervise', failure);
