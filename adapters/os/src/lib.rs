//! # parlor-os
//!
//! What both Parlor servers need from the operating system and the process, written once:
//! `parlor-core` holds everything the two adapters share that is not I/O (routing, responses,
//! the configuration and its validation); this crate holds the process around it, written once
//! instead of in each adapter:
//!
//! * [`parse_args`] (`cli.rs`): the command line, flags and `PARLOR_*` environment variables,
//!   `--help`, `--version`.
//! * [`raise_nofile_limit`]: each connection is a file descriptor, so the soft open-file limit
//!   is raised to the hard one at start, and the default connection cap follows from it
//!   ([`default_max_connections`]).
//! * [`bind_listener`]: a non-blocking listener with a backlog deep enough for a burst of
//!   subscribers reconnecting at once.
//! * [`epoch_ms`]: the wall-clock start time the core needs for cursors and message times.
//! * [`main_entry`] and [`Runner`]: the program (flags, `--help`, the start-up line, exit codes)
//!   and the in-process runner tests use, for any adapter that implements [`Serve`].
//! * [`WriteQueue`] (`write_queue.rs`): a connection's queue of `Bytes`, written with one
//!   vectored write per burst.
//! * [`AcceptErrors`] (`accept.rs`): which accept errors are retried at once and which pause
//!   accepting for [`ACCEPT_PAUSE`], logged once per episode.
//! * [`Listening`] and [`Grace`] (`start.rs`): the bound listener and core an adapter starts
//!   from, and the graceful shutdown's end (empty, past the grace, or a second signal).
//! * [`Deferral`] (`deferral.rs`): when a busy server writes what it held back for the
//!   connections an input did not come from.
//! * [`report_adapter_bug`] and the constants both event loops use ([`READ_BUFFER_BYTES`],
//!   [`MAX_IOVECS`]).
//!
//! What is left in each adapter is its own event loop (`parlor-mio`) or its tasks
//! (`parlor-smol`).

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

mod accept;
mod cli;
mod deferral;
mod start;
#[cfg(feature = "testkit")]
pub mod testkit;
mod write_queue;

pub use accept::{AcceptErrors, AcceptFailure, ACCEPT_PAUSE};
pub use cli::{
    default_max_connections, parse_args, startup_line, Cli, CliError, CliOutcome, DEFAULT_LISTEN,
    DEFAULT_REDIS_PREFIX, DEFAULT_SHUTDOWN_GRACE, FD_RESERVE,
};
pub use deferral::{Deferral, DEFER_FOR, DEFER_TURNS, LINGER, NO_LINGER_ROUNDS};
pub use start::{Grace, Listening};
pub use write_queue::{Flushed, WriteQueue, MAX_IOVECS};

/// Size of an adapter's read buffer (one per thread, shared by all its connections).
pub const READ_BUFFER_BYTES: usize = 64 * 1024;

/// The core answers `Err` only for adapter bugs (a stale id): loud in debug builds, logged on
/// stderr with the `program` name in release builds, never fatal to the other connections.
pub fn report_adapter_bug(program: &str, result: Result<(), parlor_core::Error>) {
    if let Err(e) = result {
        debug_assert!(false, "{program}: adapter bug: {e}");
        eprintln!("{program}: adapter bug: {e}");
    }
}

/// Listen backlog: bursts of thousands of connections (a page of subscribers reconnecting) must
/// not overflow the accept queue. The kernel clamps it to `net.core.somaxconn`.
pub const LISTEN_BACKLOG: i32 = 4096;

/// A bound server of one adapter, ready to run.
pub trait Serve: Sized + Send + 'static {
    /// What stops the server gracefully from another thread.
    type Stop: Stop;
    /// Binds `cli.listen` (port 0 picks a free port) and builds the core.
    fn bind(cli: Cli) -> io::Result<Self>;
    /// The address the listener is bound to.
    fn local_addr(&self) -> SocketAddr;
    /// A handle that starts a graceful shutdown.
    fn stop_handle(&self) -> Self::Stop;
    /// Makes SIGINT and SIGTERM start a graceful shutdown.
    fn handle_signals(&mut self) -> io::Result<()>;
    /// Serves until a graceful shutdown completes.
    fn run(self) -> io::Result<()>;
}

/// A handle that asks a running server to shut down gracefully, like SIGTERM.
pub trait Stop: Clone + Send + 'static {
    /// Starts the graceful shutdown; does not wait for it.
    fn stop(&self);
}

/// Binds a non-blocking TCP listener on `addr` with [`LISTEN_BACKLOG`].
pub fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    raise_backlog(&listener);
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Re-listens with a larger backlog than the standard library's 128 (calling `listen` again on
/// a listening socket only updates its backlog on Linux and the BSDs).
#[allow(unsafe_code)]
fn raise_backlog(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: `listen` takes a file descriptor we own (borrowed for the call) and an integer;
    // it touches no memory of ours. A failure leaves the old backlog, which is fine.
    unsafe {
        libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG);
    }
}

/// Raises the soft open-file limit (`RLIMIT_NOFILE`) to the hard limit and returns the limit in
/// force afterwards. Each connection is a file descriptor, so this is the connection ceiling.
#[allow(unsafe_code)]
#[allow(clippy::useless_conversion)] // `rlim_t` is `u64` on Linux, not everywhere
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the struct we pass, which we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let current = limit.rlim_cur;
    if current >= limit.rlim_max {
        return Ok(u64::from(current));
    }
    // An unlimited hard limit is refused for files on Linux (the real ceiling is fs.nr_open),
    // so try the hard limit, then a million, and keep what we have if both fail.
    for want in [limit.rlim_max, 1 << 20] {
        if want <= current {
            continue;
        }
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass and nothing else.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(u64::from(want));
        }
    }
    Ok(u64::from(current))
}

/// The wall-clock time now, in milliseconds since the Unix epoch: the core's epoch at start.
pub fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A server running in a thread of its own: what tests and embedders start.
pub struct Runner<S: Serve> {
    local_addr: SocketAddr,
    stop: S::Stop,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl<S: Serve> Runner<S> {
    /// Binds `cli.listen` (port 0 picks a free port) and runs the server in a new thread.
    pub fn start(cli: Cli) -> io::Result<Self> {
        let server = S::bind(cli)?;
        let local_addr = server.local_addr();
        let stop = server.stop_handle();
        let thread = std::thread::Builder::new()
            .name("parlor-server".into())
            .spawn(move || server.run())?;
        Ok(Runner {
            local_addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that starts a graceful shutdown without waiting for it.
    pub fn stop_handle(&self) -> S::Stop {
        self.stop.clone()
    }

    /// Shuts down gracefully (like SIGTERM) and waits for the server to end.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> io::Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.stop.stop();
        thread
            .join()
            .map_err(|_| io::Error::other("the server thread panicked"))?
    }
}

impl<S: Serve> Drop for Runner<S> {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// The whole server program: parses `args` (without the program name), raises the open-file
/// limit, binds, prints the start-up line, serves until SIGINT/SIGTERM. Returns the process exit
/// code: 0 after a clean shutdown, `--help` or `--version`, 2 for a bad command line, 1 when the server
/// cannot start or fails.
pub fn main_entry<S: Serve>(program: &str, args: impl IntoIterator<Item = String>) -> i32 {
    let nofile = match raise_nofile_limit() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{program}: cannot read the open-file limit: {e}");
            1024
        }
    };
    let cli = match parse_args(program, args, default_max_connections(nofile)) {
        Ok(CliOutcome::Run(cli)) => cli,
        Ok(CliOutcome::Print(text)) => {
            print!("{text}");
            let _ = io::stdout().flush();
            return 0;
        }
        Err(e) => {
            eprintln!("{program}: {e}");
            return 2;
        }
    };
    let listen = cli.listen;
    let mut server = match S::bind(cli) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("{program}: cannot listen on {listen}: {e}");
            return 1;
        }
    };
    if let Err(e) = server.handle_signals() {
        eprintln!("{program}: cannot install signal handlers: {e}");
        return 1;
    }
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "{}", startup_line(program, server.local_addr()));
    let _ = stdout.flush();
    drop(stdout);
    match server.run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{program}: server failed: {e}");
            1
        }
    }
}

pub mod redis_log;
pub mod shared_log;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit_redis;
