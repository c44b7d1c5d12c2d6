//! What an adapter does when `accept` fails: the policy both servers share.

use std::io;
use std::time::Duration;

/// How long accepting pauses after an accept error such as `EMFILE`.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// What to do after a failed `accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptFailure {
    /// The peer gave up before we got to it, or a signal: accept the next one at once.
    Retry,
    /// Out of descriptors or memory (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) or anything
    /// unexpected: the pending connection stays in the backlog, so retrying at once would spin.
    /// Stop accepting for [`ACCEPT_PAUSE`] and serve the existing connections meanwhile.
    Pause,
}

/// The accept-error policy of one listener: classifies each failure, and logs a failure once per
/// episode (until an accept succeeds again), so running out of descriptors logs one line, not ten
/// a second.
#[derive(Debug)]
pub struct AcceptErrors {
    program: &'static str,
    failing: bool,
}

impl AcceptErrors {
    /// The policy of `program`'s listener (the name starts its log lines).
    pub fn new(program: &'static str) -> AcceptErrors {
        AcceptErrors {
            program,
            failing: false,
        }
    }

    /// An accept succeeded: the next failure starts a new episode and is logged.
    pub fn succeeded(&mut self) {
        self.failing = false;
    }

    /// An accept failed with `e` (not `WouldBlock`): what to do, logging the first pause of an
    /// episode on stderr.
    pub fn failed(&mut self, e: &io::Error) -> AcceptFailure {
        if matches!(
            e.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::Interrupted
        ) {
            return AcceptFailure::Retry;
        }
        if !self.failing {
            self.failing = true;
            eprintln!(
                "{}: accept failed: {e}; pausing accepts for {} ms at a time until one \
                 succeeds (existing connections are still served)",
                self.program,
                ACCEPT_PAUSE.as_millis()
            );
        }
        AcceptFailure::Pause
    }

    /// Whether a failure was logged and no accept has succeeded since.
    pub fn is_failing(&self) -> bool {
        self.failing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_retry_and_the_rest_pause_logging_once_per_episode() {
        let mut policy = AcceptErrors::new("parlor-test");
        for kind in [
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::Interrupted,
        ] {
            assert_eq!(policy.failed(&kind.into()), AcceptFailure::Retry);
            assert!(!policy.is_failing());
        }
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(policy.failed(&emfile), AcceptFailure::Pause);
        assert!(policy.is_failing());
        assert_eq!(policy.failed(&emfile), AcceptFailure::Pause);
        policy.succeeded();
        assert!(!policy.is_failing());
        let enomem = io::Error::from_raw_os_error(libc::ENOMEM);
        assert_eq!(policy.failed(&enomem), AcceptFailure::Pause);
        assert!(policy.is_failing());
    }
}
