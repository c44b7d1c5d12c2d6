// The chat page on two Parlor nodes sharing one Redis: headless Chromium, one page per node.
//
//   node tests/browser/nodes.mjs <node-a-url> <node-b-url>
//
// 1. both pages load room R and connect (each to its own node);
// 2. a message typed in the page of node A shows in the page of node B within 2 s, and one typed
//    in B shows in A; each page shows each message once;
// 3. a page opened afterwards on node B shows both in its history, in order.
// Page errors and console errors fail the test. Exit status 0 on success, 1 on failure.
// Set up like chat.mjs (`cargo xtask setup`: chromium, and `npm ci` here).

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const [urlA, urlB] = process.argv.slice(2);
if (!/^https?:\/\//.test(urlA || '') || !/^https?:\/\//.test(urlB || '')) {
  console.error('usage: node nodes.mjs <node-a-url> <node-b-url>');
  process.exit(2);
}
const CHROMIUM = process.env.PARLOR_CHROMIUM || '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-sync'];
const SHOWN_MS = 2000;
const READY_MS = 15000;

const profileRoot = mkdtempSync(path.join(tmpdir(), 'parlor-chromium-'));
process.env.TMPDIR = profileRoot;
const { chromium } = await import('playwright-core');

const failures = [];
function watch(page, label) {
  page.on('pageerror', (e) => failures.push(`${label}: page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/^Failed to load resource: net::ERR_/.test(m.text())) {
      failures.push(`${label}: console error: ${m.text()}`);
    }
  });
}

const texts = (page) => page.$$eval('li.message .text', (els) => els.map((e) => e.textContent));

async function shown(page, label, text) {
  try {
    await page.waitForFunction(
      (t) => [...document.querySelectorAll('li.message .text')].some((e) => e.textContent === t),
      text,
      { timeout: SHOWN_MS, polling: 25 },
    );
  } catch (e) {
    throw new Error(`${label}: ${JSON.stringify(text)} not shown within ${SHOWN_MS} ms; shown: ${JSON.stringify(await texts(page))}`);
  }
}

async function open(browser, base, room, label) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  watch(page, label);
  await page.goto(`${base.replace(/\/$/, '')}/?room=${room}`);
  await page.waitForSelector('#status[data-state="connected"]', { timeout: READY_MS });
  return page;
}

async function send(page, text) {
  await page.fill('#name', 'tester');
  await page.fill('#text', text);
  await page.click('#send');
}

let browser;
let status = 0;
try {
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
  const room = 'nodes' + Date.now().toString(36);
  const a = await open(browser, urlA, room, 'page on A');
  const b = await open(browser, urlB, room, 'page on B');
  await send(a, 'from A');
  await shown(b, 'page on B', 'from A');
  await send(b, 'from B');
  await shown(a, 'page on A', 'from B');
  for (const [page, label] of [[a, 'page on A'], [b, 'page on B']]) {
    const t = await texts(page);
    if (JSON.stringify(t) !== JSON.stringify(['from A', 'from B'])) {
      throw new Error(`${label} shows ${JSON.stringify(t)}, expected each message once, in order`);
    }
  }
  const late = await open(browser, urlB, room, 'late page on B');
  await shown(late, 'late page on B', 'from B');
  const t = await texts(late);
  if (JSON.stringify(t) !== JSON.stringify(['from A', 'from B'])) {
    throw new Error(`late page on B shows ${JSON.stringify(t)}, expected the history in order`);
  }
  if (failures.length) throw new Error(failures.join('\n'));
  console.log('ok: two pages on two nodes see each other\'s messages');
} catch (e) {
  console.error(e.message || e);
  status = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  rmSync(profileRoot, { recursive: true, force: true });
}
process.exit(status);
