// Signing in through the organization's OpenID Connect provider, in real Chromium against a real
// provider (npm `oidc-provider`): the sign-in card offers only the provider when guests are off;
// signing in returns to the page you were on with a stable user id; signing out ends the session;
// the allow-lists refuse outsiders; a forged or replayed callback fails cleanly; and every
// tampered, expired, wrong-audience, wrong-issuer, `alg: none` or unknown-key ID token is a 401
// page that leaves nobody signed in. And the integrator's way: their backend mints a JWT, their
// page posts it to Rally, and the person is signed in with the roles it grants.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import { launchBrowser, mode, startServer } from './support/harness.mjs';
import { startProvider } from './support/oidc-provider.mjs';
import { check } from './support/axe.mjs';

let server;
let provider;
let browser;
let origin;
let backend;

const JWT_SECRET = 'the-integrators-backend-shares-this-secret';

/** HS256 JWT, as the integrator's backend would mint it. */
function mint(claims, secret = JWT_SECRET) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const input = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

/** The integrator's site: `/open?token=…&to=…` is a page whose button posts the token to Rally. */
async function startBackend() {
  const site = createHttpServer((request, response) => {
    const url = new URL(request.url, 'http://backend');
    const token = url.searchParams.get('token') ?? '';
    const to = url.searchParams.get('to') ?? '/';
    response.setHeader('content-type', 'text/html; charset=utf-8');
    response.end(`<!DOCTYPE html><html lang="en"><title>Integrator</title>
      <form method="post" action="${origin}/auth/token">
        <input type="hidden" name="token" value="${token}">
        <input type="hidden" name="return_to" value="${to}">
        <button type="submit">Open the campaign room</button>
      </form></html>`);
  });
  await new Promise((resolve) => site.listen(0, '127.0.0.1', resolve));
  return { url: `http://localhost:${site.address().port}`, stop: () => new Promise((r) => site.close(r)) };
}

/** A port free right now on 127.0.0.1 (the provider must know Rally's callback before Rally starts). */
async function freePort() {
  const probe = createServer();
  await new Promise((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

before(async () => {
  const port = await freePort();
  origin = `http://127.0.0.1:${port}`;
  provider = await startProvider({ redirectUri: `${origin}/auth/oidc/callback` });
  backend = await startBackend();
  server = await startServer({
    RALLY_JWT_SECRET: JWT_SECRET,
    RALLY_ALLOWED_ORIGINS: backend.url,
    RALLY_ADDR: `127.0.0.1:${port}`,
    RALLY_PUBLIC_ORIGIN: origin,
    RALLY_OIDC_ISSUER: provider.issuer,
    RALLY_OIDC_CLIENT_ID: provider.clientId,
    RALLY_OIDC_CLIENT_SECRET: provider.clientSecret,
    RALLY_OIDC_PROVIDER_NAME: 'Example Accounts',
    RALLY_OIDC_SCOPES: 'openid profile email groups',
    RALLY_OIDC_ALLOWED_DOMAINS: 'example.com',
    RALLY_OIDC_ALLOWED_GROUPS: 'marketing',
    RALLY_GUEST_SIGN_IN: 'false',
  });
  assert.equal(server.url, origin);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  if (server) assert.equal(await server.stop(), 0);
  await provider?.stop();
  await backend?.stop();
});

/** On the provider's pages: log in as `login` (its development form takes any name) and consent. */
async function atProvider(page, login) {
  await page.waitForURL((url) => url.href.startsWith(provider.issuer), { timeout: 10_000 });
  await page.fill('input[name="login"]', login);
  await page.fill('input[name="password"]', 'any password');
  await page.click('button[type="submit"]');
  // First sign-in of this account: the consent page.
  await page.click('button:has-text("Continue")');
}

const sessionOf = async (context) =>
  (await context.cookies(origin)).find((cookie) => cookie.name === 'rally_session')?.value;

async function whoami(token) {
  const response = await fetch(`${origin}/api/session`, { headers: { authorization: `Bearer ${token}` } });
  return { status: response.status, body: await response.json() };
}

test(`people sign in through the organization's provider and come back where they were (${mode})`, async () => {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(err.message));

  await page.goto(origin);
  await page.waitForSelector('[data-hydrated="true"]');
  assert.equal(await page.locator('#display-name').count(), 0, 'guests are off: no name form');
  const button = page.locator('.sign-in-provider a');
  assert.equal(await button.innerText(), 'Sign in with Example Accounts');
  assert.deepEqual(await check(page, 'sign-in-provider', /^Rally/), []);

  let callback;
  page.on('request', (request) => {
    if (request.url().startsWith(`${origin}/auth/oidc/callback`)) callback = request;
  });
  await button.click();
  await atProvider(page, 'ada');
  await page.waitForURL(`${origin}/`);
  await page.waitForSelector('.user:text("Ada")');
  const userId = await page.getAttribute('.user', 'data-user-id');
  assert.match(userId, /^o[0-9a-f]{24}$/);
  const token = await sessionOf(context);
  assert.equal((await whoami(token)).body.user.user_id, userId);

  const callbackUrl = callback.url();
  const attemptCookie = (await callback.allHeaders()).cookie;
  assert.match(attemptCookie, /rally_signin=/);

  // Ada makes a campaign, signs out, and signs in again from it: back on it, the same person.
  const created = await fetch(`${origin}/api/campaigns`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ campaign_id: 'sso-spring', title: 'Spring', visibility: 'public' }),
  });
  assert.equal(created.status, 201, await created.text());
  await page.goto(`${origin}/campaigns/sso-spring`);
  await page.waitForSelector('[data-live="true"]', { timeout: 15_000 });
  await page.click('.user-menu summary');
  await page.click('.sign-out');
  await page.waitForSelector('.sign-in-link');
  assert.equal((await whoami(token)).status, 401, 'signing out ends the session');
  await page.click('.sign-in-link');
  // The provider remembers Ada (its own session) and her consent: straight back.
  await page.waitForURL(`${origin}/campaigns/sso-spring`);
  await page.waitForSelector('.user:text("Ada")');
  assert.equal(await page.getAttribute('.user', 'data-user-id'), userId, 'the same Rally user');
  const snapshot = await (
    await fetch(`${origin}/api/campaigns/sso-spring`, {
      headers: { authorization: `Bearer ${await sessionOf(context)}` },
    })
  ).json();
  assert.equal(snapshot.role, 'owner', JSON.stringify(snapshot));

  // The first callback again, with the attempt cookie it carried: the provider refuses the used
  // code (and, as OAuth asks, revokes what it granted with it — so this comes last).
  const replay = await fetch(callbackUrl, { headers: { cookie: attemptCookie }, redirect: 'manual' });
  assert.equal(replay.status, 400);
  assert.match(await replay.text(), /refused: invalid_grant/);
  assert.ok(!(replay.headers.get('set-cookie') ?? '').includes('rally_session='), 'no session from a replay');
  // A forged state, and no sign-in started at all.
  const forged = await fetch(callbackUrl.replace(/state=[^&]+/, 'state=forged'), {
    headers: { cookie: attemptCookie },
    redirect: 'manual',
  });
  assert.equal(forged.status, 400);
  assert.match(await forged.text(), /does not belong to the sign-in started in this browser/);
  const unstarted = await fetch(callbackUrl, { redirect: 'manual' });
  assert.equal(unstarted.status, 400);
  assert.match(await unstarted.text(), /was not started here or took too long/);

  assert.deepEqual(errors, []);
  await context.close();
});

test(`the allow-lists keep out other domains and groups (${mode})`, async () => {
  const cases = [
    ['eve', /email address may not sign in to this Rally/],
    ['xena', /not in a group that may sign in to this Rally/],
  ];
  for (const [login, reason] of cases) {
    const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
    const page = await context.newPage();
    await page.goto(`${origin}/auth/oidc/start?return_to=/`);
    await atProvider(page, login);
    await page.waitForURL((url) => url.href.startsWith(`${origin}/auth/oidc/callback`));
    assert.match(await page.locator('.error').innerText(), reason);
    assert.equal(await sessionOf(context), undefined, `${login} is not signed in`);
    assert.equal(await page.locator('a:text("Try again")').count(), 0, 'the same account would be refused again');
    if (login === 'eve') {
      assert.deepEqual(await check(page, 'sign-in-refused', /^Sign-in did not complete — Rally$/), []);
    }
    await context.close();
  }
});

test(`tampered, expired and misaddressed ID tokens are a 401 and sign nobody in (${mode})`, async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  // Sign in once for real, so the provider answers the next sign-ins without its forms.
  await page.goto(`${origin}/auth/oidc/start?return_to=/`);
  await atProvider(page, 'grace');
  await page.waitForSelector('.user:text("Grace")');
  await page.click('.user-menu summary');
  await page.click('.sign-out');
  await page.waitForSelector('.sign-in-link');

  const expected = {
    'bad-signature': /token signature is invalid/,
    expired: /token has expired/,
    'wrong-audience': /token is for another audience/,
    'extra-audience': /token is for another audience/,
    rs384: /token uses an algorithm this server does not accept/,
    'wrong-issuer': /token is from another issuer/,
    'wrong-nonce': /nonce does not match this sign-in/,
    'unknown-key': /token is signed with an unknown key/,
    'alg-none': /token is malformed|algorithm/,
  };
  assert.deepEqual(Object.keys(expected).sort(), [...provider.tamperings].sort());
  try {
    for (const [tampering, reason] of Object.entries(expected)) {
      provider.tamper(tampering);
      const response = await page.goto(`${origin}/auth/oidc/start?return_to=/`);
      assert.equal(response.status(), 401, tampering);
      const text = await page.locator('.error').innerText();
      assert.match(text, /identity token was rejected/, tampering);
      assert.match(text, reason, tampering);
      assert.equal(await sessionOf(context), undefined, `${tampering}: nobody signed in`);
    }
  } finally {
    provider.tamper(null);
  }
  // The same way in, untampered, still works.
  await page.goto(`${origin}/auth/oidc/start?return_to=/`);
  await page.waitForSelector('.user:text("Grace")');
  await context.close();
});

test(`a token from the integrator's backend signs the browser in with the roles it grants (${mode})`, async () => {
  const now = Math.floor(Date.now() / 1000);
  const claims = (sub, name, campaigns) => ({ sub, name, aud: 'rally', exp: now + 600, campaigns });
  // The integrator's backend made a private campaign; Lin's token grants her editor on it.
  const owner = mint(claims('backend-owner', 'Backend'));
  const created = await fetch(`${origin}/api/campaigns`, {
    method: 'POST',
    headers: { authorization: `Bearer ${owner}`, 'content-type': 'application/json' },
    body: JSON.stringify({ campaign_id: 'granted-room', title: 'Granted', visibility: 'private' }),
  });
  assert.equal(created.status, 201, await created.text());
  const lin = mint(claims('lin-7', 'Lin', { 'granted-room': 'editor' }));

  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(err.message));
  await page.goto(`${backend.url}/open?token=${lin}&to=/campaigns/granted-room`);
  await page.click('button');
  await page.waitForURL(`${origin}/campaigns/granted-room`);
  await page.waitForSelector('[data-live="true"]', { timeout: 15_000 });
  assert.equal(await page.locator('.user').innerText(), 'Lin');
  assert.equal(await page.getAttribute('article.campaign', 'data-role'), 'editor');
  await page.fill('.title-input', 'Granted and edited');
  const deadline = Date.now() + 5_000;
  let title;
  while (Date.now() < deadline) {
    const snapshot = await (
      await fetch(`${origin}/api/campaigns/granted-room`, { headers: { authorization: `Bearer ${owner}` } })
    ).json();
    title = snapshot.campaign.title;
    if (title === 'Granted and edited') break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(title, 'Granted and edited', 'Lin edited through the grant');
  assert.deepEqual(errors, []);

  // A tampered token, and one signed with another secret: a 401 page, nobody signed in.
  const fresh = await browser.newContext();
  const other = await fresh.newPage();
  const forged = mint(claims('lin-7', 'Lin', { 'granted-room': 'owner' }), 'not-the-shared-secret-at-all!!');
  const [header, , signature] = lin.split('.');
  const raised = Buffer.from(JSON.stringify(claims('lin-7', 'Lin', { 'granted-room': 'owner' }))).toString('base64url');
  for (const bad of [`${header}.${raised}.${signature}`, forged]) {
    await other.goto(`${backend.url}/open?token=${bad}&to=/`);
    const [response] = await Promise.all([other.waitForEvent('response', (r) => r.url() === `${origin}/auth/token`), other.click('button')]);
    assert.equal(response.status(), 401);
    assert.match(await other.locator('.error').innerText(), /could not sign you in: session token rejected: token signature is invalid/);
    assert.equal(await sessionOf(fresh), undefined);
  }
  // A page from a site Rally does not trust may not sign anyone in (login forgery).
  const untrusted = await fetch(`${origin}/auth/token`, {
    method: 'POST',
    headers: { origin: 'http://evil.example', 'content-type': 'application/x-www-form-urlencoded' },
    body: `token=${lin}`,
    redirect: 'manual',
  });
  assert.equal(untrusted.status, 403);
  assert.equal(untrusted.headers.get('set-cookie'), null);
  await fresh.close();
  await context.close();
});
