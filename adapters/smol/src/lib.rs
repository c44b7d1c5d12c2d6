//! # parlor-smol
//!
//! Parlor's second server: [`parlor_core::Server`] driven by smol tasks on one thread. Like
//! `parlor-mio`, this crate only moves bytes and time; the core does all the thinking, so both
//! servers answer byte for byte the same.
//!
//! ## Tasks
//! Everything runs on one [`LocalExecutor`] inside [`smol::block_on`] (the core has one owner
//! anyway, so more threads would only add locking):
//!
//! * **The owner** ([`Bound::run`]) owns the `Server`: no lock guards it. It waits for the next
//!   `Event` on one bounded channel, or for the core's next deadline
//!   ([`Server::poll_timeout`]) on a [`Timer`] that is reset only when the deadline changes, or
//!   for the end of the shutdown grace. After **every** input it drains
//!   [`Server::poll_output`] and routes each output to its connection's mailbox. It never
//!   waits on anything else, so it never blocks on a slow client.
//! * **The acceptor** accepts connections and hands them to the owner (`Event::Accepted`);
//!   the owner registers them with the core and spawns their connection tasks. Accept errors
//!   (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`, anything unexpected) are logged once per episode
//!   and pause accepting for [`ACCEPT_PAUSE`]; they never end or spin the server.
//! * **One task per connection** reads, writes and closes its socket. It sends what arrives to
//!   the owner (`Event::Data`, `Event::Eof`), writes what the owner routes to it
//!   (`Output::Send`, in order, one vectored write per burst), and logs every write for the
//!   owner, who reports it ([`Server::handle_flushed`]) before its next input to the core: that
//!   is how the core tracks unsent bytes and cuts off a client that stopped reading
//!   (`Output::Abort` drops the socket at once). A task reads again only once the owner has
//!   handed its last `Event::Data` to the core, so `Output::PauseRead` (which stops reading
//!   until `Output::ResumeRead`) takes effect within one read buffer of the pipeline cap, as in
//!   `parlor-mio`. A paused socket is still checked for a reset (every 100 ms), which frees
//!   its slot. When the socket is gone it sends `Event::Closed`, its
//!   last event, and the owner calls [`Server::handle_closed`].
//! * **Signals** (the binary only): SIGINT or SIGTERM becomes `Event::Shutdown`.
//!
//! The connection tasks send on the bounded event channel, so a flood of input waits in the
//! kernel's socket buffers instead of in memory. The owner's side of each connection is its
//! mailbox: the core's outputs for it coalesced into a queue of `Bytes` and three flags, plus
//! the task's waker. Routing to it never waits and never fails; what bounds its memory is the
//! core's cap on unsent bytes. (All tasks share one thread, so the mailbox is a `RefCell` behind
//! an `Rc`: a general channel per connection would cost a held poll several hundred bytes more.)
//!
//! `lib.rs` holds the owner, the acceptor and the signals; `connection.rs` the connection task
//! and its mailbox. What both adapters share (the write queue, the accept policy, the program's
//! `main`, the runner) is in `parlor-os`.
//!
//! ## Memory per connection
//! A held poll costs its socket's registration with the reactor, its task (a small hand-written
//! future, `Connection`, with no buffer), its mailbox and the core's slot. Reads go into one
//! buffer per thread ([`READ_BUFFER_BYTES`](parlor_os::READ_BUFFER_BYTES)) and only the bytes actually read are copied into
//! the event for the owner. Waiting for an I/O readiness uses the socket's own waker slot
//! (`poll_readable`-style), not a registration that allocates.
//!
//! ## Closing
//! A connection that the core closes (`Output::Close`) is flushed, then its sending side is shut
//! down and what the peer still sends is read and discarded until it closes too (so unread bytes
//! do not make the kernel reset the connection under the response in flight). The core's closing
//! deadline turns a peer that never closes into an `Output::Abort`. This is what `parlor-mio`
//! does too.
//!
//! ## Use
//! The binary is `parlor-smol` ([`parlor_os::main_entry`]). Tests and embedders start the same server in a
//! thread with [`Runner::start`] (port 0 is fine; [`Runner::local_addr`] has the real one) and
//! stop it with [`Runner::shutdown`], which performs the same graceful shutdown as SIGTERM.

use std::cell::RefCell;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::time::Instant;

use parlor_core::{ConnId, Server};
use parlor_os::{AcceptErrors, AcceptFailure, Cli, Grace, Listening, Serve, ACCEPT_PAUSE};
use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;
use smol::stream::StreamExt;
use smol::{Async, LocalExecutor, Timer};

use connection::{Connection, Mailbox};

const PROGRAM: &str = "parlor-smol";
/// Capacity of the channel from the connection tasks to the owner. A connection has at most one
/// `Event::Data` that the core has not seen (in the channel, or in hand when the channel is
/// full), so bytes read but not yet handled stay below connections x [`READ_BUFFER_BYTES`](parlor_os::READ_BUFFER_BYTES).
const EVENT_CAPACITY: usize = 256;
/// Events the owner handles in a row before it checks its timers.
const EVENTS_PER_TURN: u32 = 256;

/// What the other tasks tell the owner.
#[derive(Debug)]
enum Event {
    /// The acceptor has a new connection.
    Accepted {
        stream: Async<TcpStream>,
        peer: SocketAddr,
    },
    /// Bytes arrived on a connection.
    Data(ConnId, Vec<u8>),
    /// The peer closed its sending side.
    Eof(ConnId),
    /// The connection's socket is closed; its task has ended. Always its last event.
    Closed(ConnId),
    /// Start a graceful shutdown; `signal` says it came from SIGINT/SIGTERM (a second signal
    /// during a shutdown ends it at once).
    Shutdown { signal: bool },
}

/// Stops a running server from another thread, gracefully (like SIGTERM).
#[derive(Clone, Debug)]
pub struct StopHandle {
    events: Sender<Event>,
}

impl parlor_os::Stop for StopHandle {
    /// Asks the server to shut down gracefully; it returns from [`Bound::run`] once its
    /// connections are closed or the shutdown grace has passed. Call it from another thread than
    /// the server's (it may wait for room in the server's event channel).
    fn stop(&self) {
        // Fails only when the server has already ended.
        let _ = self.events.send_blocking(Event::Shutdown { signal: false });
    }
}

/// The bound server, ready to [`run`](Bound::run).
pub struct Bound {
    listener: Async<TcpListener>,
    local_addr: SocketAddr,
    server: Server,
    grace: Grace,
    events: Sender<Event>,
    inbox: Receiver<Event>,
    signals: Option<async_signal::Signals>,
}

impl Serve for Bound {
    type Stop = StopHandle;

    /// Binds the listener of `cli` and builds the core. Nothing is accepted before
    /// [`run`](Bound::run).
    fn bind(cli: Cli) -> io::Result<Bound> {
        let start = Listening::bind(cli)?;
        let (events, inbox) = smol::channel::bounded(EVENT_CAPACITY);
        Ok(Bound {
            listener: Async::new(start.listener)?,
            local_addr: start.local_addr,
            server: start.server,
            grace: start.grace,
            events,
            inbox,
            signals: None,
        })
    }

    /// The address the listener is bound to (the real port when asked for port 0).
    fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops the server gracefully from another thread.
    fn stop_handle(&self) -> StopHandle {
        StopHandle {
            events: self.events.clone(),
        }
    }

    /// Makes SIGINT and SIGTERM start a graceful shutdown (a second one ends it at once).
    fn handle_signals(&mut self) -> io::Result<()> {
        use async_signal::{Signal, Signals};
        self.signals = Some(Signals::new([Signal::Int, Signal::Term])?);
        Ok(())
    }

    /// Runs until a graceful shutdown completes: every connection closed, or the shutdown grace
    /// passed. Connection errors only close that connection.
    fn run(self) -> io::Result<()> {
        let executor = LocalExecutor::new();
        smol::block_on(executor.run(self.serve(&executor)))
    }
}

impl Bound {
    /// The owner task.
    async fn serve(self, executor: &LocalExecutor<'_>) -> io::Result<()> {
        let Bound {
            listener,
            server,
            mut grace,
            events,
            inbox,
            signals,
            ..
        } = self;
        let mut acceptor = Some(executor.spawn(accept_loop(listener, events.clone())));
        if let Some(signals) = signals {
            executor
                .spawn(signal_loop(signals, events.clone()))
                .detach();
        }
        let mut owner = Owner {
            server,
            mailboxes: Vec::new(),
            flushed: Rc::default(),
            events,
        };

        // The core's deadline, and the one the timer is set to.
        let mut timer = Timer::never();
        let mut armed: Option<Instant> = None;
        let mut grace_timer = Timer::never();

        loop {
            // Drained: every answer written, nothing unread; peers need not close first.
            if grace.is_over(Instant::now(), owner.server.is_drained()) {
                return Ok(());
            }
            let next = owner.server.poll_timeout();
            if next != armed {
                match next {
                    Some(at) => timer.set_at(at),
                    None => timer = Timer::never(),
                }
                armed = next;
            }

            let wake = async { Wake::Event(inbox.recv().await.ok()) }
                .or(async {
                    (&mut timer).await;
                    Wake::Timer
                })
                .or(async {
                    (&mut grace_timer).await;
                    Wake::Grace
                })
                .await;
            let now = Instant::now();
            let mut next = match wake {
                Wake::Event(Some(event)) => Some(event),
                // Every sender is gone: cannot happen while `owner.events` lives.
                Wake::Event(None) => return Ok(()),
                // A fired timer never fires again until it is set again.
                Wake::Timer => {
                    armed = None;
                    None
                }
                // While shutting down, collect what was written every few ms (see `is_drained`).
                Wake::Grace => {
                    owner.take_flushed(now);
                    grace_timer.set_at((now + DRAIN_CHECK).min(grace.deadline().unwrap_or(now)));
                    None
                }
            };
            // Take what else is waiting, a bounded batch per turn, before looking at the timers.
            let mut budget = EVENTS_PER_TURN;
            while let Some(event) = next.take() {
                owner.take_flushed(now);
                match event {
                    Event::Shutdown { signal } => {
                        if grace.begin(now, signal) {
                            // Stop accepting: the listener closes with its task.
                            if let Some(task) = acceptor.take() {
                                task.cancel().await;
                            }
                            if let Some(deadline) = grace.deadline() {
                                grace_timer.set_at((now + DRAIN_CHECK).min(deadline));
                            }
                            owner.server.handle_shutdown(now);
                            owner.settle();
                        }
                    }
                    Event::Accepted { stream, peer } => owner.accept(executor, stream, peer, now),
                    event => owner.handle(event, now),
                }
                budget -= 1;
                if budget > 0 {
                    next = inbox.try_recv().ok();
                }
            }
            if owner.server.poll_timeout().is_some_and(|t| t <= now) {
                owner.take_flushed(now);
                owner.server.handle_timeout(now);
                owner.settle();
            }
        }
    }
}

/// How often a shutdown looks at what the connection tasks wrote, to exit once drained.
const DRAIN_CHECK: std::time::Duration = std::time::Duration::from_millis(5);

/// Why the owner woke up.
enum Wake {
    Event(Option<Event>),
    Timer,
    Grace,
}

/// The core and the mailboxes of its connections.
struct Owner {
    server: Server,
    /// Indexed by `ConnId.0` (the core's slab keys are small and dense).
    mailboxes: Vec<Option<Rc<RefCell<Mailbox>>>>,
    /// What the connection tasks wrote since the owner last looked.
    flushed: Rc<FlushLog>,
    events: Sender<Event>,
}

/// Bytes written by the connection tasks, by connection, oldest first: the owner passes them to
/// [`Server::handle_flushed`] before its next input to the core, so the core's count of unsent
/// bytes is exact whenever it decides anything. (A write needs no decision of the core, so it
/// is not an event: a fan-out to 10,000 connections would otherwise be 10,000 more events.)
type FlushLog = RefCell<Vec<(ConnId, usize)>>;

impl Owner {
    /// Tells the core what the connection tasks wrote. Call before every input to the core.
    fn take_flushed(&mut self, now: Instant) {
        let mut log = self.flushed.borrow_mut();
        for &(id, n) in log.iter() {
            parlor_os::report_adapter_bug(PROGRAM, self.server.handle_flushed(id, n, now));
        }
        log.clear();
    }

    fn accept(
        &mut self,
        executor: &LocalExecutor<'_>,
        stream: Async<TcpStream>,
        peer: SocketAddr,
        now: Instant,
    ) {
        let id = self.server.handle_accept(peer.ip(), now);
        let mailbox = Rc::new(RefCell::new(Mailbox::default()));
        if self.mailboxes.len() <= id.0 {
            self.mailboxes.resize_with(id.0 + 1, || None);
        }
        debug_assert!(self.mailboxes[id.0].is_none(), "the core reused a live id");
        self.mailboxes[id.0] = Some(mailbox.clone());
        executor
            .spawn(Connection::new(
                id,
                stream,
                mailbox,
                self.flushed.clone(),
                self.events.clone(),
            ))
            .detach();
        // Over the connection caps the core has a 503 and a Close ready.
        self.settle();
    }

    fn handle(&mut self, event: Event, now: Instant) {
        let result = match event {
            Event::Data(id, data) => {
                let result = self.server.handle_data(id, &data, now);
                // The core has seen these bytes (and paused reading if they passed the pipeline
                // cap, in the outputs settled below): the task may read again.
                if let Some(mailbox) = self.mailboxes.get(id.0).and_then(Option::as_ref) {
                    mailbox.borrow_mut().data_taken();
                }
                result
            }
            Event::Eof(id) => self.server.handle_eof(id, now),
            Event::Closed(id) => {
                if let Some(slot) = self.mailboxes.get_mut(id.0) {
                    *slot = None;
                }
                self.server.handle_closed(id, now)
            }
            Event::Accepted { .. } | Event::Shutdown { .. } => Ok(()),
        };
        parlor_os::report_adapter_bug(PROGRAM, result);
        self.settle();
    }

    /// Drains the core's outputs into the connections' mailboxes.
    fn settle(&mut self) {
        while let Some(output) = self.server.poll_output() {
            // None only when the task has ended and its `Closed` event was handled.
            if let Some(mailbox) = self.mailboxes.get(output.conn().0).and_then(Option::as_ref) {
                mailbox.borrow_mut().deliver(output);
            }
        }
    }
}

/// Accepts connections until cancelled, pausing after errors instead of spinning.
async fn accept_loop(listener: Async<TcpListener>, events: Sender<Event>) {
    let mut errors = AcceptErrors::new(PROGRAM);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                errors.succeeded();
                // Responses are whole buffers written at once: coalescing only adds delay.
                let _ = stream.get_ref().set_nodelay(true);
                if events.send(Event::Accepted { stream, peer }).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                if errors.failed(&e) == AcceptFailure::Pause {
                    Timer::after(ACCEPT_PAUSE).await;
                }
            }
        }
    }
}

/// Turns SIGINT/SIGTERM into shutdown events.
async fn signal_loop(mut signals: async_signal::Signals, events: Sender<Event>) {
    while let Some(signal) = signals.next().await {
        if signal.is_ok() && events.send(Event::Shutdown { signal: true }).await.is_err() {
            return;
        }
    }
}

/// The server running in a thread of its own: what tests and embedders start.
pub type Runner = parlor_os::Runner<Bound>;

mod connection;
#[cfg(test)]
mod tests;
