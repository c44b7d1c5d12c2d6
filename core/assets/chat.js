// Parlor chat page: listens on /events (Server-Sent Events, JSON events) where the browser has
// EventSource, else long-polls /subscribe (JSON batch form); posts to /publish.
// Every message is rendered as text (textContent), never as HTML.
(function () {
  'use strict';

  const BASE_MS = 500;        // backoff base
  const CAP_MS = 15000;       // backoff cap
  const HANG_MS = 60000;      // abort a poll held longer than this
  const HELD_MS = 1000;       // a poll still open after this is being held: we are connected
  const MAX_ITEMS = 500;      // list items kept in the DOM
  const MAX_SEEN = 2000;      // cursors remembered for de-duplication
  const HISTORY_MS = 1500;    // a follower whose 'hello' is not answered this long loads history itself
  const SSE_GIVE_UP = 3;      // event streams in a row that fail before 'ready': fall back to polling
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

  let since = '0';      // the newest cursor this tab has seen: where a connection resumes
  let scrolled = false; // the first messages scroll to the bottom
  const recent = [];    // the messages shown, for a tab that joins (see 'hello' below)

  // Renders one batch {messages, gap, reset, next}, from this tab's connection or from the
  // leader's. `reset`: the cursor was from before a restart, so what came after it is unknown.
  function handleBatch(data) {
    const nodes = [];
    if (data.reset === true) {
      nodes.push(el('li', 'system reset', 'earlier messages may be missing: the server restarted'));
    }
    const gap = Number(data.gap) || 0;
    if (gap > 0) {
      nodes.push(el('li', 'system', gap === 1 ? '1 message was missed' : gap + ' messages were missed'));
    }
    for (const m of Array.isArray(data.messages) ? data.messages : []) {
      if (!m || m.cursor == null || typeof m.text !== 'string') continue;
      const cursor = String(m.cursor);
      if (seen.has(cursor)) continue;
      remember(cursor);
      recent.push({ cursor, time: m.time, text: m.text });
      nodes.push(messageItem(m, cursor));
    }
    if (recent.length > MAX_ITEMS) recent.splice(0, recent.length - MAX_ITEMS);
    if (typeof data.next === 'string' && data.next) since = data.next;
    append(nodes, !scrolled);
    if (nodes.length) scrolled = true;
  }

  // ---- the connection: one function, so another transport can take its place ----

  // longPoll(getCursor, onBatch, onState) holds the room's connection until the returned stop()
  // is called. It polls from getCursor() (the newest cursor this tab knows), hands every answer
  // to onBatch({messages, gap, next}) (an answer without messages still moves the cursor), and
  // reports onState(state, text), state being 'connecting', 'connected' or 'reconnecting'.
  // It retries with jittered exponential backoff, never sooner than Retry-After.
  function longPoll(getCursor, onBatch, onState) {
    let stopped = false;
    let ctrl = null;
    let wake = null;

    // One poll. Resolves to {ok: true} or {ok: false, retryAfter: ms|null}.
    async function pollOnce() {
      ctrl = new AbortController();
      const hang = setTimeout(() => ctrl.abort(), HANG_MS);
      const held = setTimeout(() => onState('connected', 'connected'), HELD_MS);
      const since = getCursor();
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
          const next = String(data.next || res.headers.get('Parlor-Cursor') || since);
          if (!stopped) onBatch({ messages: data.messages, gap: data.gap, reset: data.reset === true, next });
          return { ok: true };
        }
        if (res.status === 204) {
          const next = res.headers.get('Parlor-Cursor');
          const reset = res.headers.get('Parlor-Reset') === '1';
          if (next && next !== since && !stopped) onBatch({ messages: [], gap: 0, reset, next });
          return { ok: true };
        }
        if (res.status === 400 && since !== '0') {
          // Cursor rejected (e.g. the server restarted): start over from the room's history.
          if (!stopped) onBatch({ messages: [], gap: 0, next: '0' });
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

    // Waits ms, showing a countdown; wakes early when the browser comes back online or on stop.
    function backoffWait(ms) {
      return new Promise((resolve) => {
        const end = Date.now() + ms;
        let timer = 0;
        const done = () => {
          clearTimeout(timer);
          window.removeEventListener('online', done);
          wake = null;
          resolve();
        };
        const tick = () => {
          const left = end - Date.now();
          if (left <= 0) { done(); return; }
          onState('reconnecting', navigator.onLine === false
            ? 'offline'
            : 'reconnecting in ' + Math.ceil(left / 1000) + 's');
          timer = setTimeout(tick, ((left - 1) % 1000) + 1);
        };
        window.addEventListener('online', done);
        wake = done;
        tick();
      });
    }

    (async () => {
      let failures = 0;
      onState('connecting', 'connecting');
      while (!stopped) {
        const r = await pollOnce();
        if (stopped) break;
        if (r.ok) {
          failures = 0;
          onState('connected', 'connected');
          continue;
        }
        failures++;
        const ceiling = Math.min(CAP_MS, BASE_MS * 2 ** Math.min(failures - 1, 20));
        let wait = Math.random() * ceiling;
        if (r.retryAfter != null) wait = Math.max(wait, r.retryAfter);
        await backoffWait(wait);
        if (!stopped) onState('reconnecting', navigator.onLine === false ? 'offline' : 'reconnecting…');
      }
    })();

    return function stop() {
      stopped = true;
      if (ctrl) ctrl.abort();
      if (wake) wake();
    };
  }

  // sse(getCursor, onBatch, onState, onGiveUp): the same contract as longPoll, over one
  // EventSource stream of JSON events (/events?format=json, docs/HTTP.md). It opens from
  // getCursor(); the browser reconnects on its own with Last-Event-ID (which the server prefers
  // to the URL's since), also when the server ends the stream (--sse-max-age). 'ready' carries
  // the room's cursor, with an id only when nothing is replayed after it: only then does it move
  // the cursor. A stream the browser gives up on (an error status) is opened again from
  // getCursor() with backoff; after SSE_GIVE_UP streams in a row fail before their 'ready',
  // onGiveUp() is called (if given) and this transport stops. Going offline closes the stream
  // (the browser would not notice until a heartbeat is missed); coming back opens it again.
  function sse(getCursor, onBatch, onState, onGiveUp) {
    let stopped = false;
    let es = null;
    let failures = 0;
    let reopen = 0;

    function close() {
      if (es) { es.close(); es = null; }
      clearTimeout(reopen);
    }

    function open() {
      close();
      if (stopped) return;
      if (!failures) onState('connecting', 'connecting');
      const url = '/events?room=' + encodeURIComponent(room) +
        '&since=' + encodeURIComponent(getCursor()) + '&format=json';
      const stream = new EventSource(url);
      es = stream;
      let ready = false;
      stream.addEventListener('ready', (e) => {
        ready = true;
        failures = 0;
        // Streams opened so far, for the browser test and a curious person with devtools.
        document.body.dataset.streams = String(Number(document.body.dataset.streams || 0) + 1);
        onState('connected', 'connected');
        if (e.lastEventId && e.lastEventId === e.data) onBatch({ messages: [], gap: 0, next: e.data });
      });
      stream.addEventListener('reset', () => onBatch({ messages: [], gap: 0, reset: true }));
      stream.addEventListener('gap', (e) => onBatch({ messages: [], gap: Number(e.data) || 0 }));
      stream.onmessage = (e) => {
        let m;
        try { m = JSON.parse(e.data); } catch (err) { return; }
        if (m && m.cursor != null) onBatch({ messages: [m], gap: 0, next: String(m.cursor) });
      };
      stream.onerror = () => {
        if (stopped || es !== stream) return;
        if (!ready) failures++;
        ready = false;
        if (onGiveUp && failures >= SSE_GIVE_UP) {
          stop();
          onGiveUp();
          return;
        }
        onState('reconnecting', navigator.onLine === false ? 'offline' : 'reconnecting…');
        if (stream.readyState === EventSource.CLOSED) {
          es = null;
          const ceiling = Math.min(CAP_MS, BASE_MS * 2 ** Math.min(failures, 20));
          reopen = setTimeout(open, Math.random() * ceiling);
        }
      };
    }

    function offline() {
      close();
      onState('reconnecting', 'offline');
    }

    function stop() {
      stopped = true;
      close();
      window.removeEventListener('offline', offline);
      window.removeEventListener('online', open);
    }

    window.addEventListener('offline', offline);
    window.addEventListener('online', open);
    open();
    return stop;
  }

  // The transport ladder: SSE where the browser has EventSource, long-polling where it does not
  // or where streams keep failing (then for the rest of the page's life). `/?transport=poll` and
  // `/?transport=sse` force one. Either resumes from the newest cursor seen, so switching shows
  // nothing twice and misses nothing. The indicator names the transport in use.
  const forced = new URLSearchParams(location.search).get('transport');
  let sseFailed = forced === 'poll' || typeof EventSource !== 'function';

  function connect(getCursor, onBatch, onState) {
    let stop = null;
    const named = (name) => (s, text) => onState(s, text + ' · ' + name);
    const poll = () => {
      document.body.dataset.transport = 'poll';
      stop = longPoll(getCursor, onBatch, named('long-poll'));
    };
    if (sseFailed) {
      poll();
    } else {
      document.body.dataset.transport = 'sse';
      const giveUp = forced === 'sse' ? null : () => { sseFailed = true; poll(); };
      stop = sse(getCursor, onBatch, named('SSE'), giveUp);
    }
    return function stopConnection() { if (stop) stop(); };
  }

  // ---- one connection per room for all the tabs of this browser ----
  //
  // The tabs showing a room elect a leader with a Web Lock named after the room. Only the leader
  // holds the connection; it hands every batch and its connection state to the other tabs (the
  // followers) over a BroadcastChannel. A tab that joins says 'hello' and the leader answers with
  // the messages it holds. When the leader goes away (closed, frozen, navigated), its lock is
  // released and a waiting follower takes over from the newest cursor it has seen; the cursors
  // remembered in `seen` keep a message from showing twice. Without Web Locks or
  // BroadcastChannel every tab connects on its own ('solo').

  const tabId = newId();
  const shared = !!(navigator.locks && typeof navigator.locks.request === 'function' &&
    typeof BroadcastChannel === 'function');
  const channel = shared ? new BroadcastChannel('parlor-' + room) : null;
  let role = '';
  let state = ['connecting', 'connecting'];
  let stopConnection = null;  // set while this tab holds the connection
  let releaseLock = null;     // resolves the promise that keeps the lock held
  let lockWait = null;        // aborts a queued lock request

  function setRole(r) {
    role = r;
    document.body.dataset.role = r;
    showState();
  }

  function showState() {
    const where = role === 'leader' ? ' (this tab)' : role === 'follower' ? ' (via another tab)' : '';
    setStatus(state[0], state[1] + where);
  }

  function post(msg) {
    try { channel.postMessage(msg); } catch (e) { /* channel closed */ }
  }

  // Holds the connection in this tab.
  function lead(shareIt) {
    stopConnection = connect(
      () => since,
      (data) => {
        handleBatch(data);
        if (shareIt) post({ t: 'batch', data });
      },
      (s, text) => {
        state = [s, text];
        showState();
        if (shareIt) post({ t: 'state', state });
      },
    );
  }

  // Takes the lock if it is free (leader), else follows and queues for it.
  function elect() {
    const name = 'parlor-room-' + room;
    const hold = () => new Promise((resolve) => {
      releaseLock = resolve;
      lockWait = null;
      setRole('leader');
      lead(true);
    });
    lockWait = new AbortController();
    navigator.locks.request(name, { ifAvailable: true }, (lock) => {
      if (!lockWait) return null; // this tab left meanwhile
      if (lock) return hold();
      setRole('follower');
      askHistory();
      navigator.locks.request(name, { signal: lockWait.signal }, hold)
        .catch(() => { /* aborted: this tab left */ });
      return null;
    }).catch(() => { /* no lock: stays as it was */ });
  }

  // Asks the leader for the messages it holds; unanswered (the leader hangs), loads them itself.
  let answered = false;
  function askHistory() {
    answered = false;
    post({ t: 'hello', from: tabId });
    setTimeout(() => { if (!answered && role === 'follower') loadHistory(); }, HISTORY_MS);
  }

  // One request for the room's history, not held: the server holds it only when the room is
  // empty, and then there is nothing to show, so it is cut short. The cursor stays where it is
  // (a capped batch could end before it); `seen` drops what the leader sends again.
  async function loadHistory() {
    const ctrl = new AbortController();
    const cut = setTimeout(() => ctrl.abort(), HELD_MS);
    try {
      const res = await fetch('/subscribe?room=' + encodeURIComponent(room) + '&since=0&format=json', {
        headers: { Accept: 'application/json' },
        cache: 'no-store',
        signal: ctrl.signal,
      });
      if (res.status === 200) handleBatch({ messages: (await res.json()).messages, gap: 0 });
    } catch (e) {
      /* cut short or failed: the leader's batches still come */
    } finally {
      clearTimeout(cut);
    }
  }

  // Gives up the connection and the lock (or the place in the lock's queue).
  function resign() {
    if (stopConnection) { stopConnection(); stopConnection = null; }
    if (releaseLock) { releaseLock(); releaseLock = null; }
    if (lockWait) { lockWait.abort(); lockWait = null; }
    state = ['connecting', 'paused'];
    setRole('');
  }

  function onChannel(e) {
    const m = e.data;
    if (!m || typeof m !== 'object') return;
    if (m.t === 'hello') {
      if (role === 'leader') post({ t: 'history', to: m.from, messages: recent, next: since, state });
    } else if (role !== 'follower') {
      // A leader renders only what its own connection brings.
    } else if (m.t === 'batch' && m.data) {
      handleBatch(m.data);
    } else if (m.t === 'history' && m.to === tabId) {
      answered = true;
      handleBatch({ messages: m.messages, gap: 0, next: m.next });
      if (Array.isArray(m.state)) { state = m.state; showState(); }
    } else if (m.t === 'state' && Array.isArray(m.state)) {
      state = m.state;
      showState();
    }
  }

  function start() {
    if (!shared) { setRole('solo'); lead(false); return; }
    channel.onmessage = onChannel;
    window.addEventListener('pagehide', resign);
    document.addEventListener('freeze', resign);
    window.addEventListener('pageshow', (e) => { if (e.persisted && !releaseLock && !lockWait) elect(); });
    document.addEventListener('resume', () => { if (!releaseLock && !lockWait) elect(); });
    elect();
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

  // A message's full date shows on hover; made then, since the first toLocaleString() in a tab
  // costs tens of milliseconds, and ten tabs showing their first message at once add up.
  list.addEventListener('mouseover', (e) => {
    const t = e.target.closest && e.target.closest('time');
    if (t && !t.title && t.dateTime) t.title = new Date(t.dateTime).toLocaleString();
  });
  nameBox.value = loadName();
  nameBox.addEventListener('input', () => saveName(nameBox.value));
  textBox.addEventListener('input', () => { if (!errorEl.hidden) showError(''); });
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    send();
  });

  start();
})();
