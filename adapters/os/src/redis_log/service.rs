//! [`Broker`], the service an adapter runs: its handle, the state its threads share, their
//! health reports and the reconnect backoff. The threads themselves are `threads.rs`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::log::nonzero;
use super::script::Keys;
use super::threads::{Feed, Worker};
use super::DEFAULT_TIMEOUT;
use parlor_core::broker::{BrokerEvent, BrokerFailure, BrokerRequest};
use redis::Client;

/// How a [`Broker`] reaches Redis and behaves when it cannot.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// Starts every key and the channel (default `parlor:`).
    pub prefix: String,
    /// About how many messages each room keeps (`--history-messages`; at least this many).
    pub history_messages: usize,
    /// Connect, read and write timeout of each Redis connection.
    pub timeout: Duration,
    /// First delay before reconnecting after a failed attempt; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// The longest delay between reconnection attempts.
    pub backoff_max: Duration,
    /// The feed pings Redis after this long without traffic, to notice a Redis that stopped
    /// answering (a dead one is noticed at once by the closed connection).
    pub ping_interval: Duration,
    /// Requests waiting for the worker beyond this many are answered `Overloaded` at once.
    pub queue: usize,
    /// With `Some`, a room's keys expire this long after its last append (see the module docs).
    pub room_ttl: Option<Duration>,
}

impl BrokerConfig {
    /// The defaults: [`DEFAULT_TIMEOUT`], backoff from 100 ms to 5 s, a ping after 5 s of
    /// silence, a queue of 4096 requests, rooms kept without expiry.
    pub fn new(url: &str, prefix: &str, history_messages: usize) -> BrokerConfig {
        BrokerConfig {
            url: url.to_string(),
            prefix: prefix.to_string(),
            history_messages,
            timeout: DEFAULT_TIMEOUT,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
            queue: 4096,
            room_ttl: None,
        }
    }
}

/// The broker service: carries out [`BrokerRequest`]s against Redis and reports
/// [`BrokerEvent`]s, for an adapter's event loop.
///
/// Two threads: a worker that executes requests one at a time, in order, on its own
/// connection, and a subscriber that listens to the feed on another. Both reconnect with
/// backoff; neither panics on a Redis error.
///
/// The adapter's side is non-blocking: [`Broker::submit`] queues a request; `notify` (given at
/// spawn) is called from a broker thread when events are waiting, and the adapter then calls
/// [`Broker::try_recv`] until it returns `None` (in its own loop: a `mio::Waker` wakes mio's
/// poll, an async event or channel wakes a smol task). Notifications are coalesced: after a
/// `notify`, the next one comes only once `try_recv` has returned `None`, so the adapter must
/// drain fully each time it is woken. `notify` must be quick and must not block or call into
/// the broker (it may run on the adapter's own thread too, when `submit` answers at once).
///
/// Requests wait in a bounded queue ([`BrokerConfig::queue`]); events wait in an unbounded one
/// until drained, since feed messages cannot be refused (a slow feed is cut by Redis's own
/// Pub/Sub output limit instead, which shows as `Down`, then `Up` and a catch-up).
pub struct Broker {
    pub(super) requests: Option<SyncSender<BrokerRequest>>,
    pub(super) events: Receiver<BrokerEvent>,
    pub(super) shared: Arc<Shared>,
    pub(super) threads: Vec<JoinHandle<()>>,
}

impl Broker {
    /// Spawns the service for `url` with the defaults of [`BrokerConfig::new`].
    pub fn spawn(
        url: &str,
        prefix: &str,
        history_messages: usize,
        notify: impl Fn() + Send + Sync + 'static,
    ) -> io::Result<Broker> {
        Broker::spawn_with(BrokerConfig::new(url, prefix, history_messages), notify)
    }

    /// Spawns the service. Fails only for an invalid URL or prefix, or when a thread cannot be
    /// started; an unreachable Redis is not an error here (the service starts down and keeps
    /// trying, reporting `Up` once it gets through).
    pub fn spawn_with(
        config: BrokerConfig,
        notify: impl Fn() + Send + Sync + 'static,
    ) -> io::Result<Broker> {
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
        let keys = Keys::new(&config.prefix).map_err(|e| invalid(e.to_string()))?;
        let client = Client::open(config.url.as_str())
            .map_err(|e| invalid(format!("invalid Redis URL: {e}")))?;
        let (events_tx, events) = mpsc::channel();
        let (requests, requests_rx) = mpsc::sync_channel(config.queue.max(1));
        let shared = Arc::new(Shared {
            events: events_tx,
            pending: AtomicBool::new(false),
            notify: Box::new(notify),
            health: Mutex::new(Health::default()),
            stopped: Mutex::new(false),
            wake: Condvar::new(),
            feed_breaks: AtomicU64::new(0),
        });
        let mut broker = Broker {
            requests: Some(requests),
            events,
            shared: Arc::clone(&shared),
            threads: Vec::new(),
        };
        let worker = Worker {
            shared: Arc::clone(&shared),
            client: client.clone(),
            keys: keys.clone(),
            config: config.clone(),
            log: None,
            backoff: Backoff::new(config.backoff_min, config.backoff_max),
            retry_at: Instant::now(),
            seen_breaks: 0,
        };
        broker.threads.push(
            std::thread::Builder::new()
                .name("parlor-redis-worker".into())
                .spawn(move || worker.run(requests_rx))?,
        );
        let feed = Feed {
            shared,
            client,
            channel: keys.channel.clone(),
            config,
        };
        broker.threads.push(
            std::thread::Builder::new()
                .name("parlor-redis-feed".into())
                .spawn(move || feed.run())?,
        );
        Ok(broker)
    }

    /// Queues a request for the worker without blocking. If the queue is full (or the worker is
    /// gone), the request is answered at once with a failure event.
    pub fn submit(&self, request: BrokerRequest) {
        let Some(requests) = &self.requests else {
            return;
        };
        let (request, failure) = match requests.try_send(request) {
            Ok(()) => return,
            Err(TrySendError::Full(r)) => (r, BrokerFailure::Overloaded),
            Err(TrySendError::Disconnected(r)) => (r, BrokerFailure::Unavailable),
        };
        self.shared.emit(failed(&request, failure));
    }

    /// The next event, if one is waiting. Call until `None` after each `notify`.
    pub fn try_recv(&self) -> Option<BrokerEvent> {
        if let Ok(event) = self.events.try_recv() {
            return Some(event);
        }
        // Re-arm the notification, then look once more: an event sent just before the re-arm
        // found it still set and did not notify, so it must be taken here.
        self.shared.pending.store(false, Ordering::SeqCst);
        self.events.try_recv().ok()
    }

    /// Every event waiting now.
    pub fn drain(&self) -> impl Iterator<Item = BrokerEvent> + '_ {
        std::iter::from_fn(|| self.try_recv())
    }

    /// Stops both threads and waits for them (at most about one timeout: a request in flight
    /// finishes or times out first).
    pub fn shutdown(mut self) {
        self.stop();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }

    pub(super) fn stop(&mut self) {
        self.requests = None; // the worker sees the queue close
        *lock(&self.shared.stopped) = true;
        self.shared.wake.notify_all();
    }
}

impl Drop for Broker {
    /// Stops the threads without waiting: they end on their own within about one timeout.
    fn drop(&mut self) {
        self.stop();
    }
}

/// The failure event answering `request`.
pub(super) fn failed(request: &BrokerRequest, failure: BrokerFailure) -> BrokerEvent {
    match request {
        BrokerRequest::Append { token, .. } => BrokerEvent::Appended {
            token: *token,
            result: Err(failure),
        },
        BrokerRequest::Fetch { token, room, .. } => BrokerEvent::Fetched {
            token: *token,
            room: room.clone(),
            result: Err(failure),
        },
    }
}

/// What the threads and the handle share.
pub(super) struct Shared {
    pub(super) events: Sender<BrokerEvent>,
    /// A notification is outstanding: the adapter has not drained since.
    pub(super) pending: AtomicBool,
    pub(super) notify: Box<dyn Fn() + Send + Sync>,
    pub(super) health: Mutex<Health>,
    pub(super) stopped: Mutex<bool>,
    pub(super) wake: Condvar,
    /// How many times the feed's connection broke: the worker's connection, to the same
    /// Redis, is then suspect too and is replaced before the next request.
    pub(super) feed_breaks: AtomicU64,
}

/// Which connection a health report is about.
#[derive(Clone, Copy)]
pub(super) enum Part {
    Commands,
    Feed,
}

#[derive(Default)]
pub(super) struct Health {
    pub(super) commands: bool,
    pub(super) feed: bool,
    /// What the core was last told (starts down).
    pub(super) up: bool,
}

impl Shared {
    pub(super) fn emit(&self, event: BrokerEvent) {
        // A send fails only when the handle is gone, and then nobody is listening.
        let _ = self.events.send(event);
        if !self.pending.swap(true, Ordering::SeqCst) {
            (self.notify)();
        }
    }

    /// Records a connection's state and reports `Up`/`Down` on a change of the whole. The lock
    /// is held while emitting, so the reports are in the order of the changes.
    pub(super) fn set_health(&self, part: Part, ok: bool) {
        let mut health = lock(&self.health);
        match part {
            Part::Commands => health.commands = ok,
            Part::Feed => health.feed = ok,
        }
        let up = health.commands && health.feed;
        if up != health.up {
            health.up = up;
            self.emit(if up {
                BrokerEvent::Up
            } else {
                BrokerEvent::Down
            });
        }
    }

    pub(super) fn stopped(&self) -> bool {
        *lock(&self.stopped)
    }

    /// Sleeps for `d` unless stopped first. Returns whether the service is stopping.
    pub(super) fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut stopped = lock(&self.stopped);
        loop {
            let now = Instant::now();
            if *stopped || now >= deadline {
                return *stopped;
            }
            stopped = match self.wake.wait_timeout(stopped, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

/// Locks a mutex, ignoring poisoning (the data are flags and a sender, valid either way).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Capped exponential backoff with ±25 % jitter, so nodes do not reconnect in lockstep.
pub(super) struct Backoff {
    pub(super) min: Duration,
    pub(super) max: Duration,
    pub(super) next: Duration,
}

impl Backoff {
    pub(super) fn new(min: Duration, max: Duration) -> Backoff {
        let min = nonzero(min);
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }

    pub(super) fn reset(&mut self) {
        self.next = self.min;
    }

    pub(super) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = RandomState::new().build_hasher().finish() % 501; // 0..=500 per mille
        base * (750 + jitter as u32) / 1000
    }
}
