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

test(`a name typed before the page's code arrives is kept, and signing in waits for the code (${mode} build)`, async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(err.message));
  // Hold the WebAssembly back: the person sees the server's HTML and starts typing.
  let release;
  const held = new Promise((resolve) => (release = resolve));
  await page.route(/\.wasm$/, async (route) => {
    await held;
    await route.continue();
  });
  await page.goto(server.url);
  await page.fill('#display-name', 'Early Bird');
  assert.equal(await page.locator('.sign-in button').isDisabled(), true, 'the button waits for the code');
  release();
  await page.waitForSelector('[data-hydrated="true"]', { timeout: 15_000 });
  await page.waitForSelector('.sign-in button:not([disabled])');
  assert.equal(await page.inputValue('#display-name'), 'Early Bird', 'hydrating kept the typed name');
  await page.click('.sign-in button');
  await page.waitForSelector('.user:text("Early Bird")');
  assert.deepEqual(errors, []);
  await context.close();
});

test(`unknown pages show the app's 404 page with status 404 (${mode} build)`, async () => {
  const { page, errors } = await newWatchedPage(browser);
  const response = await page.goto(`${server.url}/no/such/page`);
  assert.equal(response.status(), 404);
  await page.waitForSelector('[data-hydrated="true"]', { timeout: 15_000 });
  assert.match(await page.locator('h1').innerText(), /Page not found/);
  assert.deepEqual(errors.filter((e) => !e.includes('404')), []);
});
