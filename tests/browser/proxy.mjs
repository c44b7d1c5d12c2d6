// The chat page through a reverse proxy (nginx, started by tests/tests/proxy.rs):
//
//   node tests/browser/proxy.mjs <proxy-url> [server-name] [screenshot-dir]
//
// For each transport (event stream, then long-poll, forced with `?transport=`):
//   1. two pages (separate browser contexts) load the page through the proxy and connect with
//      that transport;
//   2. a message typed into the first page's form is published (200: the browser's Origin is
//      the proxy's URL, which Parlor must see as same-origin through the forwarded host and
//      port) and appears in both pages within 5 s.
// A screenshot of the first page (event stream) is written to
// <screenshot-dir>/proxy-<server-name>.png.
// Page errors and console errors (a refused publish among them) fail the test.
// Exit status 0 on success, 1 on failure (with the reason on stderr), 2 on bad usage.

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const [url, serverName = 'server', shotArg] = process.argv.slice(2);
if (!url || !/^https?:\/\//.test(url)) {
  console.error('usage: node proxy.mjs <proxy-url> [server-name] [screenshot-dir]');
  process.exit(2);
}
const here = path.dirname(fileURLToPath(import.meta.url));
const shotDir = shotArg || path.join(here, '..', '..', 'target', 'screenshots');
const CHROMIUM = process.env.PARLOR_CHROMIUM || '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'];
const READY_MS = 15000;
const SHOWN_MS = 5000;

const profileRoot = mkdtempSync(path.join(tmpdir(), 'parlor-chromium-'));
process.env.TMPDIR = profileRoot;
const { chromium } = await import('playwright-core');

const failures = [];
const log = (...a) => console.log(`[${serverName} via proxy]`, ...a);

function watch(page, label) {
  page.on('pageerror', (e) => failures.push(`${label}: page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') failures.push(`${label}: console error: ${m.text()}`);
  });
  page.on('response', (r) => {
    if (new URL(r.url()).pathname === '/publish' && r.status() !== 200) {
      failures.push(`${label}: POST /publish answered ${r.status()} through the proxy`);
    }
  });
}

function check() {
  if (failures.length) throw new Error(failures.join('\n'));
}

async function ready(page, label) {
  try {
    await page.waitForSelector('#status[data-state="connected"]', { timeout: READY_MS });
  } catch (e) {
    throw new Error(`${label}: never connected; status: ${await page.textContent('#status').catch(() => '?')}`);
  }
}

async function shown(page, label, text) {
  try {
    await page.waitForFunction(
      (t) => [...document.querySelectorAll('li.message .text')].some((e) => e.textContent === t),
      text,
      { timeout: SHOWN_MS, polling: 25 },
    );
  } catch (e) {
    check();
    throw new Error(`${label}: ${JSON.stringify(text)} not shown within ${SHOWN_MS} ms`);
  }
}

// One round per transport (`/?transport=sse`, `?transport=poll`): two pages, a message typed in
// the first shown in both.
async function round(browser, base, transport) {
  const room = `proxy${transport}${Date.now().toString(36)}`;
  const pageUrl = `${base}/?room=${room}&transport=${transport}`;
  const [ctxA, ctxB] = await Promise.all([browser.newContext(), browser.newContext()]);
  const a = await ctxA.newPage();
  const b = await ctxB.newPage();
  watch(a, `page A (${transport})`);
  watch(b, `page B (${transport})`);
  await Promise.all([a.goto(pageUrl), b.goto(pageUrl)]);
  await Promise.all([ready(a, `page A (${transport})`), ready(b, `page B (${transport})`)]);
  for (const [p, label] of [[a, 'page A'], [b, 'page B']]) {
    const shownTransport = await p.evaluate(() => document.body.dataset.transport);
    if (shownTransport !== transport) throw new Error(`${label}: transport ${shownTransport}, expected ${transport}`);
  }
  log(`${transport}: both pages connected through`, base);
  check();

  const text = `through the proxy by ${transport} ${Date.now()}`;
  const t = Date.now();
  const published = a.waitForResponse((r) => new URL(r.url()).pathname === '/publish');
  await a.fill('#name', 'alice');
  await a.fill('#text', text);
  await a.click('#send');
  const res = await published;
  if (res.status() !== 200) throw new Error(`POST /publish answered ${res.status()}: ${await res.text()}`);
  await Promise.all([shown(a, `page A (${transport})`, text), shown(b, `page B (${transport})`, text)]);
  log(`${transport}: sent from the form, shown in both pages after ${Date.now() - t} ms`);
  check();
  return [a, ctxA, ctxB];
}

let browser;
let status = 0;
try {
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
  const base = url.replace(/\/$/, '');
  for (const transport of ['sse', 'poll']) {
    const [a, ctxA, ctxB] = await round(browser, base, transport);
    if (transport === 'sse') {
      mkdirSync(shotDir, { recursive: true });
      const shot = path.join(shotDir, `proxy-${serverName}.png`);
      await a.screenshot({ path: shot });
      log('screenshot', shot);
    }
    await Promise.all([ctxA.close(), ctxB.close()]);
  }
  log('ok');
} catch (e) {
  console.error(`[${serverName} via proxy] FAIL: ${e && e.message ? e.message : e}`);
  status = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  rmSync(profileRoot, { recursive: true, force: true });
}
process.exit(status);
