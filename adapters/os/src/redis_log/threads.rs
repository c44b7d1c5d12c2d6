//! The broker's two threads: the worker, which carries out requests in order on its own
//! connection, and the feed, which listens to the channel on another. Both reconnect with
//! backoff and never panic on a Redis error.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::codec::decode_event;
use super::log::{nonzero, RedisLog};
use super::script::Keys;
use super::service::{failed, Backoff, BrokerConfig, Part, Shared};
use parlor_core::broker::{BrokerEvent, BrokerFailure, BrokerRequest};
use redis::{Client, Connection, RedisError, Value};

/// The worker thread: executes requests in order on its own connection.
pub(super) struct Worker {
    pub(super) shared: Arc<Shared>,
    pub(super) client: Client,
    pub(super) keys: Keys,
    pub(super) config: BrokerConfig,
    pub(super) log: Option<RedisLog>,
    pub(super) backoff: Backoff,
    /// While disconnected: no attempt to reconnect before this.
    pub(super) retry_at: Instant,
    /// `feed_breaks` when the current connection was made.
    pub(super) seen_breaks: u64,
}

impl Worker {
    pub(super) fn run(mut self, requests: Receiver<BrokerRequest>) {
        loop {
            self.ensure_connected();
            let request = if self.log.is_some() {
                match requests.recv() {
                    Ok(r) => r,
                    Err(_) => return,
                }
            } else {
                let wait = self.retry_at.saturating_duration_since(Instant::now());
                match requests.recv_timeout(wait) {
                    Ok(r) => r,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            };
            let event = self.execute(&request);
            self.shared.emit(event);
        }
    }

    /// Replaces a suspect connection, and connects when the backoff allows. Returns whether a
    /// connection is ready.
    pub(super) fn ensure_connected(&mut self) -> bool {
        if self.log.is_some() && self.shared.feed_breaks.load(Ordering::SeqCst) != self.seen_breaks
        {
            self.log = None;
            self.retry_at = Instant::now();
        }
        if self.log.is_none() && Instant::now() >= self.retry_at {
            let breaks = self.shared.feed_breaks.load(Ordering::SeqCst);
            match RedisLog::open(&self.client, self.keys.clone(), self.config.timeout) {
                Ok(mut log) => {
                    log.set_room_ttl(self.config.room_ttl);
                    self.log = Some(log);
                    self.seen_breaks = breaks;
                    self.backoff.reset();
                    self.shared.set_health(Part::Commands, true);
                }
                Err(_) => {
                    self.retry_at = Instant::now() + self.backoff.next_delay();
                    self.shared.set_health(Part::Commands, false);
                }
            }
        }
        self.log.is_some()
    }

    /// Carries out one request and returns its answer. After a connection error it is retried
    /// once on a fresh connection when that cannot publish twice: reads, and appends with an
    /// id (if the first try was stored after all, the retry answers `duplicate` with the same
    /// place, which is the right answer for the publisher).
    pub(super) fn execute(&mut self, request: &BrokerRequest) -> BrokerEvent {
        let retry_safe = match request {
            BrokerRequest::Append { id, .. } => id.is_some(),
            BrokerRequest::Fetch { .. } => true,
        };
        let mut tries = if retry_safe { 2 } else { 1 };
        loop {
            tries -= 1;
            if !self.ensure_connected() {
                return failed(request, BrokerFailure::Unavailable);
            }
            let Some(log) = self.log.as_mut() else {
                return failed(request, BrokerFailure::Unavailable);
            };
            let event = match request {
                BrokerRequest::Append {
                    token,
                    room,
                    text,
                    id,
                    time_ms,
                } => {
                    let result = log.append(
                        room,
                        text,
                        id.as_deref(),
                        *time_ms,
                        self.config.history_messages,
                    );
                    result.map(|stored| BrokerEvent::Appended {
                        token: *token,
                        result: Ok(stored),
                    })
                }
                BrokerRequest::Fetch {
                    token,
                    room,
                    after_seq,
                    limit,
                } => log
                    .fetch(room, *after_seq, *limit)
                    .map(|history| BrokerEvent::Fetched {
                        token: *token,
                        room: room.clone(),
                        result: Ok(history),
                    }),
            };
            match event {
                Ok(event) => return event,
                Err(e) if e.is_connection_error() => {
                    // The connection is gone: the next attempt reconnects at once.
                    self.log = None;
                    self.retry_at = Instant::now();
                    self.backoff.reset();
                    self.shared.set_health(Part::Commands, false);
                    if tries == 0 {
                        return failed(request, e.failure());
                    }
                }
                Err(e) => return failed(request, e.failure()),
            }
        }
    }
}

/// The subscriber thread: listens to the feed and reports its messages and its health.
pub(super) struct Feed {
    pub(super) shared: Arc<Shared>,
    pub(super) client: Client,
    pub(super) channel: Box<str>,
    pub(super) config: BrokerConfig,
}

/// How often a quiet feed checks whether the service is stopping.
pub(super) const FEED_TICK: Duration = Duration::from_millis(250);

impl Feed {
    pub(super) fn run(self) {
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        while !self.shared.stopped() {
            let timeout = nonzero(self.config.timeout);
            match self.client.get_connection_with_timeout(timeout) {
                Ok(mut conn) => {
                    let listened = self.listen(&mut conn, &mut backoff);
                    self.shared.feed_breaks.fetch_add(1, Ordering::SeqCst);
                    self.shared.set_health(Part::Feed, false);
                    // After a connection that worked, the backoff starts again from its
                    // minimum: a short pause, never a tight reconnect loop.
                    if listened.is_ok() || self.shared.sleep(backoff.next_delay()) {
                        return;
                    }
                }
                Err(_) => {
                    self.shared.set_health(Part::Feed, false);
                    if self.shared.sleep(backoff.next_delay()) {
                        return;
                    }
                }
            }
        }
    }

    /// Subscribes and forwards messages until the connection fails (`Err`) or the service
    /// stops (`Ok`).
    pub(super) fn listen(
        &self,
        conn: &mut Connection,
        backoff: &mut Backoff,
    ) -> Result<(), RedisError> {
        let timeout = nonzero(self.config.timeout);
        conn.set_read_timeout(Some(timeout))?;
        conn.set_write_timeout(Some(timeout))?;
        let mut pubsub = conn.as_pubsub();
        pubsub.subscribe(&*self.channel)?;
        pubsub.set_read_timeout(Some(FEED_TICK.min(timeout)))?;
        backoff.reset();
        // Up only now: what is appended from here on reaches this feed.
        self.shared.set_health(Part::Feed, true);
        let mut quiet_since = Instant::now();
        loop {
            if self.shared.stopped() {
                return Ok(());
            }
            match pubsub.get_message() {
                Ok(msg) => {
                    quiet_since = Instant::now();
                    if let Some(event) = decode_event(msg.get_payload_bytes()) {
                        self.shared.emit(event);
                    }
                }
                Err(e) if e.is_timeout() => {
                    if quiet_since.elapsed() >= self.config.ping_interval {
                        pubsub.set_read_timeout(Some(timeout))?;
                        pubsub.ping::<Value>()?;
                        pubsub.set_read_timeout(Some(FEED_TICK.min(timeout)))?;
                        quiet_since = Instant::now();
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}
