//! One connection's socket and what is queued for it, and how the loop reads, writes, carries
//! out the core's outputs and closes it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Token};
use parlor_core::{ConnId, Output};
use parlor_os::{Flushed, WriteQueue};

use crate::{EventLoop, PROGRAM, READS_PER_WAKE};

/// Bytes queued for one connection during a turn past which they are written at once instead of
/// at the end of the turn: bounds what a turn holds back (and what the core counts as unsent
/// for a reader that keeps up) while leaving ordinary turns to coalesce.
const FLUSH_EARLY_BYTES: usize = 64 * 1024;

/// One socket and what is queued for it.
pub(crate) struct Conn {
    stream: TcpStream,
    /// Bytes not yet written.
    queue: WriteQueue,
    /// Whether the registration currently includes `WRITABLE` (only while `queue` is not empty).
    writable_interest: bool,
    /// The core asked to stop reading (`PauseRead`).
    paused: bool,
    /// A read returned 0: the peer will send nothing more.
    eof: bool,
    /// How far the connection is in closing (one byte for what were two flags: the struct is
    /// then 48 bytes, not 56).
    close: Closing,
}

/// Where a connection is in closing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closing {
    /// Not closing.
    No,
    /// The core said `Close`: close once `queue` is written.
    Flushing,
    /// `queue` was written after `Close`, and our sending side is shut down: reading only to see
    /// the peer close.
    Shut,
}

impl Conn {
    /// The core said `Close` (the queue may still be being written).
    fn closing(&self) -> bool {
        self.close != Closing::No
    }

    /// Our sending side is shut down.
    fn write_shut(&self) -> bool {
        self.close == Closing::Shut
    }
}

impl EventLoop {
    pub(crate) fn add_conn(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Instant) {
        // Responses are whole buffers written at once: waiting to coalesce them only adds delay.
        let _ = stream.set_nodelay(true);
        let id = self.server.handle_accept(peer.ip(), now);
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(id.0), Interest::READABLE)
        {
            eprintln!("{PROGRAM}: cannot register a connection: {e}");
            drop(stream);
            self.report_closed(id, now);
            self.settle(now);
            return;
        }
        if self.conns.len() <= id.0 {
            self.conns.resize_with(id.0 + 1, || None);
        }
        debug_assert!(self.conns[id.0].is_none(), "the core reused a live id");
        self.conns[id.0] = Some(Conn {
            stream,
            queue: WriteQueue::default(),
            writable_interest: false,
            paused: false,
            eof: false,
            close: Closing::No,
        });
        // Over the connection cap the core has a 503 and a Close ready.
        self.settle(now);
    }

    /// Reads from `id` until `WouldBlock`, its budget runs out, or it is paused or gone.
    ///
    /// Unless told to `drain`, a short read (less than the buffer) also ends it: it emptied
    /// the socket, and bytes arriving after it raise a new edge-triggered event (epoll(7)), so
    /// the read that would only say `WouldBlock` is saved: one syscall in three of a
    /// keep-alive request. A readiness event that says the peer closed or the socket failed
    /// drains (no event follows those), and so do reads not prompted by an event (resumed,
    /// left over from a budget, after our FIN).
    pub(crate) fn read(&mut self, id: ConnId, now: Instant, drain: bool) {
        for _ in 0..READS_PER_WAKE {
            let Some(c) = self.conns.get_mut(id.0).and_then(Option::as_mut) else {
                return;
            };
            if c.eof {
                return;
            }
            if c.paused && !c.closing() {
                // Not reading, but still watching: a reset (any socket error) frees the slot
                // now rather than at the connection's next deadline.
                if !matches!(c.stream.take_error(), Ok(None)) {
                    self.drop_conn(id, now);
                    self.settle(now);
                }
                return;
            }
            match c.stream.read(&mut self.buf) {
                Ok(0) => {
                    c.eof = true;
                    if c.write_shut() {
                        // Both directions are done.
                        self.drop_conn(id, now);
                    } else if !c.closing() {
                        parlor_os::report_adapter_bug(PROGRAM, self.server.handle_eof(id, now));
                    }
                    // Else: the close is waiting for its bytes to be written.
                    self.settle_answer(id, now);
                    return;
                }
                Ok(n) => {
                    if !c.closing() {
                        let data = &self.buf[..n];
                        let result = self.server.handle_data(id, data, now);
                        parlor_os::report_adapter_bug(PROGRAM, result);
                        self.settle_answer(id, now);
                    }
                    // Else: the core is done with this connection; discard.
                    if !drain && n < self.buf.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.drop_conn(id, now);
                    self.settle(now);
                    return;
                }
            }
        }
        self.pending_read.push_back(id);
    }

    /// Drains the core's outputs and carries them out: bytes are queued, and the connections
    /// that got some are remembered in `dirty`, to be written at the end of the turn
    /// ([`flush_dirty`](Self::flush_dirty)), so that everything one turn queues for a connection
    /// (the events of several publishes on a stream, above all) leaves in one vectored write.
    pub(crate) fn settle(&mut self, now: Instant) {
        if let Some(log) = &self.shared_log {
            log.submit(&mut self.server);
        }
        while let Some(output) = self.server.poll_output() {
            self.carry_out(output, now);
        }
    }

    /// After an input from `id`: carries out the core's outputs and writes `id`'s own answer at
    /// once (a request's response does not wait for the rest of the turn); what went to other
    /// connections waits for [`flush_dirty`](Self::flush_dirty).
    fn settle_answer(&mut self, id: ConnId, now: Instant) {
        self.settle(now);
        self.flush(id, now);
    }

    /// The end of a turn: writes every connection that got bytes (or a close) during it, each
    /// with as few vectored writes as its queue needs, until the core has nothing more to say
    /// (closing a connection may give outputs). Runs before every wait, so nothing queued
    /// waits for the next readiness event: a lone message still leaves in the turn that made it.
    pub(crate) fn flush_dirty(&mut self, now: Instant) {
        loop {
            self.settle(now);
            if self.dirty.is_empty() {
                return;
            }
            let dirty = std::mem::take(&mut self.dirty);
            for &id in &dirty {
                self.flush(id, now);
            }
            // Keep the allocation for the next turn.
            if self.dirty.is_empty() {
                self.dirty = dirty;
                self.dirty.clear();
            }
        }
    }

    fn carry_out(&mut self, output: Output, now: Instant) {
        let (Output::Send { conn, .. }
        | Output::Close { conn }
        | Output::Abort { conn }
        | Output::PauseRead { conn }
        | Output::ResumeRead { conn }) = &output;
        let id = *conn;
        let Some(c) = self.conns.get_mut(id.0).and_then(Option::as_mut) else {
            // Already dropped after a socket error and reported closed: nothing to do.
            return;
        };
        match output {
            Output::Send { data, .. } => {
                if !data.is_empty() && !c.write_shut() {
                    if c.queue.is_empty() {
                        // A stream's events may wait while the loop is busy; an answer is
                        // awaited (see `Server::is_streaming`).
                        if self.server.is_streaming(id) {
                            self.held.push(id);
                        } else {
                            self.dirty.push(id);
                        }
                    }
                    c.queue.push(data);
                    // A turn that says a lot to one connection (a burst of publishes to a
                    // stream) writes it as it goes rather than holding it all to the end.
                    if c.queue.len_bytes() >= FLUSH_EARLY_BYTES && !c.writable_interest {
                        self.flush(id, now);
                    }
                }
            }
            Output::Close { .. } => {
                if !c.closing() {
                    c.close = Closing::Flushing;
                    self.dirty.push(id);
                }
            }
            Output::Abort { .. } => self.drop_conn(id, now),
            Output::PauseRead { .. } => c.paused = true,
            Output::ResumeRead { .. } => {
                if c.paused {
                    c.paused = false;
                    // Edge-triggered: bytes that arrived while paused raise no new event.
                    self.pending_read.push_back(id);
                }
            }
        }
    }

    /// Writes what is queued for `id` until `WouldBlock`, reports it to the core, carries out a
    /// pending close, and keeps `WRITABLE` interest exactly while bytes remain.
    pub(crate) fn flush(&mut self, id: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(id.0).and_then(Option::as_mut) else {
            return;
        };
        let stream = &mut c.stream;
        // One buffer (the common case: a shared fan-out answer) goes out with `send`, which the
        // kernel takes faster than a one-element `writev`.
        let (written, outcome) = c.queue.write_with(|slices| {
            Some(match slices {
                [one] => stream.write(one),
                _ => stream.write_vectored(slices),
            })
        });
        if written > 0 {
            parlor_os::report_adapter_bug(PROGRAM, self.server.handle_flushed(id, written, now));
        }
        if outcome == Flushed::Failed {
            self.drop_conn(id, now);
            return;
        }
        let Some(c) = self.conns.get_mut(id.0).and_then(Option::as_mut) else {
            return;
        };
        if c.queue.is_empty() && c.closing() && !c.write_shut() {
            if c.eof {
                // The peer already closed its side: nothing left to wait for.
                self.drop_conn(id, now);
                return;
            }
            // Send FIN, then wait for the peer's (reading and discarding what it still sends),
            // so unread bytes do not make the kernel reset the connection under the response.
            c.close = Closing::Shut;
            if c.stream.shutdown(Shutdown::Write).is_err() {
                self.drop_conn(id, now);
                return;
            }
            self.pending_read.push_back(id);
        }
        let want = !c.queue.is_empty();
        if want != c.writable_interest {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self
                .poll
                .registry()
                .reregister(&mut c.stream, Token(id.0), interest)
                .is_err()
            {
                self.drop_conn(id, now);
                return;
            }
            c.writable_interest = want;
        }
    }

    /// Closes the socket now and tells the core. Queued outputs for `id` are ignored after this.
    pub(crate) fn drop_conn(&mut self, id: ConnId, now: Instant) {
        let Some(mut c) = self.conns.get_mut(id.0).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        drop(c);
        self.report_closed(id, now);
    }

    fn report_closed(&mut self, id: ConnId, now: Instant) {
        parlor_os::report_adapter_bug(PROGRAM, self.server.handle_closed(id, now));
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    /// Every connection, a held poll above all, costs this slot beside the core's: keep it
    /// small (issue 15). The socket, the write queue and four bytes of flags, no padding past
    /// them: 48 bytes in a release build (mio's socket carries a selector id in debug builds).
    #[test]
    fn a_connection_slot_is_small() {
        let parts = size_of::<mio::net::TcpStream>() + size_of::<parlor_os::WriteQueue>() + 4;
        let size = size_of::<Option<super::Conn>>();
        assert!(
            size <= parts.next_multiple_of(8),
            "Option<Conn>: {size} bytes"
        );
    }
}
