// The landing page renders on the server, hydrates in Chromium, and is interactive afterwards.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { launchBrowser, mode, newWatchedPage, screenshotDir, startServer } from './support/harness.mjs';

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  if (server) assert.equal(await server.stop(), 0, 'rally exits 0 on SIGTERM');
});

test(`landing page hydrates and validates campaign ids live (${mode} build)`, async () => {
  const { page, errors } = await newWatchedPage(browser);
  const response = await page.goto(server.url);
  assert.equal(response.status(), 200);

  // Server-rendered HTML says false; only the WASM flips it.
  const html = await response.text();
  assert.match(html, /data-hydrated="false"/);
  await page.waitForSelector('[data-hydrated="true"]', { timeout: 15_000 });

  const input = page.locator('#campaign-id');
  await input.fill('Spring Launch');
  await page.waitForSelector('.field-status .error');
  assert.match(await page.locator('.field-status').innerText(), /only contain lowercase letters, digits and '-'/);
  assert.match(await page.locator('a.open-button').getAttribute('class'), /\bdisabled\b/);

  await input.fill('spring-launch');
  await page.waitForSelector('.field-status .ok');
  assert.equal(await page.locator('a.open-button').getAttribute('href'), '/campaigns/spring-launch');
  assert.doesNotMatch(await page.locator('a.open-button').getAttribute('class'), /\bdisabled\b/);

  // The stylesheet built by cargo-leptos is served and applied.
  const css = await page.evaluate(() => getComputedStyle(document.querySelector('.topbar')).borderBottomStyle);
  assert.equal(css, 'solid');

  await page.screenshot({ path: join(screenshotDir, `landing-${mode}.png`) });
  assert.deepEqual(errors, [], 'no script errors while hydrating');
});

test(`unknown pages show the app's 404 page with status 404 (${mode} build)`, async () => {
  const { page, errors } = await newWatchedPage(browser);
  const response = await page.goto(`${server.url}/no/such/page`);
  assert.equal(response.status(), 404);
  await page.waitForSelector('[data-hydrated="true"]', { timeout: 15_000 });
  assert.match(await page.locator('h1').innerText(), /Page not found/);
  assert.deepEqual(errors.filter((e) => !e.includes('404')), []);
});
