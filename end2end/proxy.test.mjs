// Rally behind the reverse proxies of deploy/, run as shipped (only host name, ports,
// certificate and upstream address replaced), with a self-signed certificate for localhost.
// Debian's nginx (deploy/nginx/rally.conf): the health check, the http→https redirect and
// Rally's own cache rules come through; per-address quotas count the client nginx names in
// X-Forwarded-For, not nginx, and not what a client wrote there itself; a WebSocket from a
// foreign origin is still refused; an event stream is not held back; and in Chromium two people
// sign in (a Secure cookie), edit together over wss://, lose nginx, keep typing, and come back by
// themselves when it returns. Caddy (deploy/Caddyfile): `caddy validate`, then the same
// checks without the browser.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { launchBrowser, mode, screenshotDir, signedIn, startServer } from './support/harness.mjs';

const root = resolve(import.meta.dirname, '..');
const siteRoot = process.env.RALLY_SITE_ROOT ?? join(root, 'target', 'site');

/** A tool this test needs (its path): missing, the test fails and says how to get it. */
function need(tool) {
  const found = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' });
  if (found.status === 0) return found.stdout.trim();
  if (existsSync(`/usr/sbin/${tool}`)) return `/usr/sbin/${tool}`; // nginx, outside a user's PATH
  throw new Error(`${tool} is not installed; scripts/setup test installs it (apt-get install ${tool})`);
}

async function freePort() {
  const probe = createServer();
  await new Promise((r) => probe.listen(0, '127.0.0.1', r));
  const { port } = probe.address();
  await new Promise((r) => probe.close(r));
  return port;
}

let dir;
let server;
let browser;
let nginxBin;
let nginx;
let caddy;
let port; // nginx, https
let httpPort; // nginx, http
let caddyPort; // Caddy, https
let origin;

/** `text` with each pattern replaced; a pattern that no longer matches fails the test. */
function replaced(text, replacements, file) {
  for (const [pattern, replacement] of replacements) {
    const next = text.replace(pattern, replacement);
    assert.notEqual(next, text, `${file} no longer has what ${pattern} replaces`);
    text = next;
  }
  return text;
}

/** deploy/nginx/rally.conf with this machine's ports, certificate and Rally's address. */
function nginxSite(upstream) {
  const ipv6 = Object.values(networkInterfaces())
    .flat()
    .some((a) => a.address === '::1');
  return replaced(
    readFileSync(join(root, 'deploy', 'nginx', 'rally.conf'), 'utf8'),
    [
      [/rally\.example\.com/g, 'localhost'],
      [/^(\s*)listen 443 /gm, `$1listen 127.0.0.1:${port} `],
      [/^(\s*)listen \[::\]:443 (.*)$/gm, ipv6 ? `$1listen [::1]:${port} $2` : '$1# no IPv6 here'],
      [/^(\s*)listen 80;/gm, `$1listen 127.0.0.1:${httpPort};`],
      [/^(\s*)listen \[::\]:80;/gm, ipv6 ? `$1listen [::1]:${httpPort};` : '$1# no IPv6 here'],
      [/^(\s*)ssl_certificate \S+;/gm, `$1ssl_certificate ${dir}/cert.pem;`],
      [/^(\s*)ssl_certificate_key \S+;/gm, `$1ssl_certificate_key ${dir}/key.pem;`],
      [/^(\s*)server 127\.0\.0\.1:3000;/gm, `$1server ${upstream};`],
    ],
    'deploy/nginx/rally.conf',
  );
}

/** deploy/Caddyfile on `caddyPort` of 127.0.0.1 with the test's certificate, and Rally's address. */
function caddySite(upstream) {
  const site = replaced(
    readFileSync(join(root, 'deploy', 'Caddyfile'), 'utf8'),
    [
      [/^rally\.example\.com \{$/m, `https://localhost:${caddyPort} {\n\tbind 127.0.0.1\n\ttls ${dir}/cert.pem ${dir}/key.pem`],
      [/reverse_proxy 127\.0\.0\.1:3000/, `reverse_proxy ${upstream}`],
    ],
    'deploy/Caddyfile',
  );
  // No admin endpoint, no listener on port 80, nothing written outside the temporary folder.
  return `{\n\tadmin off\n\tauto_https disable_redirects\n\tstorage file_system ${dir}/caddy\n}\n\n${site}`;
}

/** Resolves once https://localhost:<to>/healthz answers 200; rejects if the process exits. */
async function answering(name, to, exited, output) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const early = await Promise.race([exited, new Promise((r) => setTimeout(() => r(undefined), 100))]);
    if (early !== undefined) throw new Error(`${name} exited (${early}):\n${output()}`);
    const answer = await get('/healthz', { to }).catch(() => undefined);
    if (answer?.status === 200) return;
    if (Date.now() > deadline) throw new Error(`${name} did not answer in 10 s:\n${output()}`);
  }
}

/** Start a proxy process in its own process group, output kept for error messages. */
function startProcess(bin, args, env) {
  const child = spawn(bin, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'], env });
  let output = '';
  child.stdout.on('data', (chunk) => (output += chunk));
  child.stderr.on('data', (chunk) => (output += chunk));
  const exited = new Promise((r) => child.once('exit', (code, signal) => r(code ?? signal)));
  return { child, exited, output: () => output };
}

/** Stop a process started by startProcess (its whole group) and wait for it. */
async function stopProcess(proc) {
  if (!proc) return;
  try {
    process.kill(-proc.child.pid, 'SIGTERM');
  } catch {
    return; // already gone
  }
  await proc.exited;
}

async function startNginx() {
  const proc = startProcess(nginxBin, ['-p', `${dir}/`, '-c', `${dir}/nginx.conf`, '-e', 'stderr', '-g', 'daemon off;']);
  await answering('nginx', port, proc.exited, proc.output);
  return proc;
}

/** nginx's fast shutdown (SIGTERM): every connection through it closes at once. */
async function stopNginx() {
  const proc = nginx;
  nginx = undefined;
  await stopProcess(proc);
}

/** One request over https (no connection reuse) to the proxy on port `to`, as localhost. */
function get(path, options = {}) {
  return send('GET', path, options);
}

function send(method, path, { headers = {}, body, localAddress, tls = true, to = port } = {}) {
  const request = tls ? httpsRequest : httpRequest;
  return new Promise((resolveAnswer, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: to,
        method,
        path,
        localAddress,
        servername: 'localhost',
        rejectUnauthorized: false,
        agent: false,
        headers: { Host: `localhost:${to}`, ...headers },
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolveAnswer({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      },
    );
    req.setTimeout(5_000, () => req.destroy(new Error(`${method} ${path}: no answer in 5 s`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** A WebSocket handshake on wss://localhost:<to>/ws; resolves with the status (101: upgraded). */
function upgrade(to, headers) {
  return new Promise((resolveStatus, reject) => {
    const req = httpsRequest({
      host: '127.0.0.1',
      port: to,
      path: '/ws',
      servername: 'localhost',
      rejectUnauthorized: false,
      agent: false,
      headers: {
        Host: `localhost:${to}`,
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
        ...headers,
      },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolveStatus(res.statusCode);
    });
    req.on('response', (res) => {
      res.resume();
      resolveStatus(res.statusCode);
    });
    req.setTimeout(5_000, () => req.destroy(new Error('no answer to the upgrade in 5 s')));
    req.on('error', reject);
    req.end();
  });
}

/** A guest session made over the API from `localAddress`; resolves with the answer. */
const signIn = (to, name, localAddress, headers = {}) =>
  send('POST', '/api/session', {
    to,
    localAddress,
    headers: { 'Content-Type': 'application/json', ...headers },
    body: JSON.stringify({ display_name: name }),
  });

/** Health, Rally's headers on the fingerprinted files, /metrics kept off the public address. */
async function servesTheSite(to) {
  const health = await get('/healthz', { to });
  assert.equal(health.status, 200);
  assert.deepEqual(JSON.parse(health.body), { status: 'alive' });
  assert.match(health.headers['x-request-id'] ?? '', /^[0-9a-f-]{32,36}$/, "the proxy's request id reaches Rally");

  assert.equal((await get('/metrics', { to })).status, 404, 'the metrics stay off the public address');
  assert.equal((await fetch(`${server.url}/metrics`)).status, 200, 'and on Rally itself');

  // The page names the fingerprinted stylesheet and script; each comes through with the
  // headers Rally gave it, and precompressed when the site has a Brotli variant.
  const page = await get('/', { to });
  assert.equal(page.status, 200);
  assert.equal(page.headers['cache-control'], 'private, no-cache', 'pages are revalidated and never kept by a shared cache');
  const files = [...page.body.toString().matchAll(/\/pkg\/rally\.[0-9A-Za-z_-]+\.(?:css|js)/g)].map((m) => m[0]);
  assert.ok(files.length >= 2, `fingerprinted files named on the page: ${files}`);
  for (const file of new Set(files)) {
    const headers = { 'Accept-Encoding': 'br, gzip' };
    const proxied = await get(file, { to, headers });
    const direct = await fetch(server.url + file, { headers });
    assert.equal(proxied.status, 200, file);
    // The JavaScript glue revalidates (cargo-leptos writes other files' names into it after naming it).
    const rule = file.endsWith('.css') ? 'public, max-age=31536000, immutable' : 'no-cache';
    assert.equal(proxied.headers['cache-control'], rule, file);
    for (const name of ['cache-control', 'content-type', 'content-encoding', 'vary', 'etag', 'last-modified']) {
      assert.equal(proxied.headers[name], direct.headers.get(name) ?? undefined, `${file}: ${name} as Rally sent it`);
    }
    const brotli = existsSync(join(siteRoot, `${file}.br`));
    assert.equal(proxied.headers['content-encoding'], brotli ? 'br' : undefined, `${file}: encoded once, by Rally`);
  }
}

/**
 * Rally allows 4 sign-ins at once per client address (RALLY_SESSIONS_PER_MINUTE=2). Every request
 * reaches Rally from 127.0.0.1, the trusted proxy; the proxy names the client: `client`, and
 * then `other`, here.
 */
async function countsTheClient(to, client, other) {
  for (let i = 0; i < 4; i++) assert.equal((await signIn(to, `Guest ${i}`, client)).status, 200);
  const fifth = await signIn(to, 'One too many', client);
  assert.equal(fifth.status, 429, `the fifth from one client is refused: ${fifth.body}`);
  const forged = await signIn(to, 'Forger', client, { 'X-Forwarded-For': '203.0.113.9' });
  assert.equal(forged.status, 429, 'an address the client wrote itself counts for nothing');
  const next = await signIn(to, 'Someone else', other);
  assert.equal(next.status, 200, 'another client still signs in');
  assert.match(next.headers['set-cookie']?.[0] ?? '', /^rally_session=[^;]+;.*; Secure/, 'the cookie is Secure');
  return next;
}

/** Only the site's own pages may open a WebSocket with the session cookie. */
async function checksTheOrigin(to, session, siteOrigin) {
  const cookie = session.headers['set-cookie'][0].split(';')[0];
  assert.equal(await upgrade(to, { Origin: 'https://evil.example', Cookie: cookie }), 403, 'a foreign origin');
  assert.equal(await upgrade(to, { Origin: siteOrigin.replace('https:', 'http:'), Cookie: cookie }), 403, 'the site over http');
  assert.equal(await upgrade(to, { Origin: siteOrigin, Cookie: cookie }), 101, 'the site itself');
  assert.equal(await upgrade(to, { Origin: siteOrigin }), 101, 'the site itself, watching without a session');
}

/** A change reaches an event stream through the proxy while the stream stays open. */
async function streamsEvents(to, session, id) {
  const { token } = JSON.parse(session.body);
  const auth = { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' };
  const made = await send('POST', '/api/campaigns', {
    to,
    headers: auth,
    body: JSON.stringify({ campaign_id: id, title: 'Streamed', visibility: 'public' }),
  });
  assert.equal(made.status, 201, `campaign made: ${made.body}`);

  let text = '';
  const seen = (what) =>
    new Promise((resolveSeen, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${JSON.stringify(what)} in 5 s; the stream had:\n${text}`)), 5_000);
      const look = () => text.includes(what) && (clearTimeout(timer), resolveSeen());
      look();
      stream.on('data', look);
    });
  const stream = await new Promise((resolveStream, reject) => {
    const req = httpsRequest({
      host: '127.0.0.1',
      port: to,
      path: `/api/campaigns/${id}/events`,
      servername: 'localhost',
      rejectUnauthorized: false,
      agent: false,
      headers: { Host: `localhost:${to}`, Accept: 'text/event-stream' },
    });
    req.on('response', (res) => {
      res.setEncoding('utf8');
      res.on('data', (chunk) => (text += chunk));
      resolveStream(res);
    });
    req.on('error', reject);
    req.end();
  });
  try {
    assert.equal(stream.statusCode, 200);
    assert.match(stream.headers['content-type'], /^text\/event-stream/);
    await seen('Streamed'); // the snapshot, before anything changed
    const headline = `Through the proxy on ${to}`;
    const wrote = await send('POST', `/api/campaigns/${id}/config`, {
      to,
      headers: auth,
      body: JSON.stringify({ section: 'ui_content', values: { headline } }),
    });
    assert.equal(wrote.status, 200, `written: ${wrote.body}`);
    await seen(headline);
  } finally {
    stream.destroy();
  }
}

before(async () => {
  nginxBin = need('nginx');
  need('openssl');
  dir = mkdtempSync(join(tmpdir(), 'rally-proxy-'));
  // nginx's workers (user nobody) write buffered answers under the prefix.
  chmodSync(dir, 0o755);
  const cert = spawnSync(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=localhost', '-addext',
      'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', `${dir}/key.pem`, '-out', `${dir}/cert.pem`],
    { encoding: 'utf8' },
  );
  assert.equal(cert.status, 0, `openssl: ${cert.stderr}`);
  port = await freePort();
  httpPort = await freePort();
  caddyPort = await freePort();
  origin = `https://localhost:${port}`;

  server = await startServer({
    RALLY_PUBLIC_ORIGIN: origin,
    // The same Rally behind Caddy too, on another port: another origin.
    RALLY_ALLOWED_ORIGINS: `https://localhost:${caddyPort}`,
    RALLY_SECURE_COOKIES: 'true',
    RALLY_TRUSTED_PROXIES: '127.0.0.1',
    RALLY_SESSIONS_PER_MINUTE: '2',
  });
  const upstream = new URL(server.url).host;
  writeFileSync(join(dir, 'rally.conf'), nginxSite(upstream));
  writeFileSync(join(dir, 'Caddyfile'), caddySite(upstream));
  // The rest of what Debian's /etc/nginx/nginx.conf would give, inside the prefix.
  writeFileSync(
    join(dir, 'nginx.conf'),
    `worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 512; }
http {
    access_log ${dir}/access.log;
    client_body_temp_path ${dir}/client_body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;
    include ${dir}/rally.conf;
}
`,
  );
  nginx = await startNginx();
  browser = await launchBrowser(['--ignore-certificate-errors']);
});

after(async () => {
  await browser?.close();
  await stopNginx();
  await stopProcess(caddy);
  if (dir) rmSync(dir, { recursive: true, force: true });
  if (server) assert.equal(await server.stop(), 0);
});

test(`nginx: health, the https redirect, Rally's cache rules, /metrics kept inside (${mode})`, async () => {
  await servesTheSite(port);
  assert.match((await get('/healthz')).headers['strict-transport-security'] ?? '', /max-age=\d+/);
  const plain = await get('/campaigns/x?y=1', { tls: false, to: httpPort });
  assert.equal(plain.status, 301);
  assert.equal(plain.headers.location, 'https://localhost/campaigns/x?y=1');
});

test(`nginx: quotas count the client in X-Forwarded-For; foreign origins refused; events stream (${mode})`, async () => {
  const session = await countsTheClient(port, '127.0.0.2', '127.0.0.3');
  await checksTheOrigin(port, session, origin);
  await streamsEvents(port, session, 'streamed-nginx');
});

test(`nginx: sign-in, live editing and reconnect in Chromium over wss:// (${mode})`, async () => {
  const site = { url: origin };
  const sockets = { Ada: [], Bob: [] };
  const recordSockets = (name) => async (page) => page.on('websocket', (ws) => sockets[name].push(ws.url()));
  const live = (page) => page.waitForSelector('[data-live="true"]', { timeout: 15_000 });

  const ada = await signedIn(browser, site, 'Ada', recordSockets('Ada'));
  const [cookie] = (await ada.context.cookies(origin)).filter((c) => c.name === 'rally_session');
  assert.ok(cookie, 'signed in: the session cookie is set');
  assert.equal(cookie.secure, true, 'the session cookie is Secure');
  assert.equal(cookie.httpOnly, true);

  await ada.page.fill('#new-campaign-id', 'behind-nginx');
  await ada.page.fill('#new-campaign-title', 'Behind nginx');
  await ada.page.click('.create-campaign button');
  await ada.page.waitForURL('**/campaigns/behind-nginx');
  await live(ada.page);
  await ada.page.click('.create-invite');
  const invite = await ada.page.locator('.invite-link a').getAttribute('href');
  assert.ok(invite.startsWith(`${origin}/invite/`), `the invite link is on the public origin: ${invite}`);

  const bob = await signedIn(browser, site, 'Bob', recordSockets('Bob'));
  await bob.page.goto(invite);
  await bob.page.waitForSelector('[data-hydrated="true"]');
  await bob.page.click('.accept-invite');
  await bob.page.waitForURL('**/campaigns/behind-nginx');
  await live(bob.page);

  // Live both ways.
  await ada.page.fill('.title-input', 'Edited by Ada');
  await bob.page.waitForFunction(() => document.querySelector('.title-input').value === 'Edited by Ada');
  await bob.page.fill('.description-input', 'Bob was here.');
  await ada.page.waitForFunction(() => document.querySelector('.description-input').value === 'Bob was here.');

  // nginx goes away: both pages say so; what Bob types meanwhile waits.
  const before = { Ada: sockets.Ada.length, Bob: sockets.Bob.length };
  await stopNginx();
  for (const page of [ada.page, bob.page]) {
    await page.waitForSelector('.connection[data-status="reconnecting"]', { timeout: 5_000 });
    await page.waitForSelector('.offline-banner:has-text("Cannot reach the server")');
  }
  await bob.page.fill('.title-input', 'Typed while nginx was down');
  await bob.page.waitForSelector('.offline-banner:has-text("Your 1 change will be saved when you are back")');

  // nginx returns on the same port: the pages come back by themselves.
  nginx = await startNginx();
  for (const page of [ada.page, bob.page]) {
    await page.waitForSelector('.connection[data-status="connected"]', { timeout: 15_000 });
  }
  await ada.page.waitForFunction(() => document.querySelector('.title-input').value === 'Typed while nginx was down');
  await ada.page.fill('.feature-input', 'after_reconnect');
  await ada.page.press('.feature-input', 'Enter');
  await bob.page.waitForSelector('.chip[data-feature="after_reconnect"]');
  await bob.page.waitForSelector('.offline-banner', { state: 'detached' });

  for (const name of ['Ada', 'Bob']) {
    assert.ok(sockets[name].length > before[name], `${name}'s page opened a new socket: ${sockets[name]}`);
    for (const url of sockets[name]) assert.ok(url.startsWith(`wss://localhost:${port}/ws`), `${name}: ${url}`);
  }
  await bob.page.screenshot({ path: join(screenshotDir, `proxy-nginx-${mode}.png`), fullPage: true });
  for (const person of [ada, bob]) {
    assert.deepEqual(person.errors, []);
    await person.context.close();
  }
});

test(`Caddy: deploy/Caddyfile is valid, and runs: the same checks without the browser (${mode})`, async () => {
  const bin = need('caddy');
  const check = spawnSync(bin, ['validate', '--adapter', 'caddyfile', '--config', join(root, 'deploy', 'Caddyfile')], {
    encoding: 'utf8',
  });
  assert.equal(check.status, 0, `caddy validate deploy/Caddyfile:\n${check.stdout}${check.stderr}`);

  const env = { ...process.env, HOME: dir, XDG_DATA_HOME: `${dir}/caddy`, XDG_CONFIG_HOME: `${dir}/caddy` };
  caddy = startProcess(bin, ['run', '--adapter', 'caddyfile', '--config', `${dir}/Caddyfile`], env);
  await answering('caddy', caddyPort, caddy.exited, caddy.output);
  await servesTheSite(caddyPort);
  const session = await countsTheClient(caddyPort, '127.0.0.4', '127.0.0.5');
  await checksTheOrigin(caddyPort, session, `https://localhost:${caddyPort}`);
  await streamsEvents(caddyPort, session, 'streamed-caddy');
});
