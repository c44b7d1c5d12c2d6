// Parlor chat page: long-polls /subscribe (JSON batch form) and posts to /publish.
// Every message is rendered as text (textContent), never as HTML.
(function () {
  'use strict';

  const BASE_MS = 500;        // backoff base
  const CAP_MS = 15000;       // backoff cap
  const HANG_MS = 60000;      // abort a poll held longer than this
  const HELD_MS = 1000;       // a poll still open after this is being held: we are connected
  const MAX_ITEMS = 500;      // list items kept in the DOM
  const MAX_SEEN = 2000;      // cursors remembered for de-duplication
  const NAME_KEY = 'parlor.name';

  const $ = (id) => document.getElementById(id);
  const list = $('messages');
  const form = $('composer');
  const nameBox = $('name');
  const textBox = $('text');
  const sendBtn = $('send');
  const statusEl = $('status');
  const errorEl = $('error');

  const room = (() => {
    const r = new URLSearchParams(location.search).get('room');
    return r && /^[A-Za-z0-9_-]{1,64}$/.test(r) ? r : 'main';
  })();
  $('room').textContent = '#' + room;
  document.title = '#' + room + ' · Parlor';

  // ---- helpers ----

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  const pad = (n) => String(n).padStart(2, '0');

  function delay(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  // Retry-After: delta-seconds or an HTTP date; returns ms or null.
  function parseRetryAfter(v) {
    if (!v || !v.trim()) return null;
    const s = Number(v.trim());
    if (Number.isFinite(s) && s >= 0) return Math.min(s, 3600) * 1000;
    const t = Date.parse(v);
    return Number.isNaN(t) ? null : Math.max(0, Math.min(t - Date.now(), 3600e3));
  }

  function setStatus(state, text) {
    if (statusEl.dataset.state !== state) statusEl.dataset.state = state;
    if (statusEl.textContent !== text) statusEl.textContent = text;
  }

  function showError(msg) {
    errorEl.textContent = msg || '';
    errorEl.hidden = !msg;
  }

  function loadName() {
    try { return localStorage.getItem(NAME_KEY) || ''; } catch (e) { return ''; }
  }

  function saveName(v) {
    try { localStorage.setItem(NAME_KEY, v); } catch (e) { /* storage unavailable */ }
  }

  // A name must not contain ": " (that is the name/body separator) nor line breaks.
  function cleanName(v) {
    return v.replace(/:(?=\s|$)/g, '').replace(/\s+/g, ' ').trim().slice(0, 32);
  }

  function newId() {
    const c = window.crypto;
    if (c && typeof c.randomUUID === 'function') {
      try { return c.randomUUID(); } catch (e) { /* insecure context */ }
    }
    const b = new Uint8Array(16);
    if (c && typeof c.getRandomValues === 'function') c.getRandomValues(b);
    else for (let i = 0; i < b.length; i++) b[i] = Math.floor(Math.random() * 256);
    return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  }

  // ---- rendering ----

  const seen = new Set();

  function remember(cursor) {
    seen.add(cursor);
    if (seen.size > MAX_SEEN) seen.delete(seen.values().next().value);
  }

  function colorClass(name) {
    let h = 0;
    for (const ch of name) h = (h * 31 + ch.codePointAt(0)) >>> 0;
    return 'c' + (h % 8);
  }

  function messageItem(m, cursor) {
    const text = m.text;
    const li = el('li', 'message');
    li.dataset.cursor = cursor;

    const time = el('time', 'time');
    const d = new Date(Number(m.time));
    if (!Number.isNaN(d.getTime())) {
      time.textContent = pad(d.getHours()) + ':' + pad(d.getMinutes());
      time.dateTime = d.toISOString();
      time.title = d.toLocaleString();
    }

    const i = text.indexOf(': ');
    const who = i > 0 ? text.slice(0, i) : '';
    const name = el('span', 'name', who);
    if (who) {
      name.classList.add(colorClass(who));
      if (who === cleanName(nameBox.value)) li.classList.add('mine');
    }
    li.append(time, name, el('span', 'text', i > 0 ? text.slice(i + 2) : text));
    return li;
  }

  function nearBottom() {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  }

  function append(nodes, forceScroll) {
    if (!nodes.length) return;
    const stick = forceScroll || nearBottom();
    const frag = document.createDocumentFragment();
    frag.append(...nodes);
    list.append(frag);
    while (list.childElementCount > MAX_ITEMS) list.firstElementChild.remove();
    if (stick) list.scrollTop = list.scrollHeight;
  }

  function handleBatch(data, forceScroll) {
    const nodes = [];
    const gap = Number(data.gap) || 0;
    if (gap > 0) {
      nodes.push(el('li', 'system', gap === 1 ? '1 message was missed' : gap + ' messages were missed'));
    }
    for (const m of Array.isArray(data.messages) ? data.messages : []) {
      if (!m || m.cursor == null || typeof m.text !== 'string') continue;
      const cursor = String(m.cursor);
      if (seen.has(cursor)) continue;
      remember(cursor);
      nodes.push(messageItem(m, cursor));
    }
    append(nodes, forceScroll);
  }

  // ---- long-poll loop ----

  let since = '0';
  let failures = 0;
  let firstBatch = true;

  // One poll. Resolves to {ok: true} or {ok: false, retryAfter: ms|null}.
  async function pollOnce() {
    const ctrl = new AbortController();
    const hang = setTimeout(() => ctrl.abort(), HANG_MS);
    const held = setTimeout(() => setStatus('connected', 'connected'), HELD_MS);
    try {
      const url = '/subscribe?room=' + encodeURIComponent(room) +
        '&since=' + encodeURIComponent(since) + '&format=json';
      const res = await fetch(url, {
        headers: { Accept: 'application/json' },
        cache: 'no-store',
        signal: ctrl.signal,
      });
      if (res.status === 200) {
        const data = await res.json();
        handleBatch(data, firstBatch);
        firstBatch = false;
        since = String(data.next || res.headers.get('Parlor-Cursor') || since);
        return { ok: true };
      }
      if (res.status === 204) {
        since = res.headers.get('Parlor-Cursor') || since;
        return { ok: true };
      }
      if (res.status === 400 && since !== '0') {
        // Cursor rejected (e.g. the server restarted): start over from the room's history.
        since = '0';
        return { ok: true };
      }
      return { ok: false, retryAfter: parseRetryAfter(res.headers.get('Retry-After')) };
    } catch (err) {
      return { ok: false, retryAfter: null };
    } finally {
      clearTimeout(hang);
      clearTimeout(held);
    }
  }

  // Waits ms, showing a countdown; wakes early when the browser comes back online.
  function backoffWait(ms) {
    return new Promise((resolve) => {
      const end = Date.now() + ms;
      let timer = 0;
      const done = () => {
        clearTimeout(timer);
        window.removeEventListener('online', done);
        resolve();
      };
      const tick = () => {
        const left = end - Date.now();
        if (left <= 0) { done(); return; }
        setStatus('reconnecting', navigator.onLine === false
          ? 'offline'
          : 'reconnecting in ' + Math.ceil(left / 1000) + 's');
        timer = setTimeout(tick, ((left - 1) % 1000) + 1);
      };
      window.addEventListener('online', done);
      tick();
    });
  }

  async function pollLoop() {
    setStatus('connecting', 'connecting');
    for (;;) {
      const r = await pollOnce();
      if (r.ok) {
        failures = 0;
        setStatus('connected', 'connected');
        continue;
      }
      failures++;
      // Exponential backoff with full jitter, never sooner than Retry-After.
      const ceiling = Math.min(CAP_MS, BASE_MS * 2 ** Math.min(failures - 1, 20));
      let wait = Math.random() * ceiling;
      if (r.retryAfter != null) wait = Math.max(wait, r.retryAfter);
      await backoffWait(wait);
      setStatus('reconnecting', navigator.onLine === false ? 'offline' : 'reconnecting…');
    }
  }

  // ---- publishing ----

  let pending = null;   // {message, id}: kept until success so a retry reuses the id
  let sending = false;

  async function send() {
    if (sending) return;
    const text = textBox.value.trim();
    if (!text) { textBox.focus(); return; }
    const name = cleanName(nameBox.value) || 'anon';
    const message = name + ': ' + text;
    if (!pending || pending.message !== message) pending = { message, id: newId() };
    const body = JSON.stringify({ message, id: pending.id });

    sending = true;
    sendBtn.disabled = true;
    showError('');
    try {
      for (let attempt = 0; ; attempt++) {
        let res;
        try {
          res = await fetch('/publish?room=' + encodeURIComponent(room), {
            method: 'POST',
            headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
            body,
            cache: 'no-store',
          });
        } catch (err) {
          if (attempt < 2) { await delay(BASE_MS * 2 ** attempt * (0.5 + Math.random())); continue; }
          showError('Could not reach the server. Press Send to try again.');
          return;
        }
        if (res.ok) {
          pending = null;
          if (textBox.value.trim() === text) textBox.value = '';
          textBox.focus();
          return;
        }
        let reason = '';
        try { reason = (await res.text()).trim().slice(0, 200); } catch (e) { /* no body */ }
        if (!reason) reason = 'error ' + res.status;
        const ra = parseRetryAfter(res.headers.get('Retry-After'));
        if (res.status === 429 && ra != null) reason += ' (try again in ' + Math.ceil(ra / 1000) + 's)';
        showError(reason);
        return;
      }
    } finally {
      sending = false;
      sendBtn.disabled = false;
    }
  }

  // ---- wiring ----

  nameBox.value = loadName();
  nameBox.addEventListener('input', () => saveName(nameBox.value));
  textBox.addEventListener('input', () => { if (!errorEl.hidden) showError(''); });
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    send();
  });

  pollLoop();
})();
