// What the dashboard's queue must show, read from a Playwright page: every
// row's buttons inside the window with no sideways scroll, and a row's
// wait and age. Used by e2e.mjs.

import { check } from './lib.mjs';

/**
 * Every queue row has its buttons entirely inside the window, and the page
 * does not scroll sideways.
 */
export async function fitsWindow(page, label) {
  const width = page.viewportSize().width;
  const [scroll, inner] = await page.evaluate(() => [document.documentElement.scrollWidth, innerWidth]);
  check(inner === width, `${label}: the window is ${inner} px, not ${width} px`);
  check(scroll <= width, `${label}: the page is ${scroll} px wide in a ${width} px window`);
  const rows = page.locator('#queue-rows tr');
  const n = await rows.count();
  check(n >= 3, `${label}: only ${n} queue rows`);
  for (let i = 0; i < n; i += 1) {
    const buttons = rows.nth(i).getByRole('button');
    const m = await buttons.count();
    check(m > 0, `${label}: row ${i} has no button`);
    for (let j = 0; j < m; j += 1) {
      const box = await buttons.nth(j).boundingBox();
      const name = await buttons.nth(j).textContent();
      check(box && box.x >= 0 && box.x + box.width <= width,
        `${label}: "${name}" of row ${i} spans ${box?.x}..${box && box.x + box.width} px of ${width} px`);
    }
  }
  const table = await page.evaluate(() => {
    const wrap = document.querySelector('.table-wrap');
    return [wrap.scrollWidth, wrap.clientWidth];
  });
  check(table[0] <= table[1], `${label}: the queue needs ${table[0]} px of ${table[1]} px`);
}

/** The text of a row's wait and age. */
export async function times(page, code) {
  return page.evaluate((c) => {
    const r = document.querySelector(`#queue-rows tr[data-code="${c}"]`);
    return { wait: r?.querySelector('.wait')?.textContent, age: r?.querySelector('.age')?.textContent };
  }, code);
}
