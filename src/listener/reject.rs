//! What the listener does with a connection it refuses.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::TrackedIo;
use crate::reason::Rejected;

/// How the listener refuses a connection over the limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectAction {
    /// Close the socket (a FIN) before reading a byte. The cheapest refusal, and the default:
    /// the client sees the connection end and will typically retry later.
    #[default]
    Close,
    /// Reset the connection (an RST, via `SO_LINGER` 0): the client sees "connection reset" at
    /// once, and no `TIME_WAIT` is left behind on the server. For IO types that cannot reset
    /// (see [`RejectableIo`]) this falls back to [`Close`](RejectAction::Close).
    Reset,
    /// Answer with a canned `HTTP/1.1 429 Too Many Requests` (`503 Service Unavailable` when the
    /// server as a whole is full), the refusal reason's generic message as the body, and
    /// `Retry-After` for a rate refusal or a ban, once the client has started sending its
    /// request, and close. The write runs in a task of its own, off the accept path, bounded by
    /// the listener's `reject_deadline`; at most `max_pending_rejections` such writes run at once,
    /// and past that refusals fall back to [`Close`](RejectAction::Close), so a slow or hostile
    /// client can never stall accepting or pile up tasks.
    ///
    /// The answer is plaintext HTTP/1.1: use it for plaintext HTTP/1 listeners. A TLS client or
    /// an HTTP/2 prior-knowledge client cannot read it and sees a broken connection, as with
    /// `Close`. It needs a tokio runtime with the time driver enabled (`enable_time`, on in
    /// `#[tokio::main]`), for the deadline.
    HttpResponse,
}

/// An accepted IO the listener knows how to refuse.
///
/// Implemented for tokio's `TcpStream` and `UnixStream` and for [`TrackedIo`]; implement it for a
/// custom IO type to use that type with [`ConnLimitListener`](crate::ConnLimitListener).
pub trait RejectableIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Arranges for dropping this IO to reset the connection rather than close it gracefully.
    ///
    /// # Errors
    ///
    /// When the transport cannot reset ([`io::ErrorKind::Unsupported`] by default); the
    /// listener then simply closes.
    fn reset_on_drop(&self) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

impl RejectableIo for tokio::net::TcpStream {
    fn reset_on_drop(&self) -> io::Result<()> {
        self.set_zero_linger()
    }
}

#[cfg(unix)]
impl RejectableIo for tokio::net::UnixStream {}

impl<IO: RejectableIo> RejectableIo for TrackedIo<IO> {
    fn reset_on_drop(&self) -> io::Result<()> {
        self.get_ref().reset_on_drop()
    }
}

/// The canned answer to `rejected`, from its reason's facets: the reason's status (429 for a
/// client's limits, 503 when the server as a whole is full) and message, and `Retry-After` when
/// the refusal has a time. Built in the refusal's own task, off the accept path.
fn canned_response(rejected: Rejected) -> Vec<u8> {
    let reason = rejected.reason().info();
    let status = reason.http_status();
    let body = reason.message();
    let mut response = format!("HTTP/1.1 {status} {}\r\n", status_text(status));
    if let Some(secs) = rejected.retry_after_secs() {
        response.push_str(&format!("retry-after: {secs}\r\n"));
    }
    response.push_str(&format!(
        "content-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\n\
         connection: close\r\n\
         \r\n\
         {body}\n",
        body.len() + 1
    ));
    response.into_bytes()
}

/// The reason phrase of the statuses refusals are answered with.
fn status_text(status: u16) -> &'static str {
    match status {
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Refused",
    }
}

/// After the canned response, how much of the client's request the writer reads and discards.
/// Closing a socket with unread input makes the kernel send an RST that can destroy the response
/// before the client reads it; draining a little first lets the response arrive intact.
const MAX_DRAIN_BYTES: usize = 16 * 1024;

/// The listener's refusal policy and the bookkeeping for in-progress HTTP refusals.
#[derive(Debug, Clone)]
pub(crate) struct Rejector {
    pub(crate) action: RejectAction,
    pub(crate) deadline: Duration,
    pub(crate) max_pending: usize,
    pending: Arc<AtomicUsize>,
}

impl Default for Rejector {
    fn default() -> Self {
        Rejector {
            action: RejectAction::Close,
            deadline: Duration::from_secs(2),
            max_pending: 64,
            pending: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Rejector {
    /// Refuses `io` as configured. Never waits: an HTTP answer is written by a spawned task.
    pub(crate) fn reject<IO: RejectableIo>(&self, io: IO, rejected: Rejected) {
        match self.action {
            RejectAction::Close => drop(io),
            RejectAction::Reset => {
                // Falls back to a plain close where the transport cannot reset.
                let _ = io.reset_on_drop();
                drop(io);
            }
            RejectAction::HttpResponse => {
                match PendingSlot::take(&self.pending, self.max_pending) {
                    Some(slot) => {
                        let deadline = self.deadline;
                        tokio::spawn(async move {
                            let _slot = slot;
                            let response = canned_response(rejected);
                            let _ = tokio::time::timeout(deadline, answer(io, &response)).await;
                        });
                    }
                    None => drop(io),
                }
            }
        }
    }

    /// HTTP refusals being written now.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }
}

/// Waits for the client's request to start, writes `response`, half-closes, and drains a bounded
/// amount of input until the client closes.
///
/// Answering before the request arrives would be a response to nothing: HTTP clients such as
/// hyper treat unsolicited bytes as a broken connection and never show the 429. A client that
/// sends nothing is simply closed when the deadline passes.
async fn answer<IO: AsyncRead + AsyncWrite + Unpin>(mut io: IO, response: &[u8]) -> io::Result<()> {
    let mut buf = [0u8; 1024];
    let mut drained = match io.read(&mut buf).await? {
        0 => return Ok(()),
        n => n,
    };
    io.write_all(response).await?;
    io.shutdown().await?;
    while drained < MAX_DRAIN_BYTES {
        match io.read(&mut buf).await? {
            0 => break,
            n => drained += n,
        }
    }
    Ok(())
}

/// One of the `max_pending` places for an HTTP refusal in progress; freed on drop.
#[derive(Debug)]
struct PendingSlot(Arc<AtomicUsize>);

impl PendingSlot {
    fn take(pending: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| PendingSlot(Arc::clone(pending)))
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_responses_say_what_the_table_says_with_exact_lengths() {
        use crate::reason::RejectReason;
        for &reason in RejectReason::ALL {
            let rejected = Rejected {
                reason,
                retry_after: None,
            };
            let response = String::from_utf8(canned_response(rejected)).unwrap();
            let (head, body) = response.split_once("\r\n\r\n").unwrap();
            let info = reason.info();
            let status_line = format!("HTTP/1.1 {} ", info.http_status());
            assert!(head.starts_with(&status_line), "{response}");
            assert!(!head.contains("Refused"), "a status with no phrase: {head}");
            assert_eq!(body, format!("{}\n", info.message()));
            assert!(head.contains(&format!("content-length: {}", body.len())));
        }
        let banned = Rejected {
            reason: RejectReason::Banned,
            retry_after: Some(Duration::from_millis(1500)),
        };
        let response = String::from_utf8(canned_response(banned)).unwrap();
        assert!(response.starts_with("HTTP/1.1 429 Too Many Requests\r\nretry-after: 2\r\n"));
    }

    #[test]
    fn pending_slots_are_capped_and_freed() {
        let pending = Arc::new(AtomicUsize::new(0));
        let a = PendingSlot::take(&pending, 2).unwrap();
        let _b = PendingSlot::take(&pending, 2).unwrap();
        assert!(PendingSlot::take(&pending, 2).is_none());
        drop(a);
        assert!(PendingSlot::take(&pending, 2).is_some());
        assert_eq!(Rejector::default().pending(), 0);
    }
}
