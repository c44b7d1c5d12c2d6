// The chat page in a real browser: headless Debian Chromium driven by playwright-core.
//
//   node tests/browser/chat.mjs <server-url> [server-name] [screenshot-dir]
//
// First, ten tabs (pages of one browser context) in one room: they elect one leader, which alone
// holds the room's connection and hands what it gets to the others:
//   T1. each tab loads within a second (before, the 7th waited behind six held polls);
//   T2. a message published over HTTP, and one typed into the tenth tab, reach all ten within a
//       second; the server holds one poll however many tabs are open (/metrics);
//   T3. closing the leader (found from the page's state): another tab takes over, the next
//       message reaches every remaining tab, and no tab shows any message twice; the same when
//       the leader is frozen (Page Lifecycle), and the frozen tab catches up once resumed;
//   T4. two tabs of a second room work beside them, with one poll of their own;
//   T5. without BroadcastChannel each tab connects on its own and shows the history once;
//   T6. a tab whose 'hello' the leader leaves unanswered loads the history itself.
// Then the transports (S1-S4, see `transports` below), then two pages in one room (separate browser contexts, so one can go offline alone):
//   1. a message typed in one page appears in both within 2 s;
//   2. `<img src=x onerror=alert(1)>` is shown as literal text, no element is created and no
//      dialog opens (any dialog fails the test);
//   3. a reload shows the room's recent history;
//   4. messages sent while one page is offline appear there once it is back online;
//   5. the server restarts under the pages (killed, then started again on the same address:
//      PARLOR_SERVER_BIN and PARLOR_SERVER_PID name it; tests/tests/browser.rs sets both): the
//      next message shows after the divider "earlier messages may be missing: the server
//      restarted", in a page and in a follower tab of its browser (the flag travels with the
//      leader's batch);
//   6. a screenshot of the page is written to <screenshot-dir>/chat-<server-name>.png
//      (default: target/screenshots in the workspace).
// Page errors, CSP violations and other console errors (an error status, such as a 404 for
// /favicon.ico, included) fail the test too.
// Exit status 0 on success, 1 on failure (with the reason on stderr), 2 on bad usage.
// Set up with `cargo xtask setup` (installs chromium and runs `npm ci` here; `cargo xtask test` does it too).

import { spawn } from 'node:child_process';
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
const TABS = 10;            // tabs of one browser context in one room
const TAB_MS = 1000;        // a tab loads, and a message reaches every tab, within this
const TAKEOVER_MS = 5000;   // the leader closed: the next message reaches every other tab within this

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
    // Failed fetches while offline or aborted are expected; anything else is not: an error
    // status (a missing favicon) or a Content-Security-Policy violation in particular.
    if (/^Failed to load resource: net::ERR_/.test(t)) return;
    failures.push(`${label}: console error: ${t} (${m.location().url || 'no url'})`);
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

const role = (page) => page.evaluate(() => document.body.dataset.role || '');

// Publishes as curl would, returning once the server has answered.
async function publish(base, room, message) {
  const res = await fetch(`${base}/publish?room=${room}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ message }),
  });
  if (!res.ok) throw new Error(`publish ${JSON.stringify(message)}: ${res.status} ${await res.text()}`);
}

async function metric(base, name) {
  const text = await (await fetch(`${base}/metrics`)).text();
  const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(text);
  if (!m) throw new Error(`/metrics has no ${name}:\n${text}`);
  return Number(m[1]);
}

// The room connections the server holds: long-polls and event streams (whichever transport
// the pages use).
async function heldPolls(base) {
  return (await metric(base, 'parlor_held_polls')) + (await metric(base, 'parlor_sse_streams'));
}

// Waits until the server holds exactly `n` room connections (polls or streams); fails at once if
// it ever holds more (one can be briefly absent between two polls, never in excess).
async function expectHeld(base, n, why) {
  const end = Date.now() + 5000;
  let held;
  for (;;) {
    held = await heldPolls(base);
    if (held > n) throw new Error(`${why}: the server holds ${held} polls, expected ${n}`);
    if (held === n) return;
    if (Date.now() > end) throw new Error(`${why}: the server holds ${held} polls, expected ${n}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// Every message in `texts` shows exactly once in every page.
async function onceEach(pages, messages) {
  for (const [p, label] of pages) {
    const all = await texts(p);
    for (const m of messages) {
      const n = all.filter((x) => x === m).length;
      if (n !== 1) throw new Error(`${label} shows ${JSON.stringify(m)} ${n} times: ${JSON.stringify(all)}`);
    }
  }
}

// Runs in a page: records when each message is first shown (window.shownAt[text] = ms since the
// epoch), so a delivery time is measured in the page rather than by the test's polling, which is
// slow on a busy machine.
function stampArrivals() {
  window.shownAt = {};
  new MutationObserver((records) => {
    const now = Date.now();
    for (const r of records) {
      for (const n of r.addedNodes) {
        const e = n.querySelector && n.querySelector('.text');
        if (e && !(e.textContent in window.shownAt)) window.shownAt[e.textContent] = now;
      }
    }
  }).observe(document.getElementById('messages'), { childList: true });
}

// Waits until every page shows `text`, then checks that each showed it within TAB_MS of `since`.
async function reachedAll(pages, text, since) {
  await Promise.all(pages.map(([p, label]) => shown(p, label, text, TAKEOVER_MS)));
  const at = await Promise.all(pages.map(([p]) => p.evaluate((x) => window.shownAt[x], text)));
  const late = at.map((x, i) => [pages[i][1], x - since]).filter(([, ms]) => !(ms <= TAB_MS));
  if (late.length) throw new Error(`${JSON.stringify(text)} shown after more than ${TAB_MS} ms: ${JSON.stringify(late)}`);
  return Math.max(...at) - since;
}

// The transport ladder: two pages forced onto each transport (`/?transport=sse`, `?transport=poll`)
//   S1. each page names its transport in the indicator (and data-transport);
//   S2. a message typed in one page reaches the other, and markup in it is shown as text;
//   S3. SSE only: the server ends the streams (chat.mjs runs against --sse-max-age 3s); the
//       pages reconnect by themselves, and what was published meanwhile shows once, no gap;
//   S4. every message shows exactly once in both pages.
async function transports(browser, base) {
  for (const [transport, label] of [['sse', 'SSE'], ['poll', 'long-poll']]) {
    const room = `${transport}${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
    const pages = [];
    for (const name of ['X', 'Y']) {
      // Separate contexts: each page holds its own connection.
      const ctx = await browser.newContext({ viewport: { width: 760, height: 560 } });
      const p = await ctx.newPage();
      const pl = `${label} page ${name}`;
      watch(p, pl);
      await p.goto(`${base}/?room=${room}&transport=${transport}`);
      await ready(p, pl);
      const shownTransport = await p.evaluate(() => document.body.dataset.transport);
      if (shownTransport !== transport) throw new Error(`${pl}: transport ${shownTransport}, expected ${transport}`);
      const status = await p.textContent('#status');
      if (!status.includes(label)) throw new Error(`${pl}: the indicator ${JSON.stringify(status)} does not name ${label}`);
      pages.push([p, pl]);
    }
    const [[x, xl], [y, yl]] = pages;
    const sent = [];
    const hi = `over ${label} ${Date.now()}`;
    await send(x, 'xavier', hi);
    await shown(y, yl, hi, SHOWN_MS);
    sent.push(hi);
    const markup = `<b onmouseover=alert(1)>${label}</b>`;
    await send(y, 'yvonne', markup);
    await shown(x, xl, markup, SHOWN_MS);
    sent.push(markup);
    for (const [p, pl] of pages) {
      const n = await p.$$eval('#messages b, #messages img, #messages script', (els) => els.length);
      if (n) throw new Error(`${pl}: markup created ${n} element(s)`);
    }
    log(`${label}: a message typed in one page reached the other; markup shown as text`);
    if (transport === 'sse') {
      const streams = () => Promise.all(pages.map(([p]) => p.evaluate(() => Number(document.body.dataset.streams || 0))));
      const before = await streams();
      // Publish across the server's cut (--sse-max-age 3s): some land while a page reconnects.
      for (let i = 0; i < 10; i++) {
        const m = `across the cut ${i} ${Date.now()}`;
        await publish(base, room, m);
        sent.push(m);
        await x.waitForTimeout(400);
      }
      for (const [p, pl] of pages) for (const m of sent) await shown(p, pl, m, RECONNECT_MS);
      const after = await streams();
      if (!after.every((n, i) => n > before[i])) {
        throw new Error(`the server never cut the streams: ready events ${JSON.stringify(before)} then ${JSON.stringify(after)}`);
      }
      for (const [p, pl] of pages) {
        const missed = await p.$$eval('li.system', (els) => els.map((e) => e.textContent));
        if (missed.length) throw new Error(`${pl}: gap shown across a clean reconnect: ${JSON.stringify(missed)}`);
      }
      log(`SSE: streams ended by the server and resumed (${JSON.stringify(before)} → ${JSON.stringify(after)} streams), nothing missed`);
    }
    await onceEach(pages, sent);
    check();
    for (const [p] of pages) await p.context().close();
  }
}

// T1-T4: many tabs of one browser share one connection per room.
async function tabs(browser, base) {
  const room = 'tabs' + Date.now().toString(36) + Math.floor(Math.random() * 1e6).toString(36);
  const ctx = await browser.newContext({ viewport: { width: 760, height: 560 } });
  const pages = [];
  const loads = [];
  for (let i = 1; i <= TABS; i++) {
    const p = await ctx.newPage();
    const label = `tab ${i}`;
    watch(p, label);
    const t = Date.now();
    const timeout = i === 1 ? READY_MS : TAB_MS;
    try {
      await p.goto(`${base}/?room=${room}`, { timeout });
      await p.waitForFunction(() => document.body.dataset.role, null, { timeout, polling: 10 });
    } catch (e) {
      throw new Error(`${label}: not loaded, or no data-role on its body, within ${timeout} ms (${e.message.split('\n')[0]})`);
    }
    loads.push(Date.now() - t);
    pages.push([p, label]);
  }
  // The first tab also starts the renderer, so it alone may take longer.
  for (let i = 1; i < TABS; i++) {
    if (loads[i] > TAB_MS) throw new Error(`tab ${i + 1}: loaded in ${loads[i]} ms, more than ${TAB_MS} ms`);
  }
  await Promise.all(pages.map(([p, label]) => ready(p, label)));
  const roles = await Promise.all(pages.map(([p]) => role(p)));
  if (roles.filter((r) => r === 'leader').length !== 1 || roles.filter((r) => r === 'follower').length !== TABS - 1) {
    throw new Error(`expected one leader and ${TABS - 1} followers: ${JSON.stringify(roles)}`);
  }
  const leaderStatus = await pages[roles.indexOf('leader')][0].textContent('#status');
  const followerStatus = await pages[roles.indexOf('follower')][0].textContent('#status');
  log(`${TABS} tabs loaded in ${loads.join(', ')} ms; leader says ${JSON.stringify(leaderStatus)}, followers ${JSON.stringify(followerStatus)}`);
  if (leaderStatus === followerStatus) throw new Error('the indicator does not tell the leader from a follower');
  await expectHeld(base, 1, `${TABS} tabs in one room`);
  check();

  const curl = 'published over HTTP ' + Date.now();
  await Promise.all(pages.map(([p]) => p.evaluate(stampArrivals)));
  let t = Date.now();
  await publish(base, room, curl);
  log(`a published message reached all ${TABS} tabs after ${await reachedAll(pages, curl, t)} ms`);

  const typed = 'typed in the last tab ' + Date.now();
  const [last, lastLabel] = pages[TABS - 1];
  await last.fill('#name', 'tenth');
  await last.fill('#text', typed);
  t = Date.now();
  await last.click('#send');
  log(`a message typed in ${lastLabel} reached all ${TABS} tabs after ${await reachedAll(pages, typed, t)} ms`);
  await expectHeld(base, 1, 'after two messages');
  check();

  // T3. Close the leader; publish at once, before anyone has taken over.
  const i = roles.indexOf('leader');
  const [leader, leaderLabel] = pages[i];
  pages.splice(i, 1);
  await leader.close();
  const after = 'after the leader left ' + Date.now();
  t = Date.now();
  await publish(base, room, after);
  await Promise.all(pages.map(([p, label]) => shown(p, label, after, TAKEOVER_MS)));
  log(`${leaderLabel} (the leader) closed: the next message reached the other ${pages.length} tabs after ${Date.now() - t} ms`);
  const newRoles = await Promise.all(pages.map(([p]) => role(p)));
  if (newRoles.filter((r) => r === 'leader').length !== 1) {
    throw new Error(`after the leader closed, expected one new leader: ${JSON.stringify(newRoles)}`);
  }
  const more = 'and one more ' + Date.now();
  await publish(base, room, more);
  await Promise.all(pages.map(([p, label]) => shown(p, label, more, TAB_MS)));
  await onceEach(pages, [curl, typed, after, more]);
  await expectHeld(base, 1, 'after the leader closed');
  check();

  // T3, frozen: the new leader gets the Page Lifecycle 'freeze' event (as a browser sends to a
  // background tab it freezes; headless Chromium ignores Page.setWebLifecycleState for a visible
  // page, so the test sends the event itself). Another tab takes over, and the frozen one, on
  // 'resume', catches up from the others.
  const j = newRoles.indexOf('leader');
  const [frozen, frozenLabel] = pages[j];
  const awake = pages.filter((_, k) => k !== j);
  await frozen.evaluate(() => document.dispatchEvent(new Event('freeze')));
  const cold = 'while a leader was frozen ' + Date.now();
  t = Date.now();
  await publish(base, room, cold);
  await Promise.all(awake.map(([p, label]) => shown(p, label, cold, TAKEOVER_MS)));
  log(`${frozenLabel} (the leader) frozen: the next message reached the other ${awake.length} tabs after ${Date.now() - t} ms`);
  await frozen.evaluate(() => document.dispatchEvent(new Event('resume')));
  await shown(frozen, `${frozenLabel} (resumed)`, cold, TAKEOVER_MS);
  const leaders = (await Promise.all(pages.map(([p]) => role(p)))).filter((r) => r === 'leader');
  if (leaders.length !== 1) throw new Error(`after a freeze and resume, ${leaders.length} leaders`);
  await onceEach(pages, [curl, typed, after, more, cold]);
  await expectHeld(base, 1, 'after a leader was frozen and resumed');
  check();

  // T4. A second room beside the first: its own leader, its own poll, its own messages.
  const room2 = room + 'b';
  const others = [];
  for (const label of ['room 2 tab 1', 'room 2 tab 2']) {
    const p = await ctx.newPage();
    watch(p, label);
    await p.goto(`${base}/?room=${room2}`);
    await ready(p, label);
    others.push([p, label]);
  }
  const roles2 = await Promise.all(others.map(([p]) => role(p)));
  if (roles2.join() !== 'leader,follower') throw new Error(`room 2 roles: ${JSON.stringify(roles2)}`);
  await expectHeld(base, 2, 'two rooms');
  const second = 'in room 2 ' + Date.now();
  await send(others[1][0], 'bob', second);
  await Promise.all(others.map(([p, label]) => shown(p, label, second, TAB_MS)));
  const first = 'in room 1 ' + Date.now();
  await publish(base, room, first);
  await Promise.all(pages.map(([p, label]) => shown(p, label, first, TAB_MS)));
  await onceEach(others, [second]);
  for (const [p, label] of [...pages, ...others]) {
    const all = await texts(p);
    const stray = all.filter((x) => x === (others.some(([q]) => q === p) ? first : second));
    if (stray.length) throw new Error(`${label} shows another room's message: ${JSON.stringify(stray)}`);
  }
  log('two rooms side by side: one poll each');
  check();
  await ctx.close();

  // T5. A browser without BroadcastChannel: each tab connects on its own, as before.
  const old = await browser.newContext({ viewport: { width: 760, height: 560 } });
  await old.addInitScript(() => { delete window.BroadcastChannel; });
  const solo = [];
  for (const label of ['solo tab 1', 'solo tab 2']) {
    const p = await old.newPage();
    watch(p, label);
    await p.goto(`${base}/?room=${room}`);
    await ready(p, label);
    solo.push([p, label]);
  }
  const soloRoles = await Promise.all(solo.map(([p]) => role(p)));
  if (soloRoles.join() !== 'solo,solo') throw new Error(`without BroadcastChannel: roles ${JSON.stringify(soloRoles)}`);
  const alone = 'each tab on its own ' + Date.now();
  await send(solo[0][0], 'carol', alone);
  await Promise.all(solo.map(([p, label]) => shown(p, label, alone, SHOWN_MS)));
  await onceEach(solo, [curl, typed, after, more, cold, first, alone]);
  log('without BroadcastChannel each tab connects on its own');
  check();
  await old.close();

  // T6. A leader that does not answer a new tab's 'hello' (hung): the new tab loads the room's
  // history itself, and later messages still come through the leader.
  const hung = await browser.newContext({ viewport: { width: 760, height: 560 } });
  const quiet = await hung.newPage();
  watch(quiet, 'mute leader');
  await quiet.goto(`${base}/?room=${room}`);
  await ready(quiet, 'mute leader');
  if ((await role(quiet)) !== 'leader') throw new Error('the first tab of a context does not lead');
  await quiet.evaluate(() => {
    const post = BroadcastChannel.prototype.postMessage;
    BroadcastChannel.prototype.postMessage = function (m) { if (m.t !== 'history') post.call(this, m); };
  });
  const late = await hung.newPage();
  watch(late, 'new tab');
  await late.goto(`${base}/?room=${room}`);
  await shown(late, 'new tab (unanswered)', alone, TAKEOVER_MS);
  const later = 'after the history ' + Date.now();
  await publish(base, room, later);
  await shown(late, 'new tab (unanswered)', later, TAKEOVER_MS);
  await onceEach([[late, 'new tab (unanswered)']], [curl, typed, after, more, cold, first, alone, later]);
  if ((await role(late)) !== 'follower') throw new Error(`the new tab is ${await role(late)}, not a follower`);
  log('a tab the leader does not answer loads the history itself');
  check();
  await hung.close();
}

// The server started again by step 5, stopped at exit.
let restarted = null;

// Kills the server (as a crash would: no goodbye answers) and starts the same binary on the same
// address, retrying while the address is still taken. Resolves once it listens.
async function restartServer(base) {
  const bin = process.env.PARLOR_SERVER_BIN;
  const pid = Number(process.env.PARLOR_SERVER_PID);
  process.kill(pid, 'SIGKILL');
  const listen = new URL(base).host;
  for (let attempt = 0; attempt < 50; attempt++) {
    const child = spawn(bin, ['--listen', listen], { stdio: ['ignore', 'pipe', 'pipe'] });
    const up = await new Promise((resolve) => {
      let out = '';
      child.stdout.on('data', (d) => {
        out += d;
        if (out.includes('listening on')) resolve(true);
      });
      child.on('exit', () => resolve(false));
    });
    if (up) {
      restarted = child;
      return;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`could not start ${bin} on ${listen} again`);
}

let browser;
let status = 0;
try {
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
  const base = url.replace(/\/$/, '');
  await tabs(browser, base);
  await transports(browser, base);

  const room = 'browser' + Date.now().toString(36) + Math.floor(Math.random() * 1e6).toString(36);
  const pageUrl = `${base}/?room=${room}`;
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
  // The box is cleared when the publish is answered, which may come after the message itself
  // arrived over the stream: wait for it, a bounded time.
  await a
    .waitForFunction(() => document.querySelector('#text').value === '', null, { timeout: SHOWN_MS, polling: 20 })
    .catch(() => { throw new Error('the message box is not cleared after a send'); });
  await a.hover('li.message time');
  const when = await a.getAttribute('li.message time', 'title');
  if (!when) throw new Error("hovering a message's time shows no full date");
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

  // 5. The server restarts under the pages: the divider, then the next message.
  if (process.env.PARLOR_SERVER_BIN && process.env.PARLOR_SERVER_PID) {
    const follower = await ctxA.newPage();
    watch(follower, 'page A2');
    await follower.goto(pageUrl);
    await ready(follower, 'page A2');
    if ((await role(follower)) !== 'follower') throw new Error(`page A2 is ${await role(follower)}, not a follower`);
    await restartServer(base);
    t = Date.now();
    const fresh = 'after the restart ' + Date.now();
    await publish(base, room, fresh);
    const divider = 'earlier messages may be missing: the server restarted';
    for (const [p, label] of [[a, 'page A'], [follower, 'page A2 (follower)'], [b, 'page B']]) {
      await shown(p, label, fresh, RECONNECT_MS);
      const items = await p.$$eval('#messages li', (els) => els.map((e) => e.textContent));
      const at = items.indexOf(divider);
      const msg = items.findIndex((x) => x.includes(fresh));
      if (at < 0 || at > msg || items.filter((x) => x === divider).length !== 1) {
        throw new Error(`${label}: expected one divider ${JSON.stringify(divider)} before ${JSON.stringify(fresh)}: ${JSON.stringify(items.slice(-5))}`);
      }
    }
    log(`server restarted: the divider and the next message shown ${Date.now() - t} ms after the publish`);
    check();
  } else {
    log('restart step skipped: PARLOR_SERVER_BIN and PARLOR_SERVER_PID not set');
  }

  // 6. A picture for a person.
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
  if (restarted) restarted.kill('SIGKILL');
  rmSync(profileRoot, { recursive: true, force: true });
}
process.exit(status);
