// The doors other systems use, as they use them: a plain page on another origin follows a
// campaign's event stream (examples/live-headline.html) while a backend changes it over the
// HTTP API, and catches up after its network drops; an owner makes a key for another system on the
// campaign's page, the system uses it, and the owner revokes it; an owner sends the campaign's
// changes to a receiver the test runs and reads the delivery log.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createServer as createTcpServer, connect } from 'node:net';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { launchBrowser, mode, screenshotDir, signedIn, startServer } from './support/harness.mjs';
import { check } from './support/axe.mjs';

const example = readFileSync(resolve(import.meta.dirname, '..', 'examples', 'live-headline.html'));

let server;
let browser;
let pageHost;
let link;

/**
 * The page reaches Rally through this TCP relay, so the test can cut its network: `cut()` drops
 * every connection and refuses new ones until `restore()`.
 */
async function startLink(target) {
  const { hostname, port } = new URL(target);
  const sockets = new Set();
  const requestHeads = [];
  let open = true;
  const relay = createTcpServer((client) => {
    if (!open) return client.destroy();
    client.once('data', (chunk) => requestHeads.push(chunk.toString('latin1').split('\r\n\r\n')[0]));
    const upstream = connect(Number(port), hostname);
    for (const [a, b] of [[client, upstream], [upstream, client]]) {
      sockets.add(a);
      a.pipe(b);
      a.on('error', () => b.destroy());
      a.on('close', () => {
        sockets.delete(a);
        b.destroy();
      });
    }
  });
  await new Promise((r) => relay.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${relay.address().port}`,
    requestHeads,
    cut() {
      open = false;
      for (const socket of sockets) socket.destroy();
    },
    restore() {
      open = true;
    },
    close: () => relay.close(),
  };
}

before(async () => {
  server = await startServer({ RALLY_DEFAULT_VISIBILITY: 'public', RALLY_WEBHOOK_ALLOW_HOSTS: '127.0.0.1' });
  browser = await launchBrowser();
  // The example page is served from its own origin, as an integrator's site would be.
  pageHost = createServer((_, response) => {
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    response.end(example);
  });
  await new Promise((r) => pageHost.listen(0, '127.0.0.1', r));
  link = await startLink(server.url);
});

after(async () => {
  await browser?.close();
  pageHost?.close();
  link?.close();
  if (server) assert.equal(await server.stop(), 0);
});

/** The backend's side: a session token, then JSON requests with it. */
async function backend() {
  const signIn = await fetch(`${server.url}/api/session`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ display_name: 'CMS' }),
  });
  const { token } = await signIn.json();
  return async (method, path, body) => {
    const response = await fetch(`${server.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const answer = await response.json();
    assert.ok(response.ok, `${method} ${path}: ${response.status} ${JSON.stringify(answer)}`);
    return answer;
  };
}

test(`a page on another origin shows live ui_content and catches up after its network drops (${mode})`, async () => {
  const send = await backend();
  await send('POST', '/api/campaigns', {
    campaign_id: 'live-headline',
    title: 'Spring',
    config: { ui_content: { headline: 'First headline' } },
  });
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(err.message));
  const origin = `http://127.0.0.1:${pageHost.address().port}`;
  await page.goto(`${origin}/?rally=${encodeURIComponent(link.url)}&campaign=live-headline`);
  const headline = page.locator('#headline');
  await headline.filter({ hasText: 'First headline' }).waitFor();
  await page.locator('#status', { hasText: 'Live' }).waitFor();

  let seen;
  for (let i = 1; i <= 5; i++) {
    seen = await send('POST', '/api/campaigns/live-headline/config', {
      section: 'ui_content',
      values: { headline: `Headline ${i}` },
    });
  }
  await headline.filter({ hasText: 'Headline 5' }).waitFor({ timeout: 5_000 });

  // The network drops; changes go on meanwhile; the stream resumes from its last event id.
  link.cut();
  await page.locator('#status', { hasText: 'Reconnecting' }).waitFor({ timeout: 10_000 });
  await send('POST', '/api/campaigns/live-headline/config', {
    section: 'ui_content',
    values: { headline: 'Changed while offline', subtitle: 'kept' },
  });
  await send('PATCH', '/api/campaigns/live-headline', { updates: { title: 'Not shown' } });
  link.restore();
  await headline.filter({ hasText: 'Changed while offline' }).waitFor({ timeout: 15_000 });
  // It resumed from the last event it had, not from a fresh snapshot.
  const resumed = link.requestHeads.filter((head) => head.includes('/events')).at(-1);
  assert.match(resumed, new RegExp(`^last-event-id: ${seen.version}$`, 'im'), resumed);
  await page.screenshot({ path: join(screenshotDir, `integrate-live-headline-${mode}.png`) });
  assert.deepEqual(errors, []);
  await context.close();
});

test(`an owner makes a key for another system, sees it used, and revokes it (${mode})`, async () => {
  const ada = await signedIn(browser, server, 'Ada');
  const errors = [];
  ada.page.on('pageerror', (err) => errors.push(err.message));
  await ada.page.fill('#new-campaign-id', 'keyed');
  await ada.page.fill('#new-campaign-title', 'Keyed');
  await ada.page.click('.create-campaign button');
  await ada.page.waitForSelector('[data-live="true"]', { timeout: 15_000 });

  // A key that may change the campaign, shown once.
  await ada.page.fill('.key-name', 'Our website');
  await ada.page.selectOption('.key-access', 'write');
  await ada.page.click('.create-key');
  const token = (await ada.page.locator('.key-token').innerText()).trim();
  assert.match(token, /^rk_[0-9a-f]{12}_[0-9a-f]{64}$/);
  assert.equal(await ada.page.inputValue('.key-name'), '', 'the name went into the key');
  const row = ada.page.locator('.key-item', { hasText: 'Our website' });
  await row.filter({ hasText: 'Can read and change' }).waitFor();
  await row.filter({ hasText: 'never used' }).waitFor();

  // The system uses it; the owner's page shows the change, made by the key.
  const response = await fetch(`${server.url}/api/campaigns/keyed`, {
    method: 'PATCH',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ updates: { title: 'Set by the website' } }),
  });
  assert.equal(response.status, 200, await response.text());
  await ada.page.waitForSelector('.event:has-text("Our website set title to “Set by the website”")', { timeout: 5_000 });
  await ada.page.waitForFunction(() => document.querySelector('.title-input')?.value === 'Set by the website');
  await row.filter({ hasText: 'last used just now' }).waitFor({ timeout: 5_000 });

  assert.deepEqual(await check(ada.page, 'campaign-keys', /^Set by the website — Rally$/), []);
  await ada.page.locator('.keys').screenshot({ path: join(screenshotDir, `integrate-keys-${mode}.png`) });

  // Revoked: the list empties and the key is refused.
  await ada.page.click('.revoke-key');
  await row.waitFor({ state: 'detached' });
  assert.equal(await ada.page.locator('.key-token').count(), 0, 'a revoked key is no longer shown');
  const refused = await fetch(`${server.url}/api/campaigns/keyed`, {
    headers: { authorization: `Bearer ${token}` },
  });
  assert.equal(refused.status, 401);
  assert.deepEqual(errors, []);
  await ada.context.close();
});

test(`an owner sends a campaign's changes to another system and sees what was sent (${mode})`, async () => {
  // The other system: records what it is sent; answers 200, or 500 when told to.
  const received = [];
  let answer = 200;
  const receiverServer = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk) => (body += chunk));
    request.on('end', () => {
      received.push({ headers: request.headers, body: JSON.parse(body) });
      response.writeHead(answer).end();
    });
  });
  await new Promise((r) => receiverServer.listen(0, '127.0.0.1', r));
  const receiverUrl = `http://127.0.0.1:${receiverServer.address().port}/rally`;

  const ada = await signedIn(browser, server, 'Ada');
  const errors = [];
  ada.page.on('pageerror', (err) => errors.push(err.message));
  await ada.page.fill('#new-campaign-id', 'hooked');
  await ada.page.fill('#new-campaign-title', 'Hooked');
  await ada.page.click('.create-campaign button');
  await ada.page.waitForSelector('[data-live="true"]', { timeout: 15_000 });

  await ada.page.fill('.webhook-url', receiverUrl);
  await ada.page.click('.add-webhook');
  const secret = (await ada.page.locator('.webhook-secret').innerText()).trim();
  assert.match(secret, /^whsec_/);
  await ada.page.locator('.webhook-item', { hasText: receiverUrl }).waitFor();

  // A change is sent, and the log says so.
  await ada.page.fill('.description-input', 'Sent along');
  await ada.page.locator('.delivery[data-state="delivered"]').first().waitFor({ timeout: 10_000 });
  assert.ok(received.length >= 1);
  assert.equal(received[0].body.type, 'campaign:state:v1:success');
  assert.equal(received[0].headers['webhook-id'], received[0].body.data.event_id);

  // The other system fails: the log says why, and that it will try again.
  answer = 500;
  await ada.page.selectOption('.status-select', 'active');
  const failing = ada.page.locator('.delivery[data-state="retrying"]').first();
  await failing.waitFor({ timeout: 10_000 });
  assert.match(await failing.innerText(), /not taken yet: answered 500/);
  answer = 200;
  await ada.page.locator('.webhooks').screenshot({ path: join(screenshotDir, `integrate-webhooks-${mode}.png`) });
  assert.deepEqual(await check(ada.page, 'campaign-webhooks', /^Hooked — Rally$/), []);

  await ada.page.click('.remove-webhook');
  await ada.page.locator('.webhook-item').waitFor({ state: 'detached' });
  assert.deepEqual(errors, []);
  await ada.context.close();
  receiverServer.close();
});

test(`the SDK's example page shows a campaign's live headline from another origin (${mode})`, async () => {
  // The repository's example and sdk/dist, served from an origin Rally allows.
  const repo = resolve(import.meta.dirname, '..');
  const files = createServer((request, response) => {
    const path = new URL(request.url, 'http://files').pathname;
    const served = path.startsWith('/examples/') || path.startsWith('/sdk/dist/');
    try {
      if (!served || path.includes('..')) throw new Error('not served');
      const type = path.endsWith('.js') ? 'text/javascript' : 'text/html; charset=utf-8';
      const body = readFileSync(join(repo, path));
      response.writeHead(200, { 'content-type': type }).end(body);
    } catch {
      response.writeHead(404).end();
    }
  });
  await new Promise((r) => files.listen(0, '127.0.0.1', r));
  const origin = `http://127.0.0.1:${files.address().port}`;
  const own = await startServer({ RALLY_DEFAULT_VISIBILITY: 'public', RALLY_ALLOWED_ORIGINS: origin });
  const context = await browser.newContext();
  try {
    const signIn = await fetch(`${own.url}/api/session`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ display_name: 'Site' }),
    });
    const { token } = await signIn.json();
    const send = (method, path, body) =>
      fetch(`${own.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const created = await send('POST', '/api/campaigns', {
      campaign_id: 'sdk-live',
      title: 'SDK',
      config: { ui_content: { headline: 'First from the SDK' } },
    });
    assert.equal(created.status, 201);
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (err) => errors.push(err.message));
    const query = `rally=${encodeURIComponent(own.url)}&campaign=sdk-live&token=${encodeURIComponent(token)}`;
    await page.goto(`${origin}/examples/sdk-headline.html?${query}`);
    await page.locator('#headline', { hasText: 'First from the SDK' }).waitFor({ timeout: 10_000 });
    await page.locator('#status', { hasText: 'Live' }).waitFor();
    const changed = await send('POST', '/api/campaigns/sdk-live/config', {
      section: 'ui_content',
      values: { headline: 'Changed, live' },
    });
    assert.equal(changed.status, 200);
    await page.locator('#headline', { hasText: 'Changed, live' }).waitFor({ timeout: 5_000 });
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
    assert.equal(await own.stop(), 0);
    files.close();
  }
});
