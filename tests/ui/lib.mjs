// Shared by the browser tests: Debian's Chromium under playwright-core (never a downloaded
// browser), sign-in, steps and figures printed for the Rust test that runs these scripts.

import { chromium } from 'playwright-core';

export const BASE = process.env.RS_BASE.replace(/\/$/, '');

export async function browser() {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--use-gl=swiftshader', '--enable-unsafe-swiftshader'],
  });
}

let stepName = 'start';
const started = Date.now();
export function step(name) {
  stepName = name;
  console.log(`STEP [${((Date.now() - started) / 1000).toFixed(1)} s] ${name}`);
}

export function figure(name, value) {
  console.log(`FIGURE ${name}=${value}`);
}

export function check(cond, message) {
  if (!cond) throw new Error(`${stepName}: ${message}`);
}

/** A fresh tab (its own sessionStorage) that reports script errors. */
export async function tab(b, viewport = { width: 1400, height: 900 }) {
  const context = await b.newContext({ viewport });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.log(`pageerror (${stepName}): ${e.message}`));
  return page;
}

/** Signs in through the form and waits for the worklist. */
export async function signIn(page, key) {
  await page.goto(`${BASE}/ui/`);
  await page.fill('input[name="api_key"]', key);
  await page.click('#login-form button[type="submit"]');
  await page.waitForSelector('#rows');
  check(!page.url().includes(key), 'the key is in the address');
}

/** The node's API with a key in a header, from the test (not the page). */
export async function api(path, key, init = {}) {
  const resp = await fetch(`${BASE}${path}`, { ...init, headers: { 'x-api-key': key, ...(init.headers || {}) } });
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status} ${await resp.text()}`);
  return (await resp.json()).data;
}

export async function until(what, fn, ms = 60000, every = 100) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`${stepName}: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

export async function run(main) {
  try {
    await main();
    console.log('ALL PASSED');
    // An aborted event stream can hold the loop open; nothing is left to wait for.
    process.exit(0);
  } catch (e) {
    console.log(`FAILED: ${e.stack || e}`);
    process.exit(1);
  }
}
