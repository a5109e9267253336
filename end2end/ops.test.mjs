// The live ops page: while real traffic runs, its charts move.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { launchBrowser, mode, screenshotDir, startServer } from './support/harness.mjs';

let server;
let browser;

before(async () => {
  // The ops view names public campaigns only.
  server = await startServer({ RALLY_OPS_PUBLIC: 'true', RALLY_WRITE_RATE: '1000', RALLY_DEFAULT_VISIBILITY: 'public' });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  if (server) assert.equal(await server.stop(), 0);
});

test(`the ops page charts live traffic (${mode})`, async () => {
  // Traffic: a signed-in page creates a campaign and keeps editing it over its own WebSocket.
  const traffic = await (await browser.newContext()).newPage();
  // Kept for the failure message: what the page said if it never went live.
  const said = [];
  traffic.on('pageerror', (err) => said.push(`pageerror: ${err.message}`));
  traffic.on('console', (msg) => said.push(`console ${msg.type()}: ${msg.text()}`));
  await traffic.goto(server.url);
  await traffic.waitForSelector('[data-hydrated="true"]');
  await traffic.fill('#display-name', 'Load');
  await traffic.click('.sign-in button');
  // Signing in reloads the page: wait for the new page to hydrate before typing into it.
  await traffic.waitForSelector('.user');
  await traffic.waitForSelector('[data-hydrated="true"]');
  await traffic.fill('#new-campaign-id', 'ops-demo');
  await traffic.fill('#new-campaign-title', 'Ops demo');
  await traffic.click('.create-campaign button');
  await traffic.waitForSelector('[data-live="true"]', { timeout: 30_000 }).catch((err) => {
    const state = traffic
      .evaluate(() => ({
        url: location.href,
        connection: document.querySelector('.connection')?.dataset.status,
        article: document.querySelector('article.campaign')?.outerHTML.slice(0, 300),
        body: document.body.innerText.slice(0, 500),
      }))
      .catch((e) => `unreadable: ${e.message}`);
    return state.then((s) => {
      throw new Error(`${err.message}\nstate: ${JSON.stringify(s)}\npage: ${said.join('\n')}\nserver: ${server.logLines.slice(-20).join('\n')}`);
    });
  });
  const running = traffic.evaluate(async () => {
    const ws = new WebSocket(`ws://${location.host}/ws`);
    await new Promise((resolve) => (ws.onopen = resolve));
    ws.send(JSON.stringify({ type: 'campaign:subscribe:v1:requested', payload: { campaign_id: 'ops-demo' } }));
    const end = Date.now() + 9000;
    let n = 0;
    while (Date.now() < end) {
      ws.send(JSON.stringify({
        type: 'campaign:update:v1:requested',
        payload: { campaign_id: 'ops-demo', updates: { title: `load ${n++}` } },
        request_id: `l${n}`,
      }));
      await new Promise((r) => setTimeout(r, 20));
    }
    ws.close();
    return n;
  });

  const ops = await browser.newPage();
  await ops.goto(`${server.url}/ops`);
  await ops.waitForFunction(() => Number(document.querySelector('.ops')?.dataset.samples) >= 3, null, { timeout: 15_000 });
  const delivered = () => ops.getAttribute('[data-chart="events"] path[data-series="delivered"]', 'd');
  const first = await delivered();
  await ops.waitForFunction(
    () => Number(document.querySelector('[data-chart="events"] .latest[data-series="delivered"]').textContent) > 10,
    null,
    { timeout: 10_000 },
  );
  await ops.waitForTimeout(2000);
  const second = await delivered();
  assert.notEqual(first, second, 'the events chart moved');
  assert.ok(Number(await ops.textContent('[data-chart="connections"] .latest')) >= 2);
  assert.ok(Number(await ops.textContent('[data-chart="latency"] .latest[data-series="p99"]')) > 0);
  assert.match(await ops.textContent('.top-campaigns'), /ops-demo/);
  assert.match(await ops.textContent('.bus'), /in_process \(connected\)/);
  await ops.screenshot({ path: join(screenshotDir, `ops-${mode}.png`), fullPage: true });
  assert.ok((await running) > 100);
});
