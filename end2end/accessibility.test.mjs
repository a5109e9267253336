// Every page, as a person with a screen reader or a phone meets it: axe-core (WCAG 2.1 A/AA)
// reports no serious or critical violation on the landing, campaign, invite, API docs and ops pages, each
// page has its own title and one h1, and nothing is wider than a 390 px screen.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, mode, signedIn, startServer } from './support/harness.mjs';
import { check } from './support/axe.mjs';

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


/** The campaign page's panels and settings editor that load after it is interactive are there,
 *  so axe sees them. */
async function panelsLoaded(page) {
  await page.waitForSelector('.panel.history');
  await page.waitForSelector('.panel.members');
  await page.waitForSelector('.panel.config .config-mode');
}

test(`landing, campaign, invite, API docs and ops pages pass axe and fit 390 px (${mode})`, async () => {
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
  await panelsLoaded(ada.page);
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
  await panelsLoaded(bob.page);
  problems.push(...(await check(bob.page, 'campaign-viewer', /^Spring launch — Rally$/)));
  // The settings read only, as they show until the editor's code arrives — here it never does.
  const waiting = await bob.context.newPage();
  await waiting.route('**/pkg/split_settings_editor*', (route) => route.abort('internetdisconnected'));
  await waiting.goto(`${server.url}/campaigns/access`);
  await waiting.waitForSelector('.load-failed[data-part="settings"]');
  await waiting.waitForSelector('.settings-preview');
  problems.push(...(await check(waiting, 'campaign-settings-read-only', /^Spring launch — Rally$/)));
  await waiting.close();
  await bob.page.goto(invite);
  await bob.page.waitForSelector('.accept-invite');
  problems.push(...(await check(bob.page, 'invite', /Rally/)));

  await visitor.goto(`${server.url}/api/docs`);
  await visitor.waitForSelector('.api-operation');
  problems.push(...(await check(visitor, 'api-docs', /^HTTP API — Rally$/)));

  await visitor.goto(`${server.url}/ops`);
  await visitor.waitForSelector('.chart');
  problems.push(...(await check(visitor, 'ops', /Rally/)));

  assert.deepEqual(problems, []);
  await ada.context.close();
  await bob.context.close();
});
