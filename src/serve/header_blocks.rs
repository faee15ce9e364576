//! [`HeaderDeadline`]: an HTTP/2 connection whose every header block must arrive within a
//! deadline.
//!
//! hyper bounds an HTTP/1 request's headers (`header_read_timeout`), but has nothing of the kind
//! for HTTP/2: a client can open a stream and trickle its HEADERS frame a byte at a time, or
//! send a HEADERS frame without `END_HEADERS` and CONTINUATION frames one by one, holding the
//! connection (and its place under the connection limits) as long as it likes, while pings,
//! answered at once, keep the connection looking alive. This wrapper watches the bytes the
//! client sends, frame by frame (nothing is buffered or changed), and fails the read with
//! [`io::ErrorKind::TimedOut`] when a header block (a HEADERS or PUSH_PROMISE frame and its
//! CONTINUATIONs, up to the frame with `END_HEADERS`) is not complete within the deadline of its
//! first byte. Envoy's `request_headers_timeout` and HAProxy's `timeout http-request` bound the
//! same thing. DATA and every other frame type are left alone: a slow upload is the minimum
//! receive rate's business.
//!
//! A connection that does not start with the HTTP/2 preface is HTTP/1, which hyper bounds:
//! the wrapper then only passes the bytes through.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::limiter::CloseCounter;
use crate::listener::HEADER_TIMEOUT;

/// The client's connection preface of HTTP/2 (RFC 9113, section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A frame header's length: payload length (3), type (1), flags (1), stream (4).
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// Where the reading of the client's bytes is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `n` bytes of the preface seen so far.
    Preface(usize),
    /// `n` bytes of a frame header seen so far (kept in `Frames::header`).
    FrameHeader(usize),
    /// The rest of a frame's payload; whether the frame ends a header block.
    Payload { left: usize, ends_block: bool },
    /// Not HTTP/2: nothing to watch.
    Http1,
}

/// The frame reader: a state machine over the client's bytes.
#[derive(Debug)]
struct Frames {
    phase: Phase,
    header: [u8; FRAME_HEADER],
    /// Whether a header block has begun and not yet ended.
    in_block: bool,
}

impl Frames {
    fn new() -> Self {
        Frames {
            phase: Phase::Preface(0),
            header: [0; FRAME_HEADER],
            in_block: false,
        }
    }

    /// Reads `bytes`; returns whether a header block was open at any point while reading them
    /// and whether one is open after them: (began, open).
    fn read(&mut self, mut bytes: &[u8]) -> Blocks {
        let mut blocks = Blocks {
            began: false,
            open: false,
        };
        while !bytes.is_empty() {
            match self.phase {
                Phase::Http1 => break,
                Phase::Preface(seen) => {
                    let n = (PREFACE.len() - seen).min(bytes.len());
                    if bytes[..n] != PREFACE[seen..seen + n] {
                        self.phase = Phase::Http1;
                        break;
                    }
                    bytes = &bytes[n..];
                    self.phase = if seen + n == PREFACE.len() {
                        Phase::FrameHeader(0)
                    } else {
                        Phase::Preface(seen + n)
                    };
                }
                Phase::FrameHeader(seen) => {
                    let n = (FRAME_HEADER - seen).min(bytes.len());
                    self.header[seen..seen + n].copy_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if seen == 0 && !self.in_block {
                        // A frame begins: it may begin a header block, which its type will say;
                        // until then its header counts as part of one, so a trickled frame
                        // header is bounded too.
                        blocks.began = true;
                    }
                    if seen + n < FRAME_HEADER {
                        self.phase = Phase::FrameHeader(seen + n);
                        continue;
                    }
                    let h = self.header;
                    let length =
                        usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                    let (kind, flags) = (h[3], h[4]);
                    let starts_block = kind == HEADERS || kind == PUSH_PROMISE;
                    let ends_block =
                        (starts_block || kind == CONTINUATION) && flags & END_HEADERS != 0;
                    if starts_block {
                        self.in_block = true;
                    }
                    if length == 0 {
                        self.end_frame(ends_block);
                    } else {
                        self.phase = Phase::Payload {
                            left: length,
                            ends_block,
                        };
                    }
                }
                Phase::Payload { left, ends_block } => {
                    let n = left.min(bytes.len());
                    bytes = &bytes[n..];
                    if n == left {
                        self.end_frame(ends_block);
                    } else {
                        self.phase = Phase::Payload {
                            left: left - n,
                            ends_block,
                        };
                    }
                }
            }
        }
        blocks.open = self.in_block || matches!(self.phase, Phase::FrameHeader(seen) if seen > 0);
        blocks
    }

    fn end_frame(&mut self, ends_block: bool) {
        if ends_block {
            self.in_block = false;
        }
        self.phase = Phase::FrameHeader(0);
    }
}

/// What a read did to the header blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Blocks {
    /// A header block (or a frame that may begin one) began during the read.
    began: bool,
    /// A header block is open after the read.
    open: bool,
}

pin_project! {
    /// An IO whose HTTP/2 header blocks must each arrive within a deadline: see the
    /// [module docs](self).
    #[derive(Debug)]
    pub(super) struct HeaderDeadline<IO> {
        #[pin]
        io: IO,
        frames: Frames,
        timeout: Duration,
        // Armed while a header block is open (boxed, so that the wrapper stays `Unpin` for an
        // `Unpin` IO, as hyper wants).
        deadline: Option<Pin<Box<Sleep>>>,
        passed: bool,
        // Where the cut is counted, when the connection is the limiter's.
        cuts: Option<CloseCounter>,
    }
}

impl<IO> HeaderDeadline<IO> {
    pub(super) fn new(io: IO, timeout: Duration, cuts: Option<CloseCounter>) -> Self {
        HeaderDeadline {
            io,
            frames: Frames::new(),
            timeout,
            deadline: None,
            passed: false,
            cuts,
        }
    }
}

/// Marks the deadline passed, counting the cut the first time.
fn pass(passed: &mut bool, cuts: &Option<CloseCounter>) {
    if !std::mem::replace(passed, true) {
        tracing::debug!("closing an HTTP/2 connection: a header block took too long");
        if let Some(cuts) = cuts {
            cuts.count(HEADER_TIMEOUT);
        }
    }
}

fn header_timeout() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "an HTTP/2 header block did not arrive within the header timeout",
    )
}

impl<IO: AsyncRead> AsyncRead for HeaderDeadline<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if this.deadline.as_ref().is_some_and(|d| d.is_elapsed()) {
            pass(this.passed, this.cuts);
        }
        if *this.passed {
            return Poll::Ready(Err(header_timeout()));
        }
        let before = buf.filled().len();
        let read = this.io.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            let blocks = this.frames.read(&buf.filled()[before..]);
            if !blocks.open {
                *this.deadline = None;
            } else if blocks.began || this.deadline.is_none() {
                // A block that began in this read gets a deadline of its own; one still open
                // from an earlier read keeps the one it had.
                *this.deadline = Some(Box::pin(tokio::time::sleep_until(
                    Instant::now() + *this.timeout,
                )));
            }
            return read;
        }
        if let Some(deadline) = this.deadline {
            if deadline.as_mut().poll(cx).is_ready() {
                pass(this.passed, this.cuts);
                return Poll::Ready(Err(header_timeout()));
            }
        }
        read
    }
}

impl<IO: AsyncWrite> AsyncWrite for HeaderDeadline<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut bytes = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        bytes.extend_from_slice(&1u32.to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn a_header_block_is_open_until_its_end_headers_frame() {
        let mut frames = Frames::new();
        let open = |blocks: Blocks| blocks.open;
        assert!(!open(frames.read(PREFACE)));
        // SETTINGS, whole: nothing open.
        assert!(!open(frames.read(&frame(0x4, 0, &[0; 6]))));
        // HEADERS without END_HEADERS, then a CONTINUATION that ends it.
        assert!(open(frames.read(&frame(HEADERS, 0, b"abc"))));
        assert!(
            open(frames.read(&frame(0x6, 0, &[0; 8]))),
            "a PING in between"
        );
        assert!(!open(frames.read(&frame(CONTINUATION, END_HEADERS, b"de"))));
        // A HEADERS frame whole, with END_HEADERS.
        assert!(!open(frames.read(&frame(
            HEADERS,
            END_HEADERS | 0x1,
            b"xyz"
        ))));
        // Trickled: open from its first byte to its last.
        let trickled = frame(HEADERS, END_HEADERS, b"slow");
        for (i, byte) in trickled.iter().enumerate() {
            let blocks = frames.read(std::slice::from_ref(byte));
            assert_eq!(blocks.open, i + 1 < trickled.len(), "byte {i}");
            assert_eq!(blocks.began, i == 0, "byte {i}");
        }
        // DATA, trickled: open only while its frame header arrives.
        let data = frame(0x0, 0, &[7; 20]);
        let opens: Vec<bool> = data.iter().map(|b| frames.read(&[*b]).open).collect();
        assert!(opens[..FRAME_HEADER - 1].iter().all(|open| *open));
        assert!(opens[FRAME_HEADER - 1..].iter().all(|open| !open));
    }

    #[test]
    fn http1_is_left_alone() {
        let mut frames = Frames::new();
        assert!(!frames.read(b"GET / HTTP/1.1\r\n").open);
        assert_eq!(frames.phase, Phase::Http1);
        assert!(!frames.read(b"PRI * HTTP/2.0").open);
    }
}
