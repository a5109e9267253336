// Every file of the built site, fetched as a browser would: the right type, the right cache rule,
// and — for a release build (`cargo leptos build --release --precompress --split`) — Brotli and gzip
// variants chosen by Accept-Encoding that decode to exactly the file's bytes.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { join, relative, resolve } from 'node:path';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { launchBrowser, mode, signedIn, startServer } from './support/harness.mjs';

const siteRoot = process.env.RALLY_SITE_ROOT ?? resolve(import.meta.dirname, '..', 'target', 'site');
const YEAR = 'public, max-age=31536000, immutable';

let server;

before(async () => {
  server = await startServer();
});

after(async () => {
  if (server) assert.equal(await server.stop(), 0);
});

/** Every file the site holds, as request paths, without the compressed variants themselves. */
function siteFiles(dir = siteRoot) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return siteFiles(path);
    if (/\.(br|gz)$/.test(name)) return [];
    return [`/${relative(siteRoot, path).split('\\').join('/')}`];
  });
}

const fingerprints = Object.fromEntries(
  readFileSync(join(siteRoot, 'hash.txt'), 'utf8')
    .split('\n')
    .filter((line) => line.includes(':'))
    .map((line) => line.split(':').map((part) => part.trim())),
);
const fingerprinted = new Set(['js', 'wasm', 'css'].map((kind) => `/pkg/rally.${fingerprints[kind]}.${kind}`));
const splitLoader = `/pkg/__wasm_split.${fingerprints.split}.js`;
/** Kept a year: files whose name changes with their content — the stylesheet, the split loader,
 *  the split-off WebAssembly files. The main WebAssembly file, the JavaScript glue and the split
 *  manifest are named before other files' names are written into them, so they revalidate. */
const mainWasm = `/pkg/rally.${fingerprints.wasm}.wasm`;
const immutable = (path) =>
  path === `/pkg/rally.${fingerprints.css}.css` ||
  path === splitLoader ||
  (path !== mainWasm && /^\/pkg\/[^/]+\.[^./]+\.wasm$/.test(path));

/** GET with node:http, which (unlike fetch) hands over the bytes as sent, not decoded. */
function get(path, encoding, headers = {}) {
  return new Promise((resolveGet, reject) => {
    request(server.url + path, { headers: { 'accept-encoding': encoding, ...headers } }, (response) => {
      const chunks = [];
      response.on('data', (chunk) => chunks.push(chunk));
      response.on('end', () =>
        resolveGet({
          response: { status: response.statusCode, headers: { get: (name) => response.headers[name] ?? null } },
          bytes: Buffer.concat(chunks),
        }),
      );
      response.on('error', reject);
    })
      .on('error', reject)
      .end();
  });
}

test(`every site file goes out with its type, cache rule and encodings (${mode})`, async () => {
  const files = siteFiles();
  assert.ok(fingerprinted.size === 3 && [...fingerprinted].every((path) => files.includes(path)), `fingerprinted files ${[...fingerprinted]} among ${files}`);
  assert.ok(fingerprints.split && files.includes(splitLoader), `built with --split: ${splitLoader} among ${files}`);
  assert.ok(files.some((path) => path.startsWith('/pkg/split___landing_route')), 'the landing page is split off');
  const precompressed = mode === 'release';
  let checked = 0;
  for (const path of files) {
    const original = readFileSync(join(siteRoot, path));
    const plain = await get(path, 'identity');
    assert.equal(plain.response.status, 200, path);
    assert.ok(plain.bytes.equals(original), `${path}: plain bytes`);
    assert.equal(plain.response.headers.get('content-encoding'), null, path);
    assert.equal(plain.response.headers.get('cache-control'), immutable(path) ? YEAR : 'no-cache', path);
    assert.match(plain.response.headers.get('vary') ?? '', /accept-encoding/i, path);
    if (path.endsWith('.wasm')) assert.equal(plain.response.headers.get('content-type'), 'application/wasm', path);
    if (path.endsWith('.js')) assert.match(plain.response.headers.get('content-type'), /javascript/, path);
    if (path.endsWith('.css')) assert.match(plain.response.headers.get('content-type'), /^text\/css/, path);
    // What revalidates costs a round trip, not the file, while the browser's copy is current
    // (asked as a browser asks: the date of the variant it got).
    const first = await get(path, 'br, gzip, identity');
    const lastModified = first.response.headers.get('last-modified');
    assert.ok(lastModified, `${path}: Last-Modified`);
    const again = await get(path, 'br, gzip, identity', { 'if-modified-since': lastModified });
    assert.equal(again.response.status, 304, `${path}: unchanged since the browser's copy`);
    assert.equal(again.bytes.length, 0, path);
    assert.equal(again.response.headers.get('cache-control'), plain.response.headers.get('cache-control'), path);

    for (const [encoding, decode] of [['br', brotliDecompressSync], ['gzip', gunzipSync]]) {
      const variant = await get(path, `${encoding}, identity`);
      if (!precompressed) {
        assert.equal(variant.response.headers.get('content-encoding'), null, `${path}: a debug site has no ${encoding} variant`);
        continue;
      }
      assert.equal(variant.response.headers.get('content-encoding'), encoding, `${path}: ${encoding} variant served`);
      assert.ok(decode(variant.bytes).equals(original), `${path}: the ${encoding} variant decodes to the file`);
      assert.equal(variant.response.headers.get('cache-control'), plain.response.headers.get('cache-control'), path);
      // What a browser gets: the file's own type (streaming compilation needs application/wasm)
      // and a Vary that keeps a shared cache from handing this encoding to another client.
      assert.equal(variant.response.headers.get('content-type'), plain.response.headers.get('content-type'), `${path}: ${encoding} type`);
      assert.match(variant.response.headers.get('vary') ?? '', /accept-encoding/i, `${path}: ${encoding} Vary`);
    }
    checked += 1;
  }
  assert.ok(checked >= 5, `checked ${checked} files`);

  // Pages revalidate on every visit and name the fingerprinted files.
  const page = await fetch(server.url + '/');
  assert.equal(page.headers.get('cache-control'), 'private, no-cache');
  const html = await page.text();
  for (const path of fingerprinted) assert.ok(html.includes(path), `the page links ${path}`);
  // …and its headers name them too, so a browser starts fetching them before it reads the page.
  const links = page.headers.get('link') ?? '';
  assert.match(links, new RegExp(`<${mainWasm}>; rel=preload; as=fetch; type="application/wasm"; crossorigin`), links);
  assert.match(links, new RegExp(`</pkg/rally\\.${fingerprints.js}\\.js>; rel=modulepreload; crossorigin`), links);
  assert.match(links, new RegExp(`</pkg/rally\\.${fingerprints.css}\\.css>; rel=preload; as=style`), links);
  const missing = await fetch(server.url + '/pkg/rally.nope.wasm');
  assert.equal(missing.status, 404);
  assert.equal(missing.headers.get('cache-control'), 'no-cache', 'a missing file is not kept');

  if (precompressed) {
    const wasm = [...fingerprinted].find((path) => path.endsWith('.wasm'));
    const br = statSync(join(siteRoot, `${wasm}.br`)).size;
    console.log(`# ${wasm}: ${statSync(join(siteRoot, wasm)).size} bytes, ${br} bytes Brotli`);
  }
});

test(`a browser loads the fingerprinted files, and the landing page's split-off code, and hydrates (${mode})`, async () => {
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage();
    const loaded = [];
    const asked = [];
    page.on('request', (request) => asked.push(new URL(request.url()).pathname));
    page.on('response', (response) => loaded.push(new URL(response.url()).pathname));
    await page.goto(server.url);
    await page.waitForSelector('[data-hydrated="true"]');
    for (const path of fingerprinted) {
      assert.ok(loaded.includes(path), `${path} loaded: ${loaded}`);
      // Named in the page's headers and in its <head>: still fetched once.
      assert.equal(asked.filter((p) => p === path).length, 1, `${path} fetched once: ${asked}`);
    }
    assert.ok(loaded.some((path) => path.startsWith('/pkg/split___landing_route')), `the landing page's own code loaded: ${loaded}`);
  } finally {
    await browser.close();
  }
});

test(`a campaign page hydrates without its history and access panels and its settings editor, whose code loads after (${mode})`, async () => {
  const browser = await launchBrowser();
  try {
    const ada = await signedIn(browser, server, 'Ada');
    await ada.page.fill('#new-campaign-id', 'assets');
    await ada.page.fill('#new-campaign-title', 'Assets');
    await ada.page.click('.create-campaign button');
    await ada.page.waitForURL('**/campaigns/assets');

    const page = await ada.context.newPage();
    const errors = [];
    page.on('pageerror', (err) => errors.push(err.message));
    // Waiting for the panels' code must not take the campaign itself off the page, nor its
    // settings: they show read only until the editor arrives.
    await page.addInitScript(() => {
      window.campaignRemoved = false;
      window.settingsGone = false;
      new MutationObserver((records) => {
        for (const record of records) {
          for (const node of record.removedNodes) {
            if (node.nodeType === 1 && (node.matches('article.campaign') || node.querySelector('article.campaign'))) {
              window.campaignRemoved = true;
            }
          }
        }
        if (document.querySelector('[data-hydrated="true"] article.campaign') && !document.querySelector('.panel.config')) {
          window.settingsGone = true;
        }
      }).observe(document, { childList: true, subtree: true });
    });
    const loaded = [];
    page.on('response', (response) => loaded.push(new URL(response.url()).pathname));
    const response = await page.goto(`${server.url}/campaigns/assets`);
    const html = await response.text();
    assert.match(html, /class="[^"]*\bfeatures\b/, 'the page itself is server-rendered');
    assert.doesNotMatch(html, /class="panel (history|members)"/, 'the later panels are not');
    assert.match(html, /class="panel config settings-preview"/, 'the settings are, read only');
    assert.doesNotMatch(html, /config-mode/, 'the settings editor is not');
    await page.waitForSelector('[data-hydrated="true"]');
    await page.waitForSelector('.panel.history');
    await page.waitForSelector('.panel.members');
    await page.waitForSelector('.panel.invite');
    await page.waitForSelector('.panel.config .config-mode');
    assert.equal(await page.locator('.settings-preview').count(), 0, 'the editor took the read-only settings\' place');
    assert.equal(await page.evaluate(() => window.campaignRemoved), false, 'the campaign stayed on screen while the panels loaded');
    assert.equal(await page.evaluate(() => window.settingsGone), false, 'the settings stayed on screen until the editor came');
    assert.deepEqual(errors, []);
    for (const name of ['history_panel', 'access_panels', 'settings_editor']) {
      assert.ok(loaded.some((path) => path.startsWith(`/pkg/split_${name}`)), `${name}'s own code loaded: ${loaded}`);
    }
  } finally {
    await browser.close();
  }
});

test(`the live room's code and the browser's media engine load when someone joins, not before (${mode})`, async () => {
  const browser = await launchBrowser();
  try {
    const ada = await signedIn(browser, server, 'Ada');
    await ada.page.fill('#new-campaign-id', 'room-later');
    await ada.page.fill('#new-campaign-title', 'Room later');
    await ada.page.click('.create-campaign button');
    await ada.page.waitForURL('**/campaigns/room-later');

    const page = await ada.context.newPage();
    const errors = [];
    page.on('pageerror', (err) => errors.push(err.message));
    const loaded = [];
    page.on('response', (response) => loaded.push(new URL(response.url()).pathname));
    await page.goto(`${server.url}/campaigns/room-later`);
    await page.waitForSelector('[data-hydrated="true"]');
    await page.waitForSelector('.panel.members'); // the later panels are in: nothing else is due
    const roomCode = () => ['in_room', 'web_media'].filter((name) => loaded.some((path) => path.startsWith(`/pkg/split_${name}`)));
    assert.deepEqual(roomCode(), [], 'nothing of the live room loaded before joining');
    assert.equal(await page.locator('.live-room .join-live').innerText(), 'Join the live room');

    await page.click('.join-live');
    await page.waitForSelector('.live-room[data-phase="in"] .go-live');
    assert.deepEqual(roomCode(), ['in_room', 'web_media'], `the room's code and the engine loaded on joining: ${loaded}`);
    await page.click('.leave-live');
    await page.waitForSelector('.live-room[data-phase="out"] .join-live');
    await page.click('.join-live'); // the second time, from what is already loaded
    await page.waitForSelector('.live-room[data-phase="in"] .go-live');
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test(`when code that loads later cannot be fetched, the page says so, keeps working, and trying again loads it (${mode})`, async () => {
  const browser = await launchBrowser();
  try {
    const ada = await signedIn(browser, server, 'Ada');
    await ada.page.fill('#new-campaign-id', 'code-lost');
    await ada.page.fill('#new-campaign-title', 'Code lost');
    await ada.page.click('.create-campaign button');
    await ada.page.waitForURL('**/campaigns/code-lost');

    const page = await ada.context.newPage();
    const errors = [];
    page.on('pageerror', (err) => errors.push(err.message));
    // The connection drops just as the history panel's, the settings editor's and the live
    // room's code are fetched.
    const dropped = (route) => route.abort('internetdisconnected');
    await page.route('**/pkg/split_history_panel*', dropped);
    await page.route('**/pkg/split_settings_editor*', dropped);
    await page.route('**/pkg/split_in_room*', dropped);
    await page.route('**/pkg/split_web_media*', dropped);
    await page.goto(`${server.url}/campaigns/code-lost`);
    await page.waitForSelector('[data-hydrated="true"]');
    await page.waitForSelector('.load-failed[data-part="history"]');
    await page.waitForSelector('.load-failed[data-part="settings"]');
    assert.equal(await page.locator('.settings-preview').count(), 1, 'the settings are still shown, read only');
    await page.waitForSelector('.panel.members'); // the other panels came

    // The page still works: what is typed is kept, saved, and seen by others.
    await page.fill('.description-input', 'Typed while part of the page was missing.');
    await ada.page.waitForFunction(() => document.querySelector('.description-input').value === 'Typed while part of the page was missing.');
    await page.click('.join-live');
    await page.waitForSelector('.live-room[data-phase="out"] .media-error:text("did not load")');

    await page.unroute('**/pkg/split_history_panel*');
    await page.unroute('**/pkg/split_settings_editor*');
    await page.unroute('**/pkg/split_in_room*');
    await page.click('.load-failed[data-part="history"] .load-again');
    await page.waitForSelector('.panel.history');
    await page.click('.load-failed[data-part="settings"] .load-again');
    await page.waitForSelector('.panel.config .config-mode');
    assert.equal(await page.locator('.load-failed').count(), 0);
    // The room's own code arrives now, the media engine's still does not.
    const roomCode = page.waitForResponse((response) => response.url().includes('/pkg/split_in_room'));
    await page.click('.join-live');
    await roomCode;
    await page.waitForSelector('.live-room[data-phase="out"] .media-error:text("did not load")');
    await page.unroute('**/pkg/split_web_media*');
    await page.click('.join-live');
    await page.waitForSelector('.live-room[data-phase="in"] .go-live');
    assert.equal(await page.inputValue('.description-input'), 'Typed while part of the page was missing.');
    // The generated split loader starts a file's fetch before it awaits the chunks it shares, so
    // the browser may report a dropped fetch as an unhandled rejection before the loader handles
    // it; a panic would be a RuntimeError ('unreachable') and would have stopped the page.
    assert.ok(errors.every((message) => message === 'Failed to fetch'), `only the dropped fetches: ${errors}`);
  } finally {
    await browser.close();
  }
});
