// What the browser runs share (e2e.mjs, admin.mjs): checks, numbered steps,
// the collection of console and page errors, the labelling check, and
// Chromium's launch.

import { chromium } from 'playwright-core';

/** Console errors and uncaught exceptions of the pages watched. */
export const problems = [];
let passed = 0;

export function check(cond, what) {
  if (!cond) throw new Error(what);
}

/**
 * Collects console errors and uncaught exceptions of a page; `allow`:
 * patterns of expected ones, matched against the text and the URL it is
 * about.
 */
export function watch(page, label, { allow = [] } = {}) {
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const text = m.text();
    const url = m.location()?.url || '';
    if (allow.some((re) => re.test(text) || re.test(url))) return;
    problems.push(`${label} console error: ${text} (${url})`);
  });
  page.on('pageerror', (e) => problems.push(`${label} page error: ${e.message}`));
  return page;
}

export async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
  } catch (e) {
    console.log(`not ok - ${name}: ${e.message}`);
    throw e;
  }
  passed += 1;
  console.log(`ok - ${name} (${Date.now() - t0} ms)`);
}

/** Every visible form control and button has an accessible name. */
export async function unlabelled(page) {
  return page.evaluate(() => {
    const bad = [];
    for (const node of document.querySelectorAll('input, select, textarea, button')) {
      if (node.offsetParent === null) continue;
      const named =
        (node.labels && node.labels.length > 0 && [...node.labels].some((l) => l.textContent.trim())) ||
        node.getAttribute('aria-label') ||
        node.getAttribute('aria-labelledby') ||
        (node.tagName === 'BUTTON' && node.textContent.trim());
      if (!named) bad.push(node.outerHTML.slice(0, 120));
    }
    return bad;
  });
}

/**
 * Debian's Chromium, headless. launch() gives it a fresh temporary profile
 * (user-data-dir) and removes it on close.
 */
export function launch(executablePath) {
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
      // Screen sharing: getDisplayMedia picks a screen without asking and
      // a fake one is drawn; peers meet on loopback host candidates, by
      // address rather than by mDNS name.
      '--use-fake-ui-for-media-stream',
      '--use-fake-device-for-media-stream',
      '--allow-loopback-in-peer-connection',
      '--disable-features=WebRtcHideLocalIpsWithMdns',
    ],
  });
}

/** Says how the run went and exits with its status. */
export function finish(name, error) {
  if (error) {
    if (problems.length) console.log(`console and page errors:\n${problems.join('\n')}`);
    console.log(error.stack || String(error));
  }
  console.log(`${name}: ${passed} passed, ${error ? 1 : 0} failed`);
  process.exit(error ? 1 : 0);
}

/** Opens the dashboard in `page` and signs in with `token`; waits until it is live. */
export async function signIn(page, url, token) {
  if (!page.url().startsWith(url)) await page.goto(`${url}/`);
  await page.getByLabel('Agent token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#connection', { hasText: 'Live' }).waitFor();
}
