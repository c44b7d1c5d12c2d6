//! The bytes queued for one connection, written with one (vectored) write per burst.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::{Buf, Bytes};

/// Most buffers handed to one vectored write.
pub const MAX_IOVECS: usize = 64;

/// Bytes not yet written to one socket, oldest first; the front one may be partly written.
///
/// The core's `Output::Send` buffers go in whole (never copied); [`WriteQueue::write_with`]
/// hands up to [`MAX_IOVECS`] of them to one vectored write and drops what was written.
#[derive(Debug, Default)]
pub struct WriteQueue {
    queue: VecDeque<Bytes>,
    /// The bytes in `queue` not yet written.
    len: usize,
}

/// How [`WriteQueue::write_with`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued was written.
    All,
    /// The socket is full: write again when it is writable.
    Blocked,
    /// The socket failed (an error, or a write of 0 bytes): close it.
    Failed,
}

impl WriteQueue {
    /// Queues `data` after what is already queued (an empty buffer is ignored).
    pub fn push(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.len += data.len();
            self.queue.push_back(data);
        }
    }

    /// The bytes queued and not yet written.
    pub fn len_bytes(&self) -> usize {
        self.len
    }

    /// Whether nothing is left to write.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Writes until the queue is empty, the socket is full or it fails. `write` is one vectored
    /// write: `Some(result)` as `write_vectored` returns it, `None` when the socket is not ready
    /// (an async `Poll::Pending`). Returns the bytes written, which the caller reports to the
    /// core (`Server::handle_flushed`), and why it stopped. An emptied queue gives its memory
    /// back, so a connection that waits (a held poll) keeps no buffer from its last answer.
    pub fn write_with(
        &mut self,
        mut write: impl FnMut(&[IoSlice<'_>]) -> Option<io::Result<usize>>,
    ) -> (usize, Flushed) {
        let mut written = 0;
        let outcome = loop {
            if self.queue.is_empty() {
                break Flushed::All;
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (slot, data) in slices.iter_mut().zip(self.queue.iter()) {
                *slot = IoSlice::new(data);
                count += 1;
            }
            match write(&slices[..count]) {
                Some(Ok(0)) => break Flushed::Failed,
                Some(Ok(n)) => {
                    written += n;
                    self.consume(n);
                }
                Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break Flushed::Blocked,
                Some(Err(_)) => break Flushed::Failed,
                None => break Flushed::Blocked,
            }
        };
        if written > 0 && self.queue.is_empty() {
            self.queue = VecDeque::new();
        }
        (written, outcome)
    }

    /// Drops the first `n` queued bytes (written).
    fn consume(&mut self, mut n: usize) {
        self.len -= n.min(self.len);
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if n >= front.len() {
                n -= front.len();
                self.queue.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(parts: &[&'static [u8]]) -> WriteQueue {
        let mut q = WriteQueue::default();
        for part in parts {
            q.push(Bytes::from_static(part));
        }
        q
    }

    #[test]
    fn partial_writes_resume_mid_buffer_in_order() {
        let mut q = queue(&[b"hello ", b"", b"big ", b"world"]);
        assert_eq!(q.len_bytes(), 15);
        let mut out = Vec::new();
        // The socket takes 5 bytes per write, then is full.
        let mut budget = 12;
        let (n, how) = q.write_with(|slices| {
            if budget == 0 {
                return Some(Err(io::ErrorKind::WouldBlock.into()));
            }
            let mut take = budget.min(5);
            budget -= take;
            let took = take;
            for s in slices {
                let k = take.min(s.len());
                out.extend_from_slice(&s[..k]);
                take -= k;
            }
            Some(Ok(took))
        });
        assert_eq!((n, how), (12, Flushed::Blocked));
        assert_eq!(out, b"hello big wo");
        assert!(!q.is_empty());
        assert_eq!(q.len_bytes(), 3);
        let (n, how) = q.write_with(|slices| {
            let len = slices.iter().map(|s| s.len()).sum();
            for s in slices {
                out.extend_from_slice(s);
            }
            Some(Ok(len))
        });
        assert_eq!((n, how), (3, Flushed::All));
        assert_eq!(out, b"hello big world");
        assert!(q.is_empty());
        assert_eq!(q.len_bytes(), 0);
    }

    #[test]
    fn at_most_max_iovecs_per_write_and_failures_stop() {
        let mut q = WriteQueue::default();
        for _ in 0..MAX_IOVECS + 3 {
            q.push(Bytes::from_static(b"x"));
        }
        let mut widths = Vec::new();
        let (n, how) = q.write_with(|slices| {
            widths.push(slices.len());
            Some(Ok(slices.len()))
        });
        assert_eq!((n, how), (MAX_IOVECS + 3, Flushed::All));
        assert_eq!(widths, [MAX_IOVECS, 3]);

        let mut q = queue(&[b"abc"]);
        assert_eq!(q.write_with(|_| Some(Ok(0))), (0, Flushed::Failed));
        let mut q = queue(&[b"abc"]);
        let reset = || Some(Err(io::ErrorKind::ConnectionReset.into()));
        assert_eq!(q.write_with(|_| reset()), (0, Flushed::Failed));
        let mut q = queue(&[b"abc"]);
        assert_eq!(q.write_with(|_| None), (0, Flushed::Blocked));
        let mut interrupted = false;
        let (n, how) = q.write_with(|s| {
            if !interrupted {
                interrupted = true;
                return Some(Err(io::ErrorKind::Interrupted.into()));
            }
            Some(Ok(s[0].len()))
        });
        assert_eq!((n, how), (3, Flushed::All));
    }
}
