//! One connection task ([`Connection`]): reads what arrives, writes what the owner routes to its
//! [`Mailbox`], closes when told. See the crate docs for how it fits with the owner.

use std::cell::RefCell;
use std::future::Future;
use std::net::{Shutdown, TcpStream};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parlor_core::{ConnId, Output};
use parlor_os::{Flushed, WriteQueue, READ_BUFFER_BYTES};
use smol::channel::{Sender, TrySendError};
use smol::io::{AsyncRead, AsyncWrite};
use smol::stream::Stream;
use smol::{Async, Timer};

use crate::{Event, FlushLog};

/// How often a connection whose reading is paused is checked for a reset.
const WATCH_PAUSED: Duration = Duration::from_millis(100);
/// Reads discarded in one turn of a closing connection before the others get theirs.
const DISCARDS_PER_TURN: u32 = 4;
/// Events a connection task reports in a row before it yields to the other tasks.
const TURNS_BEFORE_YIELD: u32 = 16;

/// What the owner has for one connection task: the connection's half of the "channel" from
/// the owner. Both run on one thread, so it is a plain `RefCell` behind an `Rc`: the owner
/// appends and sets flags, then wakes the task. The core's outputs coalesce into this state
/// (bytes in order, flags), so a held connection's mailbox is a few words and never allocates.
#[derive(Default)]
pub(crate) struct Mailbox {
    /// Bytes to write.
    queue: WriteQueue,
    /// `Output::Close`: close once `queue` is written.
    close: bool,
    /// `Output::Abort`: close now.
    abort: bool,
    /// `Output::PauseRead` (until `Output::ResumeRead`).
    paused: bool,
    /// The task has reported bytes the owner has not handed to the core yet: it reads no more
    /// until then, so the core decides on every read before the next (a paused connection
    /// holds at most one read buffer past `--max-pipeline-bytes`, as with `parlor-mio`).
    data_in_flight: bool,
    /// The connection task, waiting for something to do.
    waker: Option<Waker>,
}

impl Mailbox {
    /// Takes one output of the core for this connection and wakes its task.
    pub(crate) fn deliver(&mut self, output: Output) {
        match output {
            Output::Send { data, .. } => self.queue.push(data),
            Output::Close { .. } => self.close = true,
            Output::Abort { .. } => self.abort = true,
            Output::PauseRead { .. } => self.paused = true,
            Output::ResumeRead { .. } => self.paused = false,
        }
        self.wake();
    }

    /// The owner handed the last `Event::Data` to the core: the task may read again.
    pub(crate) fn data_taken(&mut self) {
        self.data_in_flight = false;
        self.wake();
    }

    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// A connection task's own state, beside its mailbox.
struct ConnIo {
    id: ConnId,
    stream: Async<TcpStream>,
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
    /// Tell the owner.
    Report(Event),
    /// The connection is done: drop the socket, report `Closed`.
    Done,
}

/// Reads, writes or closes until there is something to report, or nothing to do.
fn poll_step(
    io: &mut ConnIo,
    mailbox: &RefCell<Mailbox>,
    flushed: &FlushLog,
    cx: &mut Context<'_>,
) -> Poll<Step> {
    let mut m = mailbox.borrow_mut();
    let id = io.id;
    let mut stream = &io.stream;
    if m.abort {
        return Poll::Ready(Step::Done);
    }

    // Write what is queued, one vectored write per burst, until done or the socket is full.
    let (written, outcome) =
        m.queue.write_with(
            |slices| match Pin::new(&mut stream).poll_write_vectored(cx, slices) {
                Poll::Ready(result) => Some(result),
                Poll::Pending => None,
            },
        );
    if written > 0 {
        // The core counts unsent bytes with this: the owner reads the log before its next input.
        flushed.borrow_mut().push((id, written));
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
        if io.stream.get_ref().shutdown(Shutdown::Write).is_err() {
            return Poll::Ready(Step::Done);
        }
        io.write_shut = true;
    }

    // Read while not paused (and always after Close, to discard until the peer's FIN).
    let mut discarded = 0;
    while !io.eof && ((!m.paused && !m.data_in_flight) || m.close) {
        if !io.may_read {
            match io.stream.poll_readable(cx) {
                Poll::Ready(Ok(())) => io.may_read = true,
                Poll::Ready(Err(_)) => return Poll::Ready(Step::Done),
                Poll::Pending => break,
            }
        }
        let read =
            READ_BUFFER.with_borrow_mut(|buf| match Pin::new(&mut stream).poll_read(cx, buf) {
                Poll::Ready(Ok(n)) if n > 0 && !m.close => Poll::Ready(Ok(Some(buf[..n].to_vec()))),
                Poll::Ready(Ok(n)) => Poll::Ready(Ok((n > 0).then(Vec::new))),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            });
        match read {
            Poll::Ready(Err(_)) => return Poll::Ready(Step::Done),
            Poll::Ready(Ok(None)) => {
                io.eof = true;
                if !m.close {
                    return Poll::Ready(Step::Report(Event::Eof(id)));
                }
            }
            Poll::Ready(Ok(Some(data))) if !data.is_empty() => {
                m.data_in_flight = true;
                return Poll::Ready(Step::Report(Event::Data(id, data)));
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
        if watch_paused(io, cx) {
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
fn watch_paused(io: &mut ConnIo, cx: &mut Context<'_>) -> bool {
    if has_error(&io.stream) {
        return true;
    }
    let watch = io
        .watch
        .get_or_insert_with(|| Box::new(Timer::interval(WATCH_PAUSED)));
    while let Poll::Ready(Some(_)) = Pin::new(&mut **watch).poll_next(cx) {
        if has_error(&io.stream) {
            return true;
        }
    }
    false
}

/// Whether the socket has a pending error (`SO_ERROR`), e.g. `ECONNRESET` after a reset.
fn has_error(stream: &Async<TcpStream>) -> bool {
    !matches!(stream.get_ref().take_error(), Ok(None))
}

/// One connection task: reads what arrives, writes what the owner routes here, closes when told.
/// Sends `Event::Closed` as its last event once the socket is dropped.
///
/// Written out as a future rather than an `async fn` so that a waiting connection (a held poll
/// above all) costs exactly these fields.
pub(crate) struct Connection {
    id: ConnId,
    /// `None` once the socket is dropped.
    io: Option<ConnIo>,
    mailbox: Rc<RefCell<Mailbox>>,
    flushed: Rc<FlushLog>,
    events: Sender<Event>,
    /// An event waiting for room in the channel; allocated only when the channel is full.
    sending: Option<Pin<Box<dyn Future<Output = bool>>>>,
    /// Events reported since the task last let the others run.
    turns: u32,
}

impl Connection {
    pub(crate) fn new(
        id: ConnId,
        stream: Async<TcpStream>,
        mailbox: Rc<RefCell<Mailbox>>,
        flushed: Rc<FlushLog>,
        events: Sender<Event>,
    ) -> Connection {
        Connection {
            id,
            io: Some(ConnIo {
                id,
                stream,
                eof: false,
                may_read: true,
                write_shut: false,
                watch: None,
            }),
            mailbox,
            flushed,
            events,
            sending: None,
            turns: 0,
        }
    }

    /// Hands `event` to the owner, or keeps it in `sending` until there is room. `false` when
    /// the owner is gone (the server is ending).
    fn report(&mut self, event: Event) -> bool {
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(TrySendError::Full(event)) => {
                let events = self.events.clone();
                self.sending = Some(Box::pin(async move { events.send(event).await.is_ok() }));
                true
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

impl Future for Connection {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            if let Some(sending) = this.sending.as_mut() {
                let delivered = std::task::ready!(sending.as_mut().poll(cx));
                this.sending = None;
                if !delivered {
                    return Poll::Ready(());
                }
            }
            let Some(io) = this.io.as_mut() else {
                return Poll::Ready(()); // `Closed` was delivered
            };
            // A connection with a lot to say lets the others have their turn now and then.
            if this.turns == TURNS_BEFORE_YIELD {
                this.turns = 0;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let event = match std::task::ready!(poll_step(io, &this.mailbox, &this.flushed, cx)) {
                Step::Report(event) => event,
                Step::Done => {
                    this.io = None; // the socket closes here, before the owner hears of it
                    if this.report(Event::Closed(this.id)) && this.sending.is_some() {
                        continue;
                    }
                    return Poll::Ready(());
                }
            };
            this.turns += 1;
            if !this.report(event) {
                return Poll::Ready(());
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
