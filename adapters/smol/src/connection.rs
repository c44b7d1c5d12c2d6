//! One connection task ([`Connection`]): reads what arrives and hands it to the core, writes
//! what the core routes to its [`Mailbox`], closes when told. See the crate docs for how it fits
//! with the owner.

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, IoSlice, Write};
use std::net::{Shutdown, TcpStream};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parlor_core::{ConnId, Output, Server};
use parlor_os::{Flushed, WriteQueue, READ_BUFFER_BYTES};
use smol::io::{AsyncRead, AsyncWrite};
use smol::stream::Stream;
use smol::{Async, Timer};

use crate::{Shared, PROGRAM};

/// How often a connection whose reading is paused is checked for a reset.
const WATCH_PAUSED: Duration = Duration::from_millis(100);
/// Reads discarded in one turn of a closing connection before the others get theirs.
const DISCARDS_PER_TURN: u32 = 4;
/// Reads a connection task hands to the core in a row before it yields to the other tasks.
const TURNS_BEFORE_YIELD: u32 = 16;

/// What the core has for one connection task, kept in the shared state's table (no allocation
/// of its own): the socket, the core's outputs for it coalesced (bytes in order, flags), and the
/// task's waker. A held connection's mailbox is a few words.
///
/// The socket lives here rather than in the task so that a poll's answer can be written the
/// moment the core routes it ([`Mailbox::send_now`]), without waking the task.
pub(crate) struct Mailbox {
    /// The connection's socket; dropped (closed) with the mailbox, once the task has ended.
    stream: Async<TcpStream>,
    /// Bytes to write.
    queue: WriteQueue,
    /// `Output::Close`: close once `queue` is written.
    close: bool,
    /// `Output::Abort`: close now.
    abort: bool,
    /// `Output::PauseRead` (until `Output::ResumeRead`).
    paused: bool,
    /// The connection task, waiting for something to do.
    waker: Option<Waker>,
}

impl Mailbox {
    pub(crate) fn new(stream: Async<TcpStream>) -> Mailbox {
        Mailbox {
            stream,
            queue: WriteQueue::default(),
            close: false,
            abort: false,
            paused: false,
            waker: None,
        }
    }

    /// Takes one output of the core for this connection. Returns the task's waker when it
    /// waits for something to do (none while it runs: it looks at its mailbox again before it
    /// waits); the caller wakes it, now or, for bytes, once the server is no longer busy.
    pub(crate) fn deliver(&mut self, output: Output) -> Option<Waker> {
        match output {
            Output::Send { data, .. } => self.queue.push(data),
            Output::Close { .. } => self.close = true,
            Output::Abort { .. } => self.abort = true,
            Output::PauseRead { .. } => self.paused = true,
            Output::ResumeRead { .. } => self.paused = false,
        }
        self.waker.take()
    }

    /// Whether the task waits with nothing queued for it.
    #[cfg(test)]
    pub(crate) fn is_idle(&self) -> bool {
        self.waker.is_some() && self.queue.is_empty()
    }

    /// Takes bytes for the connection (a poll's answer: not a stream's events, which may wait)
    /// and, when its task waits with nothing queued, writes them at once: in a fan-out each
    /// held poll's answer then costs one `send` and no task to wake and run. Returns the task's
    /// waker only when the task must take over: bytes are left (the socket is full), the socket
    /// failed, or the task was not waiting in the first place (see [`Mailbox::deliver`]).
    pub(crate) fn send_now(
        &mut self,
        id: ConnId,
        data: Bytes,
        server: &mut Server,
    ) -> Option<Waker> {
        if self.waker.is_none() || !self.queue.is_empty() || self.close || self.abort {
            return self.deliver(Output::Send { conn: id, data });
        }
        self.queue.push(data);
        let stream = self.stream.get_ref();
        let (written, outcome) = self
            .queue
            .write_with(|slices| Some(write_slices(stream, slices)));
        if written > 0 {
            // The core counts unsent bytes with this (it never produces outputs).
            let result = server.handle_flushed(id, written, Instant::now());
            parlor_os::report_adapter_bug(PROGRAM, result);
        }
        match outcome {
            Flushed::All => None,
            Flushed::Blocked | Flushed::Failed => self.waker.take(),
        }
    }
}

/// One write of `slices`: one buffer (the common case) goes out with `send`, which the kernel
/// takes faster than a one-element `writev`.
fn write_slices(mut stream: &TcpStream, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    match slices {
        [one] => stream.write(one),
        _ => stream.write_vectored(slices),
    }
}

/// A connection task's own state.
struct ConnIo {
    /// A read returned 0: the peer will send nothing more.
    eof: bool,
    /// The socket may have bytes to read: false after a read found none, until the reactor
    /// reports it readable again. Saves a read that would fail on every turn that only writes
    /// (a fan-out turn, above all).
    may_read: bool,
    /// Everything was written after `Close` and our sending side is shut down: reading only to
    /// see the peer close.
    write_shut: bool,
    /// While reading is paused: the timer on which the socket is checked for a reset (allocated
    /// only then).
    watch: Option<Box<Timer>>,
}

/// What a connection task does next.
enum Step {
    /// The first `n` bytes of [`READ_BUFFER`] arrived: hand them to the core.
    Data(usize),
    /// The peer closed its sending side.
    Eof,
    /// The connection is done: drop the socket, tell the core.
    Done,
}

/// Reads, writes or closes until there is something to report, or nothing to do.
fn poll_step(
    id: ConnId,
    io: &mut ConnIo,
    m: &mut Mailbox,
    server: &mut Server,
    cx: &mut Context<'_>,
) -> Poll<Step> {
    let mut stream = &m.stream;
    if m.abort {
        return Poll::Ready(Step::Done);
    }

    // Write what is queued, one vectored write per burst, until done or the socket is full. One
    // buffer (the common case) goes out with `send`, which the kernel takes faster than a
    // one-element `writev`.
    let (written, outcome) = m.queue.write_with(|slices: &[IoSlice<'_>]| {
        let stream = Pin::new(&mut stream);
        let written = match slices {
            [one] => stream.poll_write(cx, one),
            _ => stream.poll_write_vectored(cx, slices),
        };
        match written {
            Poll::Ready(result) => Some(result),
            Poll::Pending => None,
        }
    });
    if written > 0 {
        // The core counts unsent bytes with this (it never produces outputs).
        let result = server.handle_flushed(id, written, Instant::now());
        parlor_os::report_adapter_bug(PROGRAM, result);
    }
    if outcome == Flushed::Failed {
        return Poll::Ready(Step::Done);
    }

    if m.close && m.queue.is_empty() && !io.write_shut {
        if io.eof {
            return Poll::Ready(Step::Done); // the peer is gone already: nothing to wait for
        }
        // Send FIN, then wait for the peer's, discarding what it still sends, so unread bytes
        // do not make the kernel reset the connection under the response in flight.
        if m.stream.get_ref().shutdown(Shutdown::Write).is_err() {
            return Poll::Ready(Step::Done);
        }
        io.write_shut = true;
    }

    // Read while not paused (and always after Close, to discard until the peer's FIN).
    let mut discarded = 0;
    while !io.eof && (!m.paused || m.close) {
        if !io.may_read {
            match m.stream.poll_readable(cx) {
                Poll::Ready(Ok(())) => io.may_read = true,
                Poll::Ready(Err(_)) => return Poll::Ready(Step::Done),
                Poll::Pending => break,
            }
        }
        let read =
            READ_BUFFER.with_borrow_mut(|buf| match Pin::new(&mut stream).poll_read(cx, buf) {
                Poll::Ready(Ok(n)) => Poll::Ready(Ok((n > 0).then_some(n))),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            });
        match read {
            Poll::Ready(Err(_)) => return Poll::Ready(Step::Done),
            Poll::Ready(Ok(None)) => {
                io.eof = true;
                if !m.close {
                    m.waker = None; // polled again right after: what the core says needs no wake
                    return Poll::Ready(Step::Eof);
                }
            }
            // The caller hands the bytes to the core before this loop runs again, so the core
            // decides on every read before the next one (a `PauseRead` past the pipeline cap
            // stops reading within one read buffer, as with `parlor-mio`).
            Poll::Ready(Ok(Some(n))) if !m.close => {
                m.waker = None; // polled again right after: what the core says needs no wake
                return Poll::Ready(Step::Data(n));
            }
            // After Close the core is done with this connection: discard, a bounded amount per
            // turn so a peer that keeps sending cannot hold the thread.
            Poll::Ready(Ok(Some(_))) => {
                discarded += 1;
                if discarded == DISCARDS_PER_TURN {
                    cx.waker().wake_by_ref();
                    break;
                }
            }
            Poll::Pending => {
                io.may_read = false;
                break;
            }
        }
    }
    if io.write_shut && io.eof {
        return Poll::Ready(Step::Done);
    }
    if m.paused && !m.close && !io.eof {
        if watch_paused(io, &m.stream, cx) {
            return Poll::Ready(Step::Done);
        }
    } else {
        io.watch = None;
    }
    if !m.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        m.waker = Some(cx.waker().clone());
    }
    Poll::Pending
}

/// Watches a connection whose reading is paused: `true` once its socket has an error (a reset
/// above all), so the slot is freed now rather than at the connection's next deadline.
/// Readiness cannot be waited on here (the unread bytes behind the pause make it fire at once,
/// again and again), so the error is checked every [`WATCH_PAUSED`] instead.
fn watch_paused(io: &mut ConnIo, stream: &Async<TcpStream>, cx: &mut Context<'_>) -> bool {
    if has_error(stream) {
        return true;
    }
    let watch = io
        .watch
        .get_or_insert_with(|| Box::new(Timer::interval(WATCH_PAUSED)));
    while let Poll::Ready(Some(_)) = Pin::new(&mut **watch).poll_next(cx) {
        if has_error(stream) {
            return true;
        }
    }
    false
}

/// Whether the socket has a pending error (`SO_ERROR`), e.g. `ECONNRESET` after a reset.
fn has_error(stream: &Async<TcpStream>) -> bool {
    !matches!(stream.get_ref().take_error(), Ok(None))
}

/// One connection task: reads what arrives and hands it to the core itself, writes what the
/// core routes to its mailbox, closes when told, and tells the core when the socket is gone.
///
/// Written out as a future rather than an `async fn` so that a waiting connection (a held poll
/// above all) costs exactly these fields.
pub(crate) struct Connection {
    id: ConnId,
    /// `None` once the socket is dropped.
    io: Option<ConnIo>,
    shared: Rc<Shared>,
    /// Reads handed to the core since the task last let the others run.
    turns: u32,
}

impl Connection {
    pub(crate) fn new(id: ConnId, shared: Rc<Shared>) -> Connection {
        Connection {
            id,
            io: Some(ConnIo {
                eof: false,
                may_read: true,
                write_shut: false,
                watch: None,
            }),
            shared,
            turns: 0,
        }
    }
}

impl Future for Connection {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let id = this.id;
        loop {
            let Some(io) = this.io.as_mut() else {
                return Poll::Ready(());
            };
            // A connection with a lot to say lets the others have their turn now and then.
            if this.turns == TURNS_BEFORE_YIELD {
                this.turns = 0;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            // No task runs inside another, and none holds this across a wait.
            let mut core = this.shared.core.borrow_mut();
            let core = &mut *core;
            let Some(mailbox) = core.mailboxes.get_mut(id.0).and_then(Option::as_mut) else {
                // Cannot happen: the slot lives until this task reports the socket closed.
                this.io = None;
                return Poll::Ready(());
            };
            match std::task::ready!(poll_step(id, io, mailbox, &mut core.server, cx)) {
                Step::Data(n) => {
                    READ_BUFFER.with_borrow(|buf| core.handle_data(id, &buf[..n]));
                    this.turns += 1;
                }
                Step::Eof => core.handle_eof(id),
                Step::Done => {
                    this.io = None;
                    // The socket closes here (with its mailbox), before the core hears of it.
                    core.handle_closed(id);
                    return Poll::Ready(());
                }
            }
        }
    }
}

thread_local! {
    /// The read buffer all connections of this thread share: a connection waiting for bytes
    /// owns none.
    static READ_BUFFER: RefCell<Box<[u8]>> =
        RefCell::new(vec![0; READ_BUFFER_BYTES].into_boxed_slice());
}
