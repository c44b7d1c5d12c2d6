//! What both adapters build from the command line, and the shutdown grace they both keep.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use parlor_core::Server;

use crate::Cli;

/// A bound listener and a fresh core: what an adapter's `Serve::bind` starts from.
#[derive(Debug)]
pub struct Listening {
    /// Non-blocking, with [`LISTEN_BACKLOG`](crate::LISTEN_BACKLOG).
    pub listener: TcpListener,
    /// The real address (the real port when asked for port 0).
    pub local_addr: SocketAddr,
    /// The core, started now with the wall clock as its epoch.
    pub server: Server,
    /// The graceful shutdown, not begun.
    pub grace: Grace,
}

impl Listening {
    /// Binds `cli.listen` and builds the core from `cli.config`.
    pub fn bind(cli: Cli) -> io::Result<Listening> {
        let listener = crate::bind_listener(cli.listen)?;
        let local_addr = listener.local_addr()?;
        Ok(Listening {
            listener,
            local_addr,
            server: Server::new(cli.config, crate::epoch_ms(), Instant::now()),
            grace: Grace::new(cli.shutdown_grace),
        })
    }
}

/// A graceful shutdown: begun by a stop request or a signal, over once every connection is
/// closed, the grace period has passed, or a second signal came.
#[derive(Clone, Copy, Debug)]
pub struct Grace {
    grace: Duration,
    deadline: Option<Instant>,
    hard_stop: bool,
}

impl Grace {
    /// A shutdown that will wait at most `grace` for connections to close.
    pub fn new(grace: Duration) -> Grace {
        Grace {
            grace,
            deadline: None,
            hard_stop: false,
        }
    }

    /// Begins the shutdown at `now`; `signal` says a SIGINT/SIGTERM asked for it. Returns `true`
    /// only the first time (the caller then stops accepting and tells the core); a signal after
    /// that ends the shutdown at once.
    pub fn begin(&mut self, now: Instant, signal: bool) -> bool {
        if self.deadline.is_some() {
            self.hard_stop |= signal;
            return false;
        }
        self.deadline = Some(now + self.grace);
        true
    }

    /// Ends the shutdown at once (several signals at the same time).
    pub fn stop_now(&mut self) {
        self.hard_stop = true;
    }

    /// When the shutdown ends at the latest, once begun.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether the server should return now; `drained` is the core's
    /// [`is_drained`](parlor_core::Server::is_drained): every answer written, nothing unread, so
    /// there is no need to wait for peers to close.
    pub fn is_over(&self, now: Instant, drained: bool) -> bool {
        self.deadline
            .is_some_and(|deadline| self.hard_stop || drained || now >= deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shutdown_ends_when_empty_at_its_deadline_or_on_a_second_signal() {
        let t0 = Instant::now();
        let mut grace = Grace::new(Duration::from_secs(5));
        assert!(!grace.is_over(t0, true), "not begun");
        assert!(grace.begin(t0, false));
        assert_eq!(grace.deadline(), Some(t0 + Duration::from_secs(5)));
        assert!(!grace.is_over(t0, false));
        assert!(grace.is_over(t0, true));
        assert!(grace.is_over(t0 + Duration::from_secs(5), false));
        assert!(!grace.begin(t0 + Duration::from_secs(1), false));
        assert!(
            !grace.is_over(t0, false),
            "a second stop request is not a signal"
        );
        assert!(!grace.begin(t0 + Duration::from_secs(1), true));
        assert!(grace.is_over(t0, false), "a second signal ends it");
        assert_eq!(grace.deadline(), Some(t0 + Duration::from_secs(5)));

        let mut grace = Grace::new(Duration::from_secs(5));
        grace.begin(t0, true);
        assert!(!grace.is_over(t0, false));
        grace.stop_now();
        assert!(grace.is_over(t0, false));
    }
}
