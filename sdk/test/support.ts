// Test support: a real Rally server on a free port with a fresh data directory, people signed in
// over HTTP, and a TCP relay the tests can cut and restore. No part of Rally is mocked.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect as tcpConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const RALLY_BIN = process.env.RALLY_BIN ?? new URL('../../../target/debug/rally', import.meta.url).pathname;
const SITE_ROOT = process.env.RALLY_SITE_ROOT ?? new URL('../../../target/site', import.meta.url).pathname;

export interface RallyServer {
  url: string;
  dataDir: string;
  output: () => string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Start `rally` (RALLY_BIN) and wait until `/healthz` answers 200. `prepare` runs on the data dir first. */
export async function startServer(options: { prepare?: (dataDir: string) => void; env?: Record<string, string> } = {}): Promise<RallyServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'rally-sdk-'));
  options.prepare?.(dataDir);
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  let log = '';
  const child: ChildProcess = spawn(RALLY_BIN, [], {
    env: {
      ...process.env,
      RALLY_ADDR: `127.0.0.1:${port}`,
      RALLY_DATA_DIR: dataDir,
      RALLY_SITE_ROOT: SITE_ROOT,
      RALLY_API_PER_MINUTE: '100000000',
      RALLY_SESSIONS_PER_MINUTE: '1000000',
      RALLY_CAMPAIGNS_PER_MINUTE: '1000000',
      RALLY_MAX_CAMPAIGNS_PER_USER: '1000000',
      RALLY_MAX_CONNECTIONS_PER_IP: '0',
      RALLY_DEFAULT_VISIBILITY: 'public',
      ...options.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.on('data', (chunk: Buffer) => (log += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (log += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`rally exited with ${child.exitCode}:\n${log}`);
    try {
      const response = await fetch(`${url}/healthz`);
      if (response.status === 200) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`rally did not become healthy within 20 s:\n${log}`);
    }
    await sleep(50);
  }
  return {
    url,
    dataDir,
    output: () => log,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(killer);
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Wait until `check()` is truthy (polling), or fail with `what`. */
export async function eventually<T>(check: () => T | Promise<T>, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Sign a person in: their session token. */
export async function signIn(url: string, displayName: string): Promise<{ token: string; userId: string }> {
  const response = await fetch(`${url}/api/session`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ display_name: displayName }),
  });
  if (!response.ok) throw new Error(`sign-in failed: ${response.status} ${await response.text()}`);
  const body = (await response.json()) as { token: string; user: { user_id: string } };
  return { token: body.token, userId: body.user.user_id };
}

let counter = 0;
/** A fresh campaign id for this run. */
export function campaignId(prefix = 'c'): string {
  counter += 1;
  return `${prefix}-${process.pid}-${counter}-${Math.floor(Math.random() * 1e6)}`;
}

/**
 * A TCP relay in front of `target`: `cut()` drops every connection and refuses new ones until
 * `restore()` (as end2end/integrate.test.mjs does for the browser).
 */
export async function startLink(target: string) {
  const { hostname, port } = new URL(target);
  const sockets = new Set<Socket>();
  let open = true;
  let accepted = 0;
  const relay = createServer((client) => {
    if (!open) return void client.destroy();
    accepted += 1;
    const upstream = tcpConnect(Number(port), hostname);
    for (const [a, b] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      sockets.add(a);
      a.pipe(b);
      a.on('error', () => b.destroy());
      a.on('close', () => {
        sockets.delete(a);
        b.destroy();
      });
    }
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(relay.address() as { port: number }).port}`,
    get accepted() {
      return accepted;
    },
    cut() {
      open = false;
      for (const socket of sockets) socket.destroy();
    },
    restore() {
      open = true;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        relay.close(() => resolve());
      }),
  };
}
