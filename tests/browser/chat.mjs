// The chat page in a real browser: headless Debian Chromium driven by playwright-core.
//
//   node tests/browser/chat.mjs <server-url> [server-name] [screenshot-dir]
//
// Two pages in one room (separate browser contexts, so one can go offline alone):
//   1. a message typed in one page appears in both within 2 s;
//   2. `<img src=x onerror=alert(1)>` is shown as literal text, no element is created and no
//      dialog opens (any dialog fails the test);
//   3. a reload shows the room's recent history;
//   4. messages sent while one page is offline appear there once it is back online;
//   5. a screenshot of the page is written to <screenshot-dir>/chat-<server-name>.png
//      (default: target/screenshots in the workspace).
// Page errors, CSP violations and other console errors fail the test too.
// Exit status 0 on success, 1 on failure (with the reason on stderr), 2 on bad usage.
// Set up with `cargo xtask setup` (installs chromium and runs `npm ci` here; `cargo xtask test` does it too).

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const [url, serverName = 'server', shotArg] = process.argv.slice(2);
if (!url || !/^https?:\/\//.test(url)) {
  console.error('usage: node chat.mjs <server-url> [server-name] [screenshot-dir]');
  process.exit(2);
}
const here = path.dirname(fileURLToPath(import.meta.url));
const shotDir = shotArg || path.join(here, '..', '..', 'target', 'screenshots');
const CHROMIUM = process.env.PARLOR_CHROMIUM || '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const SHOWN_MS = 2000;      // a message typed in one page shows in both within this
const READY_MS = 15000;     // page loaded and its first poll held
const RECONNECT_MS = 20000; // back online: the missed messages show within this

// A fresh, empty directory for the browser profile: playwright-core's launch() creates the
// user-data-dir under the temporary directory, so point that at a new one and remove it after.
const profileRoot = mkdtempSync(path.join(tmpdir(), 'parlor-chromium-'));
process.env.TMPDIR = profileRoot;

const { chromium } = await import('playwright-core');

const failures = [];
const log = (...a) => console.log(`[${serverName}]`, ...a);

function check() {
  if (failures.length) throw new Error(failures.join('\n'));
}

function watch(page, label) {
  page.on('dialog', async (d) => {
    failures.push(`${label}: a ${d.type()} dialog opened: ${JSON.stringify(d.message())}`);
    await d.dismiss().catch(() => {});
  });
  page.on('pageerror', (e) => failures.push(`${label}: page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const t = m.text();
    // Failed fetches while offline (or a missing favicon) are expected; anything else is not,
    // a Content-Security-Policy violation in particular.
    if (/^Failed to load resource/.test(t) || /net::ERR_/.test(t)) return;
    failures.push(`${label}: console error: ${t}`);
  });
}

async function texts(page) {
  return page.$$eval('li.message .text', (els) => els.map((e) => e.textContent));
}

// Waits until a `li.message .text` element's text is exactly `text`.
async function shown(page, label, text, timeout) {
  try {
    await page.waitForFunction(
      (t) => [...document.querySelectorAll('li.message .text')].some((e) => e.textContent === t),
      text,
      { timeout, polling: 25 },
    );
  } catch (e) {
    throw new Error(
      `${label}: ${JSON.stringify(text)} not shown within ${timeout} ms; shown: ${JSON.stringify(await texts(page))}; status: ${await page.textContent('#status')}`,
    );
  }
}

async function ready(page, label) {
  try {
    await page.waitForSelector('#status[data-state="connected"]', { timeout: READY_MS });
  } catch (e) {
    throw new Error(`${label}: never connected; status: ${await page.textContent('#status').catch(() => '?')}`);
  }
}

async function send(page, name, text) {
  await page.fill('#name', name);
  await page.fill('#text', text);
  await page.click('#send');
}

let browser;
let status = 0;
try {
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
  const room = 'browser' + Date.now().toString(36) + Math.floor(Math.random() * 1e6).toString(36);
  const pageUrl = `${url.replace(/\/$/, '')}/?room=${room}`;
  const ctxA = await browser.newContext({ viewport: { width: 760, height: 560 } });
  const ctxB = await browser.newContext({ viewport: { width: 760, height: 560 } });
  const a = await ctxA.newPage();
  const b = await ctxB.newPage();
  watch(a, 'page A');
  watch(b, 'page B');
  log('browser', browser.version(), 'room', room);

  await Promise.all([a.goto(pageUrl), b.goto(pageUrl)]);
  await Promise.all([ready(a, 'page A'), ready(b, 'page B')]);
  const roomShown = await a.textContent('#room');
  if (roomShown !== '#' + room) throw new Error(`page shows room ${roomShown}, expected #${room}`);
  check();

  // 1. Typed in A, shown in both within 2 s.
  const hello = 'hello from A ' + Date.now();
  let t = Date.now();
  await send(a, 'alice', hello);
  await Promise.all([shown(a, 'page A', hello, SHOWN_MS), shown(b, 'page B', hello, SHOWN_MS)]);
  log(`message shown in both pages after ${Date.now() - t} ms`);
  if ((await a.inputValue('#text')) !== '') throw new Error('the message box is not cleared after a send');
  check();

  // 2. Markup is text.
  const payload = '<img src=x onerror=alert(1)>';
  t = Date.now();
  await send(b, 'bob', payload);
  await Promise.all([shown(a, 'page A', payload, SHOWN_MS), shown(b, 'page B', payload, SHOWN_MS)]);
  log(`payload shown as text in both pages after ${Date.now() - t} ms`);
  await a.waitForTimeout(500); // give a would-be onerror handler the time to fire
  for (const [p, label] of [[a, 'page A'], [b, 'page B']]) {
    const imgs = await p.$$eval('#messages img, #messages script', (els) => els.length);
    if (imgs) throw new Error(`${label}: the payload created ${imgs} element(s)`);
  }
  check();

  // 3. Reload: the recent history is shown.
  await b.reload();
  await ready(b, 'page B (reloaded)');
  await shown(b, 'page B (reloaded)', hello, 5000);
  await shown(b, 'page B (reloaded)', payload, 5000);
  const afterReload = await texts(b);
  if (afterReload.filter((x) => x === hello).length !== 1) {
    throw new Error(`after reload each message shows once: ${JSON.stringify(afterReload)}`);
  }
  log('history shown after reload');
  check();

  // 4. Offline, then back. Emulated offline fails new requests but not B's poll already in
  // flight: a first message ends that poll, and B's next poll fails, so B is now cut off.
  await ctxB.setOffline(true);
  const marker = 'B goes offline now';
  await send(a, 'alice', marker);
  await shown(a, 'page A', marker, SHOWN_MS);
  try {
    await b.waitForSelector('#status[data-state="reconnecting"]', { timeout: 10000 });
  } catch (e) {
    throw new Error(`page B offline: status stays ${JSON.stringify(await b.textContent('#status'))}`);
  }
  log(`B offline: status ${JSON.stringify(await b.textContent('#status'))}`);
  const offline = ['sent while B was offline 1', 'sent while B was offline 2'];
  for (const m of offline) {
    await send(a, 'alice', m);
    await shown(a, 'page A', m, SHOWN_MS);
  }
  await b.waitForTimeout(1000);
  const whileOffline = await texts(b);
  const leaked = offline.filter((m) => whileOffline.includes(m));
  if (leaked.length) throw new Error(`page B shows ${JSON.stringify(leaked)} while offline`);
  t = Date.now();
  await ctxB.setOffline(false);
  for (const m of offline) await shown(b, 'page B (back online)', m, RECONNECT_MS);
  log(`missed messages shown ${Date.now() - t} ms after going back online`);
  await b.waitForSelector('#status[data-state="connected"]', { timeout: RECONNECT_MS });
  const final = await texts(b);
  for (const m of [hello, payload, marker, ...offline]) {
    if (final.filter((x) => x === m).length !== 1) {
      throw new Error(`page B shows ${JSON.stringify(m)} ${final.filter((x) => x === m).length} times: ${JSON.stringify(final)}`);
    }
  }
  check();

  // 5. A picture for a person.
  mkdirSync(shotDir, { recursive: true });
  const shot = path.join(shotDir, `chat-${serverName}.png`);
  await a.screenshot({ path: shot });
  log('screenshot', shot);
  check();
  log('ok');
} catch (e) {
  console.error(`[${serverName}] FAIL: ${e && e.message ? e.message : e}`);
  status = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  rmSync(profileRoot, { recursive: true, force: true });
}
process.exit(status);
