//! Reading frames from peers we do not trust: what bounds the memory and the time a
//! connection may take.
//!
//! Invariants:
//! - A frame's body buffer grows with the bytes that arrived, never with the length the
//!   peer declared: a peer that declares 256 MiB and sends 10 bytes costs 64 KiB at most.
//! - Every byte of buffer capacity a server's connections hold (bodies in progress and the
//!   buffer each keeps between frames) is taken from one [`ReadBudget`] first; a connection
//!   that cannot get budget within the stall deadline is closed.
//! - A connection that starts no frame within [`InboundLimits::idle_timeout`], or stops
//!   sending for [`InboundLimits::stall_timeout`] in the middle of one, is closed.

use crate::frame::{self, FrameError, MAX_FRAME_LEN};
use crate::framepb::Frame;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Bytes read into a frame body per read call (and the buffer's first growth step).
const READ_CHUNK: usize = 64 << 10;

/// Largest read buffer a connection keeps between frames.
const KEPT_READ_BUFFER: usize = 1 << 20;

/// Bounds on what a server reads from its connections. Plain settings: the server makes
/// one [`ReadBudget`] of `max_buffered` bytes for all its connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundLimits {
    /// Largest frame accepted (capped at [`MAX_FRAME_LEN`]).
    pub max_frame: usize,
    /// Bytes of frame buffers all connections of one server may hold at once. Must be at
    /// least `max_frame`, or a largest frame could never be read. Default: twice `max_frame`.
    pub max_buffered: usize,
    /// A connection that starts no frame for this long is closed (the peer reconnects when
    /// it has something to say). Default 10 min.
    pub idle_timeout: Duration,
    /// A connection that sends no byte for this long in the middle of a frame (or waits
    /// this long for buffer budget) is closed. Default 30 s.
    pub stall_timeout: Duration,
}

impl InboundLimits {
    /// The defaults for a server whose frames are at most `max_frame` bytes.
    pub fn new(max_frame: usize) -> InboundLimits {
        InboundLimits {
            max_frame,
            max_buffered: max_frame.saturating_mul(2),
            idle_timeout: Duration::from_secs(600),
            stall_timeout: Duration::from_secs(30),
        }
    }

    /// Rejects limits under which a connection could never be served or never be closed.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_frame == 0 || self.max_frame > MAX_FRAME_LEN {
            return Err(format!(
                "max_frame must be in 1..={MAX_FRAME_LEN}, got {}",
                self.max_frame
            ));
        }
        if self.max_buffered < self.max_frame {
            return Err(format!(
                "max_buffered ({}) must hold one largest frame ({})",
                self.max_buffered, self.max_frame
            ));
        }
        if self.idle_timeout.is_zero() || self.stall_timeout.is_zero() {
            return Err("idle_timeout and stall_timeout must be > 0".into());
        }
        Ok(())
    }
}

/// The bytes of frame buffers a server's connections may hold at once, shared by all of
/// them (cheap to clone). An unlimited budget takes no lock at all.
#[derive(Clone, Debug)]
pub struct ReadBudget {
    sem: Option<Arc<Semaphore>>,
    bytes: usize,
}

impl ReadBudget {
    /// A budget of `bytes` (capped at the largest a semaphore counts).
    pub fn new(bytes: usize) -> ReadBudget {
        let bytes = bytes.min(Semaphore::MAX_PERMITS);
        ReadBudget {
            sem: Some(Arc::new(Semaphore::new(bytes))),
            bytes,
        }
    }

    /// No bound (for reading answers from a server we called).
    pub fn unlimited() -> ReadBudget {
        ReadBudget {
            sem: None,
            bytes: usize::MAX,
        }
    }

    /// The bound.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes not held by any connection now.
    pub fn available(&self) -> usize {
        self.sem
            .as_ref()
            .map_or(usize::MAX, |s| s.available_permits())
    }
}

/// Why reading a frame failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The socket failed (including an end of stream in the middle of a frame).
    Io(std::io::Error),
    /// The bytes are not a frame, or its length is over the limit.
    Frame(FrameError),
    /// No frame started within the idle deadline.
    Idle(Duration),
    /// The peer stopped sending mid-frame (or no budget came) for the stall deadline.
    Stalled {
        /// Bytes of the frame (length prefix included) that arrived.
        got: usize,
        /// Bytes the frame declared (0 while the prefix itself is incomplete).
        declared: usize,
        /// The deadline.
        after: Duration,
    },
}

/// Reads frames from one connection into a buffer whose capacity is held in a budget.
pub(crate) struct FrameReader<R> {
    rd: R,
    max_frame: usize,
    idle: Option<Duration>,
    stall: Option<Duration>,
    budget: ReadBudget,
    body: Vec<u8>,
    /// Budget bytes held for `body`'s capacity.
    held: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader bounded by `limits`, taking buffer capacity from `budget`.
    pub(crate) fn bounded(rd: R, limits: &InboundLimits, budget: ReadBudget) -> Self {
        FrameReader {
            rd,
            max_frame: limits.max_frame.min(MAX_FRAME_LEN),
            idle: Some(limits.idle_timeout),
            stall: Some(limits.stall_timeout),
            budget,
            body: Vec::new(),
            held: 0,
        }
    }

    /// A reader with no deadlines and no budget, only the frame limit.
    pub(crate) fn unbounded(rd: R, max_frame: usize) -> Self {
        FrameReader {
            rd,
            max_frame: max_frame.min(MAX_FRAME_LEN),
            idle: None,
            stall: None,
            budget: ReadBudget::unlimited(),
            body: Vec::new(),
            held: 0,
        }
    }

    /// The next frame; `Ok(None)` on a clean end of stream between frames.
    pub(crate) async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        let mut header = [0u8; 4];
        let mut got = 0;
        while got < header.len() {
            // Waiting for a frame to start is idleness; for the rest of its prefix, a stall.
            let wait = if got == 0 { self.idle } else { self.stall };
            let n = match deadline_read(&mut self.rd, &mut header[got..], wait).await {
                Ok(n) => n,
                Err(Waited::Io(e)) => return Err(ReadError::Io(e)),
                Err(Waited::Timeout(after)) if got == 0 => return Err(ReadError::Idle(after)),
                Err(Waited::Timeout(after)) => {
                    return Err(ReadError::Stalled {
                        got,
                        declared: 0,
                        after,
                    })
                }
            };
            if n == 0 {
                if got == 0 {
                    return Ok(None);
                }
                return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            got += n;
        }
        let len = frame::check_len(header, self.max_frame).map_err(ReadError::Frame)?;
        self.body.clear();
        while self.body.len() < len {
            let filled = self.body.len();
            // Fill the capacity there is before growing it: the buffer grows only once the
            // bytes already received filled it.
            let room = self.body.capacity() - filled;
            let mut want = (len - filled).min(READ_CHUNK);
            if room > 0 {
                want = want.min(room);
            }
            self.reserve(filled + want, len)
                .await
                .map_err(|after| ReadError::Stalled {
                    got: 4 + filled,
                    declared: 4 + len,
                    after,
                })?;
            // Zero only the chunk about to be read into (capacity is already there).
            self.body.resize(filled + want, 0);
            let read = deadline_read(&mut self.rd, &mut self.body[filled..], self.stall).await;
            let n = match read {
                Ok(0) => {
                    return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(n) => n,
                Err(Waited::Io(e)) => return Err(ReadError::Io(e)),
                Err(Waited::Timeout(after)) => {
                    return Err(ReadError::Stalled {
                        got: 4 + filled,
                        declared: 4 + len,
                        after,
                    })
                }
            };
            self.body.truncate(filled + n);
        }
        let frame = frame::decode(&self.body).map_err(ReadError::Frame);
        if self.body.capacity() > KEPT_READ_BUFFER {
            // One huge frame does not pin its buffer (or its budget) for the connection's life.
            self.body = Vec::new();
            self.release_unused();
        }
        frame.map(Some)
    }

    /// Grows the body's capacity to at least `need` (doubling, never past `len`), taking
    /// the growth from the budget first; on a timeout returns the deadline.
    async fn reserve(&mut self, need: usize, len: usize) -> Result<(), Duration> {
        let cap = self.body.capacity();
        if cap >= need {
            return Ok(());
        }
        let target = need.max(cap.saturating_mul(2)).min(len).max(need);
        if let Some(sem) = &self.budget.sem {
            let extra = target.saturating_sub(self.held);
            if extra > 0 {
                // A frame never exceeds MAX_FRAME_LEN (256 MiB), so this fits in a u32.
                let n = u32::try_from(extra).map_err(|_| Duration::ZERO)?;
                let acquire = sem.acquire_many(n);
                let permit = match self.stall {
                    Some(after) => tokio::time::timeout(after, acquire)
                        .await
                        .map_err(|_| after)?,
                    None => acquire.await,
                };
                // The semaphore is never closed; treat it like a timeout if it were.
                permit.map_err(|_| Duration::ZERO)?.forget();
                self.held += extra;
            }
        }
        self.body.reserve_exact(target - self.body.len());
        Ok(())
    }

    /// Returns the budget held beyond the body's capacity.
    fn release_unused(&mut self) {
        let keep = self.body.capacity();
        if let Some(sem) = &self.budget.sem {
            if self.held > keep {
                sem.add_permits(self.held - keep);
                self.held = keep;
            }
        }
    }
}

impl<R> Drop for FrameReader<R> {
    fn drop(&mut self) {
        if let Some(sem) = &self.budget.sem {
            sem.add_permits(self.held);
        }
    }
}

enum Waited {
    Io(std::io::Error),
    Timeout(Duration),
}

/// One `read` into `buf`, given up after `wait` (never, without one).
async fn deadline_read<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut [u8],
    wait: Option<Duration>,
) -> Result<usize, Waited> {
    match wait {
        None => rd.read(buf).await.map_err(Waited::Io),
        Some(after) => match tokio::time::timeout_at(Instant::now() + after, rd.read(buf)).await {
            Ok(r) => r.map_err(Waited::Io),
            Err(_) => Err(Waited::Timeout(after)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framepb::Frame;
    use tokio::io::AsyncWriteExt;

    fn limits(max_frame: usize) -> InboundLimits {
        InboundLimits {
            max_frame,
            max_buffered: 2 * max_frame,
            idle_timeout: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(60),
        }
    }

    fn small_frame(id: u64) -> Vec<u8> {
        let mut f = Frame::new();
        f.id = id;
        frame::encode(&f).expect("encodes")
    }

    /// Goal: a declared length costs nothing until its bytes arrive. Method: declare a
    /// 64 MiB frame, send 10 bytes, and look at the buffer and the budget while the reader
    /// waits for the rest.
    #[tokio::test]
    async fn a_declared_length_allocates_only_what_arrived() {
        let (mut tx, rx) = tokio::io::duplex(1 << 16);
        let budget = ReadBudget::new(128 << 20);
        let mut reader = FrameReader::bounded(rx, &limits(64 << 20), budget.clone());
        tx.write_all(&((64u32 << 20) - 1).to_be_bytes())
            .await
            .unwrap();
        tx.write_all(&[0u8; 10]).await.unwrap();
        // The reader is waiting for more: it must not finish.
        let pending = tokio::time::timeout(Duration::from_millis(50), reader.next()).await;
        assert!(pending.is_err(), "a partial frame cannot complete");
        assert!(
            reader.body.capacity() <= READ_CHUNK,
            "capacity {} for 10 bytes",
            reader.body.capacity()
        );
        assert!(budget.bytes() - budget.available() <= READ_CHUNK);
        drop(reader);
        assert_eq!(
            budget.available(),
            budget.bytes(),
            "closing returns the budget"
        );
    }

    /// Goal: a peer that goes quiet mid-frame is cut off, and one that never starts a frame
    /// too. Method: short deadlines; the reader must return the matching error.
    #[tokio::test]
    async fn stalled_and_idle_connections_are_closed() {
        let mut l = limits(1 << 20);
        l.idle_timeout = Duration::from_millis(300);
        l.stall_timeout = Duration::from_millis(100);
        let (mut tx, rx) = tokio::io::duplex(1 << 16);
        let mut reader = FrameReader::bounded(rx, &l, ReadBudget::new(2 << 20));
        tx.write_all(&1000u32.to_be_bytes()).await.unwrap();
        tx.write_all(&[0u8; 3]).await.unwrap();
        match reader.next().await {
            Err(ReadError::Stalled { got, declared, .. }) => {
                assert_eq!((got, declared), (7, 1004));
            }
            other => panic!("expected a stall, got {other:?}"),
        }
        let (mut tx, rx) = tokio::io::duplex(1 << 16);
        let mut reader = FrameReader::bounded(rx, &l, ReadBudget::new(2 << 20));
        tx.write_all(&small_frame(3)).await.unwrap();
        assert_eq!(reader.next().await.unwrap().unwrap().id, 3);
        assert!(matches!(reader.next().await, Err(ReadError::Idle(_))));
    }

    /// Goal: the budget bounds what all connections hold together. Method: two readers
    /// share a budget of one frame; the first holds most of it mid-frame, so the second
    /// cannot buffer its frame until the first is gone.
    #[tokio::test]
    async fn connections_share_one_budget() {
        let mut l = limits(256 << 10);
        l.max_buffered = 256 << 10;
        l.stall_timeout = Duration::from_millis(200);
        let budget = ReadBudget::new(l.max_buffered);
        let body = 200 << 10;
        let (mut tx1, rx1) = tokio::io::duplex(1 << 20);
        let mut r1 = FrameReader::bounded(rx1, &l, budget.clone());
        tx1.write_all(&(body as u32).to_be_bytes()).await.unwrap();
        tx1.write_all(&vec![0u8; body - 1]).await.unwrap();
        let first = tokio::time::timeout(Duration::from_millis(50), r1.next()).await;
        assert!(first.is_err(), "one byte short of a frame");
        assert!(budget.available() < body, "the first holds its body");

        let (mut tx2, rx2) = tokio::io::duplex(1 << 20);
        let mut r2 = FrameReader::bounded(rx2, &l, budget.clone());
        tx2.write_all(&(body as u32).to_be_bytes()).await.unwrap();
        tx2.write_all(&vec![0u8; body]).await.unwrap();
        assert!(
            matches!(r2.next().await, Err(ReadError::Stalled { .. })),
            "no budget for a second body"
        );
        drop(r1);
        let (mut tx3, rx3) = tokio::io::duplex(1 << 20);
        let mut r3 = FrameReader::bounded(rx3, &l, budget.clone());
        let mut f = Frame::new();
        f.id = 9;
        f.mut_raft().mut_msgs(); // a raft batch, empty: a valid frame
        let mut bytes = frame::encode(&f).unwrap();
        bytes.extend(small_frame(10));
        tx3.write_all(&bytes).await.unwrap();
        assert_eq!(r3.next().await.unwrap().unwrap().id, 9);
        assert_eq!(r3.next().await.unwrap().unwrap().id, 10);
    }

    #[test]
    fn limits_that_could_never_serve_a_frame_are_rejected() {
        InboundLimits::new(64 << 20).validate().unwrap();
        let mut l = InboundLimits::new(1 << 20);
        l.max_buffered = 1 << 19;
        assert!(l.validate().is_err());
        let mut l = InboundLimits::new(1 << 20);
        l.stall_timeout = Duration::ZERO;
        assert!(l.validate().is_err());
        assert!(InboundLimits::new(MAX_FRAME_LEN + 1).validate().is_err());
    }
}
