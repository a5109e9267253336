// Every page, as a person with a screen reader or a phone meets it: axe-core (WCAG 2.1 A/AA)
// reports no serious or critical violation on the landing, campaign, invite and ops pages, each
// page has its own title and one h1, and nothing is wider than a 390 px screen.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { launchBrowser, mode, screenshotDir, signedIn, startServer } from './support/harness.mjs';

const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

let server;
let browser;

before(async () => {
  // Bob watches Ada's campaign as a viewer: new campaigns are public here.
  server = await startServer({ RALLY_OPS_PUBLIC: 'true', RALLY_DEFAULT_VISIBILITY: 'public' });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  if (server) assert.equal(await server.stop(), 0);
});

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
async function check(page, name, wantTitle) {
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

test(`landing, campaign, invite and ops pages pass axe and fit 390 px (${mode})`, async () => {
  const problems = [];

  const visitor = await (await browser.newContext()).newPage();
  await visitor.goto(server.url);
  await visitor.waitForSelector('[data-hydrated="true"]');
  problems.push(...(await check(visitor, 'landing-visitor', /Rally/)));

  const ada = await signedIn(browser, server, 'Ada');
  problems.push(...(await check(ada.page, 'landing', /Rally/)));
  await ada.page.fill('#new-campaign-id', 'access');
  await ada.page.fill('#new-campaign-title', 'Spring launch');
  await ada.page.click('.create-campaign button');
  await ada.page.waitForSelector('[data-live="true"]', { timeout: 15_000 });
  await ada.page.fill('.description-input', 'A campaign for everyone.');
  await ada.page.fill('.feature-input', 'live_chat');
  await ada.page.press('.feature-input', 'Enter');
  await ada.page.waitForSelector('.chip[data-feature="live_chat"]');
  await ada.page.click('.create-invite');
  const invite = await ada.page.locator('.invite-link a').getAttribute('href');
  problems.push(...(await check(ada.page, 'campaign-owner', /^Spring launch — Rally$/)));
  // The account menu, open, with where you are signed in.
  await ada.page.click('.user-menu summary');
  await ada.page.click('.show-devices');
  await ada.page.waitForSelector('.device');
  problems.push(...(await check(ada.page, 'account-menu', /^Spring launch — Rally$/)));
  // Open, the menu lies wholly on the screen at both widths.
  for (const width of [1280, 390]) {
    await ada.page.setViewportSize({ width, height: 900 });
    const box = await ada.page.locator('.user-menu-panel').boundingBox();
    if (box.x < 0 || box.x + box.width > width) problems.push(`account-menu @${width}px: the open menu runs off the screen (x ${box.x}, width ${box.width})`);
  }
  await ada.page.click('.user-menu summary');

  const bob = await signedIn(browser, server, 'Bob');
  await bob.page.goto(`${server.url}/campaigns/access`);
  await bob.page.waitForSelector('[data-live="true"]', { timeout: 15_000 });
  problems.push(...(await check(bob.page, 'campaign-viewer', /^Spring launch — Rally$/)));
  await bob.page.goto(invite);
  await bob.page.waitForSelector('.accept-invite');
  problems.push(...(await check(bob.page, 'invite', /Rally/)));

  await visitor.goto(`${server.url}/ops`);
  await visitor.waitForSelector('.chart');
  problems.push(...(await check(visitor, 'ops', /Rally/)));

  assert.deepEqual(problems, []);
  await ada.context.close();
  await bob.context.close();
});
