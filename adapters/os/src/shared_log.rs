//! The adapters' side of `--redis`: start the [`Broker`] for a server's command line, and move
//! requests and events between it and the core. Both adapters use these three calls; only how
//! they are woken differs (parlor-mio: a `mio::Waker`; parlor-smol: a channel its owner task
//! awaits).

use std::io;
use std::time::Instant;

use crate::cli::Cli;
use parlor_core::Server;

use crate::redis_log::{Broker, BrokerConfig};

/// The broker of a server with a shared log.
pub struct SharedLog {
    broker: Broker,
}

impl SharedLog {
    /// Starts the broker service when the command line asks for a shared log (`--redis`);
    /// `Ok(None)` keeps the rooms in memory. `notify` is called from a broker thread when events
    /// are waiting: it must only wake the adapter's loop, which then calls
    /// [`pump`](Self::pump). Fails for an invalid URL or prefix; an unreachable Redis is not
    /// an error (the node starts with its log down and reconnects with backoff).
    pub fn start(
        cli: &Cli,
        notify: impl Fn() + Send + Sync + 'static,
    ) -> io::Result<Option<SharedLog>> {
        let Some(url) = &cli.redis else {
            return Ok(None);
        };
        let config = BrokerConfig::new(url, &cli.redis_prefix, cli.config.history_messages);
        Ok(Some(SharedLog {
            broker: Broker::spawn_with(config, notify)?,
        }))
    }

    /// Feeds every waiting broker event to the core and hands the core's broker requests to
    /// the broker. The caller then drains [`Server::poll_output`] as after any input. Call it
    /// whenever `notify` woke the loop (every event must be taken each time: notifications are
    /// coalesced until the queue was seen empty).
    pub fn pump(&self, server: &mut Server, now: Instant) {
        while let Some(event) = self.broker.try_recv() {
            server.handle_broker(event, now);
            self.submit(server);
        }
        self.submit(server);
    }

    /// Hands every request the core has for the log to the broker (after any input).
    pub fn submit(&self, server: &mut Server) {
        while let Some(request) = server.poll_broker() {
            self.broker.submit(request);
        }
    }

    /// Stops the broker's threads without waiting for them.
    pub fn stop(self) {
        drop(self.broker);
    }
}
