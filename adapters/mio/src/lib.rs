//! # parlor-mio
//!
//! Parlor's first server: one thread, one [`mio::Poll`], and [`parlor_core::Server`] doing all
//! the thinking. This crate only moves bytes and time: it owns the sockets, one reused read
//! buffer, a write queue ([`parlor_os::WriteQueue`]) per connection, the clock and the signals.
//!
//! ## The loop ([`EventLoop::run`])
//! 1. Wait in `Poll::poll` until I/O readiness, the core's next deadline
//!    ([`Server::poll_timeout`]), the end of an accept pause, or the end of the shutdown grace.
//! 2. For each event: write what is queued (writable), read until `WouldBlock` or a short
//!    read (readable), accept until `WouldBlock` (listener). Readiness is edge-triggered and
//!    may be spurious, so every write and accept runs until the socket says `WouldBlock`, and
//!    every read until the socket is empty: a read that fills less than the buffer emptied it,
//!    and what arrives later raises a new event (unless the event said the peer closed: then
//!    reads go on until `WouldBlock` or the end).
//! 3. After **every** input to the core, drain [`Server::poll_output`] and carry each output
//!    out: queue bytes, close after flushing, close now, pause or resume reading (a paused
//!    socket's events are still looked at: an error such as a reset closes it at once). The
//!    connection whose input it was gets its answer written at once; the others that got bytes
//!    are remembered.
//! 4. Call [`Server::handle_timeout`] once its deadline has passed.
//! 5. End the turn by writing every remembered connection: all it was given during the turn
//!    in one vectored write (up to [`MAX_IOVECS`](parlor_os::MAX_IOVECS) buffers; more writes
//!    only when there is more), so a stream that several publishes reached in one turn gets
//!    one write, one segment and one reader wake-up for all of them. A busy loop holds an
//!    event stream's writes back a little longer, while more input keeps coming: a few turns,
//!    2 ms at most (the rule both servers follow: [`Deferral`](parlor_os::Deferral)); a poll's
//!    answer is not held back, since its client asks again only once it has it. A lone
//!    message on an idle loop still leaves at the end of its own turn. The connection whose
//!    input it was is written at once, so a publisher's answer never waits, and a connection
//!    given more than 64 KiB is written as it goes. Every write is reported to the core
//!    ([`Server::handle_flushed`]), which is how it enforces the cap on unsent bytes of a
//!    client that stopped reading.
//!
//! Work per wake-up is bounded: a connection gets at most [`READS_PER_WAKE`] reads of 64 KiB and
//! the listener at most [`ACCEPTS_PER_WAKE`] accepts before the others get their turn; whatever
//! is left is resumed on the next turn (with a zero poll timeout), because edge-triggered
//! readiness will not be reported again.
//!
//! A connection that the core closes (`Output::Close`) is flushed, then its sending side is shut
//! down and what the peer still sends is read and discarded until it closes too (so the kernel
//! does not answer unread bytes with a reset that could destroy the response in flight). The
//! core's closing deadline turns a peer that never closes into an `Output::Abort`.
//!
//! Accept errors never stop the loop: running out of file descriptors or memory (`EMFILE`,
//! `ENFILE`, `ENOBUFS`, `ENOMEM`, or anything unexpected) pauses accepting for
//! [`ACCEPT_PAUSE`] while existing connections keep being served ([`AcceptErrors`]). What both
//! adapters share (the write queue, the accept policy, the program's `main`, the runner) is in
//! `parlor-os`; this crate is the event loop: `lib.rs` the loop, signals, shutdown and accepts,
//! `conn.rs` a connection's reads, writes, outputs and close.
//!
//! ## Use
//! The binary is `parlor-mio` ([`parlor_os::main_entry`]). Tests and embedders start the same
//! loop in a thread with [`Runner::start`] (port 0 is fine; [`Runner::local_addr`] has the real
//! one) and stop it with [`Runner::shutdown`], which performs the same graceful shutdown as
//! SIGTERM.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use parlor_core::{ConnId, Server};
use parlor_os::shared_log::SharedLog;
use parlor_os::{
    AcceptErrors, AcceptFailure, Cli, Deferral, Grace, Listening, Serve, ACCEPT_PAUSE,
    READ_BUFFER_BYTES,
};

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);

/// Reads one connection may do per wake-up before the others get their turn.
pub const READS_PER_WAKE: usize = 4;
/// Connections accepted per wake-up before the existing ones get their turn.
pub const ACCEPTS_PER_WAKE: usize = 256;
mod conn;

use conn::Conn;

const PROGRAM: &str = "parlor-mio";

/// Stops a running [`EventLoop`] from another thread, gracefully (like SIGTERM).
#[derive(Clone, Debug)]
pub struct StopHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl parlor_os::Stop for StopHandle {
    /// Asks the loop to shut down gracefully; it returns from [`EventLoop::run`] once its
    /// connections are closed or the shutdown grace has passed.
    fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            eprintln!("parlor-mio: cannot wake the event loop: {e}");
        }
    }
}

/// The bound server, ready to [`run`](EventLoop::run).
pub struct EventLoop {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    server: Server,
    /// Indexed by `ConnId.0` (the core's slab keys are small and dense).
    conns: Vec<Option<Conn>>,
    buf: Box<[u8]>,
    /// Connections with bytes to write or a close to carry out, at the end of the turn.
    dirty: Vec<ConnId>,
    /// Event streams with events to write, held back while the loop is busy
    /// ([`Deferral`]).
    held: Vec<ConnId>,
    /// Connections that may have more to read: their read budget ran out, they were resumed,
    /// or their sending side was just shut down.
    pending_read: VecDeque<ConnId>,
    /// The listener may have more connections waiting (its accept budget ran out).
    accept_pending: bool,
    /// Accepting is paused until then (after `EMFILE` and friends).
    accept_paused_until: Option<Instant>,
    accept_errors: AcceptErrors,
    /// The graceful shutdown: the loop ends at its deadline at the latest.
    grace: Grace,
    stop: StopHandle,
    signals: Option<UnixStream>,
    /// With `--redis`: the broker of the shared log, which wakes the loop through the waker.
    shared_log: Option<SharedLog>,
}

impl Serve for EventLoop {
    type Stop = StopHandle;

    /// Binds the listener of `cli` and builds the core. Nothing is accepted before
    /// [`run`](EventLoop::run).
    fn bind(cli: Cli) -> io::Result<EventLoop> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let notify = Arc::clone(&waker);
        let shared_log = SharedLog::start(&cli, move || {
            if let Err(e) = notify.wake() {
                eprintln!("parlor-mio: cannot wake the event loop: {e}");
            }
        })?;
        let start = Listening::bind(cli)?;
        let mut listener = TcpListener::from_std(start.listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(EventLoop {
            poll,
            listener: Some(listener),
            local_addr: start.local_addr,
            server: start.server,
            conns: Vec::new(),
            buf: vec![0; READ_BUFFER_BYTES].into_boxed_slice(),
            dirty: Vec::new(),
            held: Vec::new(),
            pending_read: VecDeque::new(),
            accept_pending: false,
            accept_paused_until: None,
            accept_errors: AcceptErrors::new(PROGRAM),
            grace: start.grace,
            stop: StopHandle {
                flag: Arc::new(AtomicBool::new(false)),
                waker,
            },
            signals: None,
            shared_log,
        })
    }

    /// The address the listener is bound to (the real port when asked for port 0).
    fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops the loop gracefully from another thread.
    fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Makes SIGINT and SIGTERM start a graceful shutdown (a second one ends it at once).
    ///
    /// The handlers only write a byte to a socket pair whose other end this loop polls
    /// (signal-hook's self-pipe), so all the work happens in the loop, not in the handler.
    fn handle_signals(&mut self) -> io::Result<()> {
        let (read, write) = std::os::unix::net::UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let mut read = UnixStream::from_std(read);
        self.poll
            .registry()
            .register(&mut read, SIGNALS, Interest::READABLE)?;
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::low_level::pipe::register(signal, write.try_clone()?)?;
        }
        self.signals = Some(read);
        Ok(())
    }

    /// Runs until a graceful shutdown completes: every connection closed, or the shutdown grace
    /// passed. Errors are those of the poll itself; connection errors only close that connection.
    fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut deferral = Deferral::new(Instant::now());
        loop {
            let now = Instant::now();
            // The end of the previous turn: write what it queued, once per connection, unless
            // the loop is busy and may take another turn first (see `parlor_os::Deferral`).
            let defer = deferral.hold(!self.held.is_empty(), now);
            if !defer {
                self.dirty.append(&mut self.held);
            }
            self.flush_dirty(now);
            // Drained: every answer written, nothing unread; peers need not close first.
            if self.grace.is_over(now, self.server.is_drained()) {
                return Ok(());
            }
            let timeout = if self.accept_pending || !self.pending_read.is_empty() {
                Some(Duration::ZERO)
            } else {
                let deadline = [
                    self.server.poll_timeout(),
                    self.accept_paused_until,
                    self.grace.deadline(),
                ]
                .into_iter()
                .flatten()
                .min()
                .map(|t| t.saturating_duration_since(now));
                if defer {
                    Some(deferral.wait(now).min(deadline.unwrap_or(Duration::MAX)))
                } else {
                    deadline
                }
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            if defer {
                let input = !events.is_empty() || !self.pending_read.is_empty();
                deferral.found(input || self.accept_pending);
                if !input && !self.accept_pending {
                    continue; // nothing more arrived: write now
                }
            }

            // Work left over from the previous turn (budgets ran out, reads resumed).
            for _ in 0..self.pending_read.len() {
                if let Some(id) = self.pending_read.pop_front() {
                    self.read(id, now, true);
                }
            }
            if self.accept_paused_until.is_some_and(|t| now >= t) {
                self.accept_paused_until = None;
                self.accept_pending = true;
            }
            if self.accept_pending {
                self.accept(now);
            }

            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
                    WAKER => {
                        // The waker is shared by the stop handle and the broker.
                        if let Some(log) = &self.shared_log {
                            log.pump(&mut self.server, now);
                            self.settle(now);
                        }
                        if self.stop.flag.load(Ordering::SeqCst) {
                            self.begin_shutdown(now, false);
                        }
                    }
                    SIGNALS => self.on_signal(now),
                    Token(key) => {
                        let id = ConnId(key);
                        if event.is_writable() {
                            self.flush(id, now);
                            self.settle(now);
                        }
                        let closed = event.is_read_closed() || event.is_error();
                        if event.is_readable() || closed {
                            self.read(id, now, closed);
                        }
                    }
                }
            }

            if self.server.poll_timeout().is_some_and(|t| t <= now) {
                self.server.handle_timeout(now);
                self.settle(now);
            }
        }
    }
}

impl EventLoop {
    fn on_signal(&mut self, now: Instant) {
        let mut got = 0;
        if let Some(signals) = self.signals.as_mut() {
            let mut bytes = [0u8; 64];
            loop {
                match signals.read(&mut bytes) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break, // WouldBlock: drained
                }
            }
        }
        if got == 0 {
            return; // spurious
        }
        if got > 1 {
            self.grace.stop_now();
        }
        self.begin_shutdown(now, true);
    }

    /// Stops accepting and lets the core answer held polls and close idle connections.
    fn begin_shutdown(&mut self, now: Instant, signal: bool) {
        if !self.grace.begin(now, signal) {
            return;
        }
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.accept_pending = false;
        self.accept_paused_until = None;
        self.server.handle_shutdown(now);
        self.settle(now);
    }

    fn accept(&mut self, now: Instant) {
        self.accept_pending = false;
        if self.accept_paused_until.is_some() {
            return;
        }
        for _ in 0..ACCEPTS_PER_WAKE {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    self.accept_errors.succeeded();
                    self.add_conn(stream, peer, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    if self.accept_errors.failed(&e) == AcceptFailure::Pause {
                        self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                        return;
                    }
                }
            }
        }
        self.accept_pending = true;
    }
}

/// The event loop running in a thread of its own: what tests and embedders start.
pub type Runner = parlor_os::Runner<EventLoop>;
