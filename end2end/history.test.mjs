// The history panel in real Chromium: an owner finds the version before a bad change to the
// campaign's ui_content settings, looks at it as it was (read only), restores just those settings
// after a confirmation that shows what will change, and a viewer on another page sees the
// restored settings live. The panel passes axe at desktop width and at 390 px.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, mode, signedIn, startServer } from './support/harness.mjs';
import { check } from './support/axe.mjs';

let server;
let browser;

before(async () => {
  server = await startServer({ RALLY_DEFAULT_VISIBILITY: 'public' });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  if (server) assert.equal(await server.stop(), 0);
});

const version = (page) => page.getAttribute('article.campaign', 'data-version').then(Number);

test(`restore an old ui_content from the history panel; another page sees it live (${mode})`, async () => {
  const ada = await signedIn(browser, server, 'Ada');
  await ada.page.fill('#new-campaign-id', 'history');
  await ada.page.fill('#new-campaign-title', 'Spring launch');
  await ada.page.click('.create-campaign button');
  await ada.page.waitForSelector('[data-live="true"]', { timeout: 15_000 });
  await ada.page.click('.config-mode:text("Edit as JSON")');
  await ada.page.fill('.config-input', '{"hero": {"headline": "Spring is here"}}');
  await ada.page.click('.save-config');
  await ada.page.waitForFunction(() => document.querySelector('article.campaign')?.dataset.version === '2');
  await ada.page.fill('.title-input', 'Spring launch 2027');
  await ada.page.waitForFunction(() => Number(document.querySelector('article.campaign')?.dataset.version) >= 3);
  // The bad change (the settings are still shown as JSON).
  await ada.page.fill('.config-input', '{"hero": {"headline": "Oops, wrong text"}}');
  await ada.page.click('.save-config');
  await ada.page.waitForSelector('.event:has-text("Ada changed the ui_content settings") >> nth=1');
  const before = await version(ada.page);

  const bob = await signedIn(browser, server, 'Bob');
  await bob.page.goto(server.url + '/campaigns/history');
  await bob.page.waitForSelector('[data-live="true"]', { timeout: 15_000 });
  await bob.page.waitForFunction(() => document.querySelector('#setting-hero-headline')?.value === 'Oops, wrong text');

  // The history, newest first, grouped under Ada; version 2 is the good ui_content.
  await ada.page.click('.history button:text("Show history")');
  await ada.page.waitForSelector('.history-entry[data-version="2"]');
  assert.match(await ada.page.locator('.history-who').first().innerText(), /Ada/);
  const good = ada.page.locator('.history-entry[data-version="2"]');
  assert.match(await good.locator('.summary').innerText(), /changed the ui_content settings/);
  await good.locator('button:text("Show changes")').click();
  await good.locator('.diff-field[data-field="config.ui_content"]').waitFor();

  // Looking at version 2 as it was changes nothing, and says so.
  await good.locator('button:text("View this version")').click();
  const preview = ada.page.locator('.version-preview');
  await preview.waitFor();
  assert.match(await preview.locator('.preview-banner').innerText(), /version 2 .*read only/i);
  assert.match(await preview.locator('.preview-config[data-section="ui_content"]').innerText(), /Spring is here/);
  assert.equal(await version(ada.page), before, 'looking changes nothing');

  // Restore just the settings: the confirmation shows what will change before anything does.
  await good.locator('.restore-field').click();
  const confirm = ada.page.locator('.restore-confirm');
  await confirm.waitFor();
  assert.match(await confirm.innerText(), /ui_content settings/);
  assert.match(await confirm.innerText(), /Oops, wrong text/);
  assert.match(await confirm.innerText(), /Spring is here/);
  assert.doesNotMatch(await confirm.innerText(), /Title/, 'only the settings are restored');
  const problems = await check(ada.page, 'history-panel', /Spring launch 2027/);
  assert.deepEqual(problems, []);
  await ada.page.setViewportSize({ width: 1280, height: 900 });
  await confirm.locator('button.confirm-restore').click();

  // Bob sees it live; the title Ada set after version 2 stays.
  await bob.page.waitForFunction(() => document.querySelector('#setting-hero-headline')?.value === 'Spring is here');
  await bob.page.waitForSelector('.event:has-text("restored the ui_content settings as of version 2")');
  assert.equal(await bob.page.locator('.title-text').innerText(), 'Spring launch 2027');
  assert.equal(await version(bob.page), before + 1);
  await ada.page.waitForSelector('.history-entry .summary:text("restored the ui_content settings as of version 2")');

  // A viewer may read the history but has nothing to restore with.
  await bob.page.click('.history button:text("Show history")');
  await bob.page.waitForSelector('.history-entry[data-version="2"]');
  assert.equal(await bob.page.locator('.restore-version, .restore-field').count(), 0);
  // The activity list leads into the history at that change.
  await ada.page.locator('.event[data-version="2"] .in-history').click();
  await ada.page.waitForSelector('.history-entry.focused[data-version="2"]');
  assert.equal(await ada.page.locator('.history-entry').first().getAttribute('data-version'), '2');
  for (const person of [ada, bob]) assert.deepEqual(person.errors, []);
});
