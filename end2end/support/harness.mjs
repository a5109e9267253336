// Shared by the browser tests: start a real `rally` binary on a free port, and a real Chromium.
//
// RALLY_BIN picks the binary (default target/debug/rally; scripts/test also runs the suite
// against target/release/rally) and RALLY_SITE_ROOT the built site (default target/site).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const root = resolve(import.meta.dirname, '..', '..');

export const mode = process.env.RALLY_E2E_MODE ?? 'debug';

/** Start rally; resolves once it logged its startup line, with its base URL. */
export async function startServer(extraEnv = {}) {
  const bin = process.env.RALLY_BIN ?? join(root, 'target', 'debug', 'rally');
  const dataDir = mkdtempSync(join(tmpdir(), 'rally-e2e-'));
  const env = { ...process.env };
  for (const key of Object.keys(env)) {
    if (key.startsWith('RALLY_') || key.startsWith('LEPTOS_') || key === 'RUST_LOG') delete env[key];
  }
  Object.assign(env, {
    RALLY_ADDR: '127.0.0.1:0',
    RALLY_DATA_DIR: dataDir,
    RALLY_SITE_ROOT: process.env.RALLY_SITE_ROOT ?? join(root, 'target', 'site'),
    RALLY_LOG_FORMAT: 'json',
    ...extraEnv,
  });
  const child = spawn(bin, [], { env, stdio: ['ignore', 'inherit', 'pipe'] });
  const lines = [];
  const url = await new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`rally did not start in 20 s:\n${lines.join('\n')}`)), 20_000);
    child.once('exit', (code) => reject(new Error(`rally exited with ${code}:\n${lines.join('\n')}`)));
    createInterface({ input: child.stderr }).on('line', (line) => {
      lines.push(line);
      try {
        const record = JSON.parse(line);
        if (record.message === 'rally started') {
          clearTimeout(timer);
          resolveUrl(`http://${record.addr}`);
        }
      } catch {
        // not JSON: keep it for the error message
      }
    });
  });
  return {
    url,
    logLines: lines,
    /** SIGTERM and wait; resolves with the exit code. */
    async stop() {
      const exited = new Promise((r) => child.once('exit', (code) => r(code)));
      child.kill('SIGTERM');
      const code = await exited;
      rmSync(dataDir, { recursive: true, force: true });
      return code;
    },
  };
}

/** Debian's Chromium, headless, with the flags known to work on this machine kind. */
export async function launchBrowser(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      ...extraArgs,
    ],
  });
}

/** A page that records uncaught errors and console errors, so tests can assert there were none. */
export async function newWatchedPage(browser) {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') errors.push(`console: ${msg.text()}`);
  });
  return { page, errors };
}

export const screenshotDir = join(root, 'end2end', 'screenshots');

/**
 * A fresh browser context (own cookies) signed in as `name` on the landing page. `setup(page)`
 * runs before the first navigation (routes, init scripts). Page errors are collected in `errors`.
 */
export async function signedIn(browser, server, name, setup) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(err.message));
  if (setup) await setup(page);
  await page.goto(server.url);
  await page.waitForSelector('[data-hydrated="true"]');
  await page.fill('#display-name', name);
  await page.click('.sign-in button');
  // Signing in reloads the page: wait for the new page to hydrate before typing into it.
  await page.waitForSelector(`.user:text("${name}")`);
  await page.waitForSelector('[data-hydrated="true"]');
  return { page, context, errors };
}
