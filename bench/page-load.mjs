// How fast a campaign page is usable on a slow phone: Chromium throttled through the DevTools
// protocol (1.6 Mbps down, 750 kbps up, 150 ms round trip, CPU 4× slower), a cold cache for
// every load, the median of N loads per site. Three moments per load:
//   content  — first contentful paint: the server-rendered campaign is on screen;
//   code     — the main WebAssembly file's last byte arrived (Resource Timing `responseEnd`):
//              ready minus code is what compiling the rest, instantiating and hydrating take;
//   ready    — the page hydrated (`data-hydrated="true"`): its fields take edits;
//   whole    — hydrated and its history panel on screen (the panels load after hydration).
// Plus the bytes the browser received by then. Sites are measured in turns (A, B, A, B, …) so a machine
// that gets busier halfway does not favour one of them.
//
//   node bench/page-load.mjs [--loads 5] [--site name=path/to/site[,path/to/rally]] … [--bin path/to/rally] [--files]
//
// --files also lists, per site, what the last load fetched: each file's bytes on the wire and
// when it started and finished, to see what shares the slow link with the main WebAssembly file.
//
// Without --site it measures target/site. Each site is served by its own `rally` process: the
// binary named after its path, else --bin (target/release/rally). A binary must match its site's
// build: a release binary for a release site, one built from the same commit.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const root = resolve(import.meta.dirname, '..');
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const at = args.indexOf(`--${name}`);
  return at >= 0 ? args[at + 1] : fallback;
};
const loads = Number(option('loads', '5'));
const listFiles = args.includes('--files');
const bin = resolve(option('bin', join(root, 'target', 'release', 'rally')));
const sites = args
  .flatMap((arg, i) => (arg === '--site' ? [args[i + 1]] : []))
  .map((spec) => {
    const [name, paths] = spec.includes('=') ? spec.split('=') : [spec, spec];
    const [path, siteBin] = paths.split(',');
    return { name, path: resolve(path), bin: siteBin ? resolve(siteBin) : bin };
  });
if (sites.length === 0) sites.push({ name: 'target/site', path: join(root, 'target', 'site') });

const PROFILE = {
  latency: 150,
  downloadThroughput: (1.6e6 / 8) | 0,
  uploadThroughput: (750e3 / 8) | 0,
  cpuSlowdown: 4,
};

async function startRally(site, bin) {
  const dataDir = mkdtempSync(join(tmpdir(), 'rally-load-'));
  const env = { ...process.env };
  for (const key of Object.keys(env)) if (key.startsWith('RALLY_') || key.startsWith('LEPTOS_')) delete env[key];
  Object.assign(env, {
    RALLY_ADDR: '127.0.0.1:0',
    RALLY_DATA_DIR: dataDir,
    RALLY_SITE_ROOT: site,
    RALLY_LOG_FORMAT: 'json',
    RALLY_DEFAULT_VISIBILITY: 'public',
  });
  const child = spawn(bin, [], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const url = await new Promise((found, failed) => {
    child.once('exit', (code) => failed(new Error(`rally exited with ${code} serving ${site}`)));
    createInterface({ input: child.stderr }).on('line', (line) => {
      try {
        const record = JSON.parse(line);
        if (record.message === 'rally started') found(`http://${record.addr}`);
      } catch {
        // not a log record
      }
    });
  });
  return {
    url,
    stop: async () => {
      const exited = new Promise((done) => child.once('exit', done));
      child.kill('SIGTERM');
      await exited;
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** A campaign with some content, made over the HTTP API. */
async function seed(url) {
  const session = await fetch(`${url}/api/session`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ display_name: 'Bench' }),
  }).then((r) => r.json());
  const auth = { 'content-type': 'application/json', authorization: `Bearer ${session.token}` };
  await fetch(`${url}/api/campaigns`, {
    method: 'POST',
    headers: auth,
    body: JSON.stringify({ campaign_id: 'spring-launch', title: 'Spring launch' }),
  });
  await fetch(`${url}/api/campaigns/spring-launch`, {
    method: 'PATCH',
    headers: auth,
    body: JSON.stringify({
      updates: {
        status: 'active',
        description: 'Everything about the spring launch: dates, channels, the hero banner and the copy.',
      },
    }),
  });
}

/** One cold load of the campaign page under the throttled profile. */
async function load(browser, url) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false,
    latency: PROFILE.latency,
    downloadThroughput: PROFILE.downloadThroughput,
    uploadThroughput: PROFILE.uploadThroughput,
  });
  await cdp.send('Emulation.setCPUThrottlingRate', { rate: PROFILE.cpuSlowdown });
  let bytes = 0;
  cdp.on('Network.loadingFinished', (event) => {
    bytes += event.encodedDataLength;
  });
  // The moments hydration marks the page, and the page is whole (hydrated, and its history
  // panel on screen — it loads after hydration since the panels were split off), on the page's
  // own clock.
  await page.addInitScript(() => {
    new MutationObserver((_, observer) => {
      const hydrated = document.querySelector('[data-hydrated="true"]');
      if (hydrated && window.__readyAt === undefined) window.__readyAt = performance.now();
      if (hydrated && document.querySelector('.panel.history')) {
        window.__completeAt = performance.now();
        observer.disconnect();
      }
    }).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-hydrated'] });
  });
  await page.goto(`${url}/campaigns/spring-launch`, { waitUntil: 'commit' });
  await page.waitForFunction(() => window.__completeAt !== undefined, null, { timeout: 120_000 });
  const timing = await page.evaluate(() => ({
    content: performance.getEntriesByName('first-contentful-paint')[0]?.startTime,
    code: performance
      .getEntriesByType('resource')
      .find((entry) => /\/pkg\/rally\.[^/]*\.wasm$/.test(new URL(entry.name).pathname))?.responseEnd,
    ready: window.__readyAt,
    complete: window.__completeAt,
    files: [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')].map(
      (entry) => ({
        path: new URL(entry.name).pathname,
        bytes: entry.transferSize,
        start: entry.startTime,
        end: entry.responseEnd,
      }),
    ),
  }));
  await context.close();
  return { ...timing, bytes };
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run'],
});
const servers = [];
try {
  for (const site of sites) {
    const server = await startRally(site.path, site.bin);
    await seed(server.url);
    servers.push({ ...site, ...server, runs: [] });
  }
  for (const server of servers) await load(browser, server.url); // warm-up: not counted
  for (let round = 0; round < loads; round += 1) {
    for (const server of servers) server.runs.push(await load(browser, server.url));
  }
  console.log(
    `campaign page, cold cache, ${PROFILE.downloadThroughput * 8 / 1e6} Mbps down, ${PROFILE.latency} ms RTT, CPU ${PROFILE.cpuSlowdown}× slower; median of ${loads}`,
  );
  for (const server of servers) {
    const ms = (key) => Math.round(median(server.runs.map((run) => run[key])));
    const kb = Math.round(median(server.runs.map((run) => run.bytes)) / 1024);
    const all = (key) => server.runs.map((run) => Math.round(run[key])).join(' ');
    console.log(
      `${server.name.padEnd(24)} content ${String(ms('content')).padStart(5)} ms   code ${String(ms('code')).padStart(5)} ms   ready ${String(ms('ready')).padStart(5)} ms   whole ${String(ms('complete')).padStart(5)} ms   received ${String(kb).padStart(5)} KiB   (content: ${all('content')}; code: ${all('code')}; ready: ${all('ready')}; whole: ${all('complete')})`,
    );
    if (listFiles) {
      for (const file of server.runs.at(-1).files) {
        console.log(
          `    ${file.path.padEnd(48)} ${String(file.bytes).padStart(8)} B   ${String(Math.round(file.start)).padStart(5)} → ${String(Math.round(file.end)).padStart(5)} ms`,
        );
      }
    }
  }
} finally {
  await browser.close();
  for (const server of servers) await server.stop();
}
