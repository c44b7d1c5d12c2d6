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
//! * **The core** ([`parlor_core::Server`]) and the connections' mailboxes live in one `Shared`
//!   value behind a `RefCell`: the tasks take turns on one thread and none holds the borrow
//!   across a wait, so that is all the locking there is.
//! * **One task per connection** reads, writes and closes its socket (kept in its mailbox, see
//!   below). It hands what it reads
//!   straight to the core ([`Server::handle_data`], from the thread's one read buffer, no copy,
//!   no channel), drains the core's outputs into the mailboxes and writes its own answer in the
//!   same turn: a request costs no hop to another task. The core sees each read before the task
//!   reads again, so `Output::PauseRead` (which stops reading until `Output::ResumeRead`) takes
//!   effect within one read buffer of the pipeline cap, as in `parlor-mio`. Every write is
//!   reported at once ([`Server::handle_flushed`]): that is how the core tracks unsent bytes and
//!   cuts off a client that stopped reading (`Output::Abort` drops the socket at once). A paused
//!   socket is still checked for a reset (every 100 ms), which frees its slot. When the socket
//!   is gone the task calls [`Server::handle_closed`] and ends.
//! * **The owner** ([`Bound::run`]) keeps the core's deadline ([`Server::poll_timeout`]) on a
//!   [`Timer`] that is reset only when the deadline changes (a connection task that makes it
//!   earlier pokes the owner), registers accepted connections and spawns their tasks, and runs
//!   the graceful shutdown.
//! * **The flusher** (`flush_loop`) wakes the tasks of the event streams that got events: at
//!   once when nothing else came in meanwhile, or, while input keeps coming, after a linger of
//!   up to 100 µs per round, 2 ms at most.
//! * **The acceptor** accepts connections and hands them to the owner (`Event::Accepted`) on a
//!   bounded channel. Accept errors (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`, anything
//!   unexpected) are logged once per episode and pause accepting for [`ACCEPT_PAUSE`]; they
//!   never end or spin the server.
//! * **Signals** (the binary only): SIGINT or SIGTERM becomes `Event::Shutdown`.
//!
//! A flood of input waits in the kernel's socket buffers, not in memory: a task reads only what
//! the core has room for. Each connection's mailbox is the core's outputs for it coalesced into
//! a queue of `Bytes` and three flags, plus the task's waker, kept in a table indexed by the
//! connection's id (no allocation of its own). Routing to it never waits and never fails; what
//! bounds its memory is the core's cap on unsent bytes. A poll's answer to a task that waits with
//! nothing queued is written right there, by whichever task handed the core the input that
//! caused it (a publisher's, in a fan-out): one `send` per held poll and no task to wake, as in
//! `parlor-mio`'s loop; only what the socket does not take at once is left to the task. Anything
//! else routed wakes the task, which runs after the tasks already runnable (the publishers'
//! among them), so everything its mailbox gathered meanwhile leaves in one vectored write. An event stream's events go further: the
//! wake-up is left to the flusher (above), which while the server is busy waits a little longer,
//! so each write carries the events of several publishes (the rule `parlor-mio` follows too:
//! [`Deferral`](parlor_os::Deferral)). A poll's answer is not held back: its client asks again
//! only once it has it.
//!
//! `lib.rs` holds the owner, the shared core, the acceptor and the signals; `connection.rs` the
//! connection task and its mailbox. What both adapters share (the write queue, the accept
//! policy, the program's `main`, the runner) is in `parlor-os`.
//!
//! ## Memory per connection
//! A held poll costs its socket's registration with the reactor, its task (a small hand-written
//! future, `Connection`, with no buffer), its mailbox slot (which holds the socket) and the
//! core's slot. Reads go into one
//! buffer per thread ([`READ_BUFFER_BYTES`](parlor_os::READ_BUFFER_BYTES)) and are handed to the
//! core from there. Waiting for an I/O readiness uses the socket's own waker slot
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
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use parlor_core::{ConnId, Output, Server};
use parlor_os::shared_log::SharedLog;
use parlor_os::{
    AcceptErrors, AcceptFailure, Cli, Deferral, Grace, Listening, Serve, ACCEPT_PAUSE,
};
use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;
use smol::stream::StreamExt;
use smol::{Async, LocalExecutor, Timer};

use connection::{Connection, Mailbox};

const PROGRAM: &str = "parlor-smol";
/// Capacity of the channel from the acceptor and the signals to the owner.
const EVENT_CAPACITY: usize = 256;
/// Events the owner handles in a row before it checks its timers.
const EVENTS_PER_TURN: u32 = 256;

/// What the acceptor and the signals tell the owner.
#[derive(Debug)]
enum Event {
    /// The acceptor has a new connection.
    Accepted {
        stream: Async<TcpStream>,
        peer: SocketAddr,
    },
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
    /// With `--redis`: the broker of the shared log, and the channel its notifications arrive
    /// on (capacity one: a wake-up already waiting covers the next).
    shared_log: Option<(SharedLog, Receiver<()>)>,
}

impl Serve for Bound {
    type Stop = StopHandle;

    /// Binds the listener of `cli` and builds the core. Nothing is accepted before
    /// [`run`](Bound::run).
    fn bind(cli: Cli) -> io::Result<Bound> {
        let (wake, woken) = smol::channel::bounded(1);
        let shared_log = SharedLog::start(&cli, move || {
            let _ = wake.try_send(());
        })?
        .map(|log| (log, woken));
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
            shared_log,
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
            shared_log,
            ..
        } = self;
        let (shared_log, broker_woken) = match shared_log {
            Some((log, woken)) => (Some(log), Some(woken)),
            None => (None, None),
        };
        let mut acceptor = Some(executor.spawn(accept_loop(listener, events.clone())));
        if let Some(signals) = signals {
            executor
                .spawn(signal_loop(signals, events.clone()))
                .detach();
        }
        let shared = Rc::new(Shared {
            core: RefCell::new(Core::new(server, shared_log)),
        });
        executor.spawn(flush_loop(shared.clone())).detach();

        let mut timer = Timer::never();
        let mut grace_timer = Timer::never();

        loop {
            {
                let mut core = shared.core.borrow_mut();
                // Drained: every answer written, nothing unread; peers need not close first.
                // (Asked only during a shutdown: it looks at every connection.)
                let drained = core.shutting_down && core.server.is_drained();
                if grace.is_over(Instant::now(), drained) {
                    return Ok(());
                }
                let next = core.server.poll_timeout();
                if next != core.armed {
                    match next {
                        Some(at) => timer.set_at(at),
                        None => timer = Timer::never(),
                    }
                    core.armed = next;
                }
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
                .or(std::future::poll_fn(|cx| shared.poked(cx)))
                .or(async {
                    match &broker_woken {
                        Some(woken) if woken.recv().await.is_ok() => Wake::Broker,
                        _ => std::future::pending().await,
                    }
                })
                .await;
            let mut next = match wake {
                Wake::Event(Some(event)) => Some(event),
                // Every sender is gone: cannot happen while `events` lives.
                Wake::Event(None) => return Ok(()),
                // A fired timer never fires again until it is set again.
                Wake::Timer => {
                    shared.core.borrow_mut().armed = None;
                    None
                }
                // While shutting down, look again every few ms (see `is_drained`): the
                // connection tasks report their writes to the core as they make them.
                Wake::Grace => {
                    let now = Instant::now();
                    grace_timer.set_at((now + DRAIN_CHECK).min(grace.deadline().unwrap_or(now)));
                    None
                }
                Wake::Poked => None,
                Wake::Broker => {
                    shared.core.borrow_mut().pump_broker(Instant::now());
                    None
                }
            };
            // Take what else is waiting, a bounded batch per turn, before looking at the timers.
            let mut budget = EVENTS_PER_TURN;
            while let Some(event) = next.take() {
                // Read the clock per input: the connection tasks read it too, and they run at
                // every wait (the core insists time never goes backwards).
                let now = Instant::now();
                match event {
                    Event::Shutdown { signal } => {
                        if grace.begin(now, signal) {
                            // Stop accepting: the listener closes with its task.
                            if let Some(task) = acceptor.take() {
                                task.cancel().await;
                            }
                            let now = Instant::now();
                            if let Some(deadline) = grace.deadline() {
                                grace_timer.set_at((now + DRAIN_CHECK).min(deadline));
                            }
                            let mut core = shared.core.borrow_mut();
                            core.shutting_down = true;
                            core.server.handle_shutdown(now);
                            core.settle();
                        }
                    }
                    Event::Accepted { stream, peer } => {
                        let id = shared.core.borrow_mut().accept(stream, peer, now);
                        executor.spawn(Connection::new(id, shared.clone())).detach();
                    }
                }
                budget -= 1;
                if budget > 0 {
                    next = inbox.try_recv().ok();
                }
            }
            let mut core = shared.core.borrow_mut();
            let now = Instant::now();
            if core.server.poll_timeout().is_some_and(|t| t <= now) {
                core.server.handle_timeout(now);
                core.settle();
            }
        }
    }
}

/// How often a shutdown looks at whether the core is drained, to exit once it is.
const DRAIN_CHECK: std::time::Duration = std::time::Duration::from_millis(5);

/// Why the owner woke up.
enum Wake {
    Event(Option<Event>),
    Timer,
    Grace,
    /// A connection task made the core's next deadline earlier than the timer, or closed a
    /// connection during a shutdown.
    Poked,
    /// The broker has events waiting.
    Broker,
}

/// What all the tasks of the thread share. They take turns on one thread, and none holds the
/// borrow across a wait, so a `RefCell` is all the locking there is.
struct Shared {
    core: RefCell<Core>,
}

impl Shared {
    /// [`flush_loop`]'s wait for held-back wake-ups.
    fn held(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut core = self.core.borrow_mut();
        if !core.held.is_empty() {
            return Poll::Ready(());
        }
        if !core
            .flusher
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            core.flusher = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// The owner's wait for a poke from a connection task.
    fn poked(&self, cx: &mut Context<'_>) -> Poll<Wake> {
        let mut core = self.core.borrow_mut();
        if std::mem::take(&mut core.poked) {
            return Poll::Ready(Wake::Poked);
        }
        if !core.owner.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            core.owner = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// The core and the mailboxes of its connections. The connection tasks hand it their inputs
/// directly (no channel, no hop through the owner task); the owner task keeps the timers and
/// accepts.
struct Core {
    server: Server,
    /// Indexed by `ConnId.0` (the core's slab keys are small and dense).
    mailboxes: Vec<Option<Mailbox>>,
    /// The deadline the owner's timer is set to.
    armed: Option<Instant>,
    /// The owner has something to look at (see [`Wake::Poked`]).
    poked: bool,
    /// The owner task, while it waits.
    owner: Option<Waker>,
    /// A graceful shutdown has begun: the owner counts the connections as they close.
    shutting_down: bool,
    /// With `--redis`: the broker of the shared log.
    shared_log: Option<SharedLog>,
    /// Event streams' tasks whose mailboxes got events, not woken yet: [`flush_loop`] wakes
    /// them when the server is not busy.
    held: Vec<Waker>,
    /// [`flush_loop`], while it waits for `held` to fill.
    flusher: Option<Waker>,
    /// Reads handed to the core so far: more of them while bytes are held back means busy.
    inputs: u64,
    /// `inputs` when the bytes now held back began to be.
    held_inputs: u64,
}

impl Core {
    fn new(server: Server, shared_log: Option<SharedLog>) -> Core {
        Core {
            server,
            mailboxes: Vec::new(),
            armed: None,
            poked: false,
            owner: None,
            shutting_down: false,
            shared_log,
            held: Vec::new(),
            flusher: None,
            inputs: 0,
            held_inputs: 0,
        }
    }

    /// Feeds the broker's events to the core, then carries out what they caused.
    fn pump_broker(&mut self, now: Instant) {
        if let Some(log) = &self.shared_log {
            log.pump(&mut self.server, now);
        }
        self.settle();
    }

    /// Registers a new connection with the core and gives it a mailbox (which keeps its socket).
    fn accept(&mut self, stream: Async<TcpStream>, peer: SocketAddr, now: Instant) -> ConnId {
        let id = self.server.handle_accept(peer.ip(), now);
        if self.mailboxes.len() <= id.0 {
            self.mailboxes.resize_with(id.0 + 1, || None);
        }
        debug_assert!(self.mailboxes[id.0].is_none(), "the core reused a live id");
        self.mailboxes[id.0] = Some(Mailbox::new(stream));
        // Over the connection caps the core has a 503 and a Close ready.
        self.settle();
        id
    }

    /// Bytes arrived on `id`.
    fn handle_data(&mut self, id: ConnId, data: &[u8]) {
        self.inputs += 1;
        let result = self.server.handle_data(id, data, Instant::now());
        self.after(result);
    }

    /// The peer of `id` closed its sending side.
    fn handle_eof(&mut self, id: ConnId) {
        let result = self.server.handle_eof(id, Instant::now());
        self.after(result);
    }

    /// The socket of `id` is closed; its task has ended.
    fn handle_closed(&mut self, id: ConnId) {
        if let Some(slot) = self.mailboxes.get_mut(id.0) {
            *slot = None;
        }
        let result = self.server.handle_closed(id, Instant::now());
        self.after(result);
        if self.shutting_down {
            self.poke();
        }
    }

    /// After an input from a connection task: route the outputs, and wake the owner if the
    /// core's next deadline is now earlier than its timer.
    fn after(&mut self, result: Result<(), parlor_core::Error>) {
        parlor_os::report_adapter_bug(PROGRAM, result);
        self.settle();
        if let Some(next) = self.server.poll_timeout() {
            if self.armed.map_or(true, |armed| next < armed) {
                self.poke();
            }
        }
    }

    fn poke(&mut self) {
        self.poked = true;
        if let Some(owner) = self.owner.take() {
            owner.wake();
        }
    }

    /// Drains the core's outputs into the connections' mailboxes.
    fn settle(&mut self) {
        if let Some(log) = &self.shared_log {
            log.submit(&mut self.server);
        }
        while let Some(output) = self.server.poll_output() {
            // None only when the task has ended and told the core.
            let id = output.conn();
            // A stream's events may wait while the server is busy; an answer is awaited (see
            // `Server::is_streaming`).
            let events = matches!(output, Output::Send { .. }) && self.server.is_streaming(id);
            let Some(mailbox) = self.mailboxes.get_mut(id.0).and_then(Option::as_mut) else {
                continue;
            };
            // A poll's answer is written at once when its task waits ([`Mailbox::send_now`]);
            // anything else goes to the mailbox, and waking only schedules the task: no task
            // runs inside another.
            let waker = match output {
                Output::Send { data, .. } if !events => {
                    mailbox.send_now(id, data, &mut self.server)
                }
                output => mailbox.deliver(output),
            };
            match waker {
                Some(waker) if events => self.hold(waker),
                Some(waker) => waker.wake(),
                None => {}
            }
        }
    }

    /// Holds back the wake-up of a stream's task that got events, for [`flush_loop`].
    fn hold(&mut self, waker: Waker) {
        if self.held.is_empty() {
            self.held_inputs = self.inputs;
            if let Some(flusher) = self.flusher.take() {
                flusher.wake();
            }
        }
        self.held.push(waker);
    }
}

/// Wakes the event streams' tasks whose mailboxes got events, by the rule both servers follow
/// ([`Deferral`]): it runs after the tasks already runnable (the
/// publishers' among them), and if they handed the core more input meanwhile, the server is
/// busy and the wake-ups wait a little longer (a [`Timer`] of up to [`LINGER`](parlor_os::LINGER)
/// per round, 2 ms in all at most) while input keeps coming, so that each stream's task writes
/// several publishes' events at once.
async fn flush_loop(shared: Rc<Shared>) {
    let mut deferral = Deferral::new(Instant::now());
    let mut wake = Vec::new();
    loop {
        std::future::poll_fn(|cx| shared.held(cx)).await;
        let mut seen = shared.core.borrow().held_inputs;
        while deferral.hold(true, Instant::now()) {
            let wait = deferral.wait(Instant::now());
            if !wait.is_zero() {
                Timer::after(wait).await;
            }
            let inputs = shared.core.borrow().inputs;
            deferral.found(inputs != seen);
            seen = inputs;
        }
        // Keep both allocations for the next round.
        std::mem::swap(&mut wake, &mut shared.core.borrow_mut().held);
        for waker in wake.drain(..) {
            waker.wake();
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
