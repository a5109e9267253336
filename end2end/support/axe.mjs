// The accessibility check every page must pass: axe-core (WCAG 2.1 A/AA) finds no serious or
// critical violation, the page has its own title and one h1, and nothing is wider than the screen —
// at desktop width and at 390 px.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { mode, screenshotDir } from './harness.mjs';

const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

/** Serious and critical axe violations on the page as it is now, one line each. */
async function violations(page) {
  await page.addScriptTag({ content: axeSource });
  const result = await page.evaluate(() =>
    window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } }),
  );
  return result.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(' ')).slice(0, 5).join(', ')}`);
}

/** Checks one page at desktop width and at 390 px; returns what failed. */
export async function check(page, name, wantTitle) {
  const problems = [];
  for (const width of [1280, 390]) {
    await page.setViewportSize({ width, height: 900 });
    for (const v of await violations(page)) problems.push(`${name} @${width}px: ${v}`);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    if (overflow > 0) problems.push(`${name} @${width}px: ${overflow} px wider than the screen`);
    const h1 = await page.locator('h1').count();
    if (h1 !== 1) problems.push(`${name}: ${h1} h1 elements`);
    const title = await page.title();
    if (!wantTitle.test(title)) problems.push(`${name}: page title ${JSON.stringify(title)}`);
    await page.screenshot({ path: join(screenshotDir, `a11y-${name}-${width}-${mode}.png`), fullPage: true });
  }
  return problems;
}
