// A third-party Server-Sent Events client against Parlor: the `eventsource` npm package.
//
//   node tests/browser/eventsource.mjs <server-url>
//
// Run by tests/tests/sse.rs against a server started with a short --sse-max-age, so the stream
// is ended by the server several times while messages are published; the client reconnects on
// its own with Last-Event-ID. Checks:
//   1. the `ready` event carries the room's cursor, and `retry` is honoured (reconnects happen);
//   2. every message published (text and JSON forms) arrives exactly once, in order, across the
//      reconnects (no gap, no duplicate), with its id equal to the cursor the publish returned;
//   3. a text with line breaks arrives with them (LF), and JSON events parse to the batch object.
// Prints `eventsource: ok` and exits 0 on success; exits 1 with the reason on failure.

import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const EventSource = require('eventsource');

const base = process.argv[2];
if (!base) {
  console.error('usage: node eventsource.mjs <server-url>');
  process.exit(2);
}
const room = `es${process.pid}`;
const TOTAL = 30;

function fail(why) {
  console.error(`eventsource: ${why}`);
  process.exit(1);
}

const timer = setTimeout(() => fail('did not finish within 60 s'), 60_000);

async function publish(text) {
  const r = await fetch(`${base}/publish?room=${room}`, {
    method: 'POST',
    headers: { 'Content-Type': 'text/plain; charset=utf-8' },
    body: text,
  });
  if (r.status !== 200) fail(`publish answered ${r.status}`);
  return r.headers.get('parlor-cursor');
}

function listen(format) {
  const url = `${base}/events?room=${room}${format === 'json' ? '&format=json' : ''}`;
  const es = new EventSource(url);
  const got = [];
  let readies = 0;
  let readyCursor = null;
  es.addEventListener('ready', (e) => {
    readies += 1;
    readyCursor = e.data;
  });
  es.addEventListener('gap', (e) => fail(`${format}: unexpected gap ${e.data}`));
  es.addEventListener('reset', () => fail(`${format}: unexpected reset`));
  es.onmessage = (e) => {
    let text = e.data;
    if (format === 'json') {
      const m = JSON.parse(e.data);
      if (m.cursor !== e.lastEventId) fail(`json cursor ${m.cursor} != id ${e.lastEventId}`);
      if (typeof m.time !== 'number') fail('json event without time');
      text = m.text;
    }
    got.push({ id: e.lastEventId, text });
  };
  const opened = new Promise((resolve) => {
    es.addEventListener('ready', () => resolve(), { once: true });
  });
  return { es, got, opened, readies: () => readies, readyCursor: () => readyCursor };
}

const text = listen('text');
const json = listen('json');
await Promise.all([text.opened, json.opened]);
if (!/^[0-9a-z]+-0$/.test(text.readyCursor())) fail(`ready cursor ${text.readyCursor()}`);

const sent = [];
for (let i = 0; i < TOTAL; i++) {
  const body = i % 7 === 3 ? `line ${i}\nnext line` : `message ${i}`;
  sent.push({ id: await publish(body), text: body });
  // Spread the publishes over several stream lifetimes (--sse-max-age 1s).
  await new Promise((r) => setTimeout(r, 100));
}

async function settle(l, name) {
  const deadline = Date.now() + 20_000;
  while (l.got.length < sent.length && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
  }
  // A little longer, so a duplicate replayed after the last message would be seen.
  await new Promise((r) => setTimeout(r, 300));
  const want = JSON.stringify(sent);
  const have = JSON.stringify(l.got);
  if (want !== have) fail(`${name}: received\n${have}\nexpected\n${want}`);
  if (l.readies() < 2) fail(`${name}: the stream was never ended and resumed (${l.readies()} ready)`);
  l.es.close();
}

await settle(text, 'text');
await settle(json, 'json');
clearTimeout(timer);
console.log(`eventsource: ok (${sent.length} messages, ${text.readies()} and ${json.readies()} connections)`);
