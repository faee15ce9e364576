//! PROXY headers being read, each in a task of its own, so a slow proxy connection never stalls
//! accepting.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::proxy_protocol::InvalidHeader;

/// A finished PROXY header read: the connection, its peer, and what the header said.
pub(super) struct HeaderRead<IO> {
    pub(super) io: IO,
    pub(super) proxy: SocketAddr,
    pub(super) header:
        Result<Result<Option<SocketAddr>, InvalidHeader>, tokio::time::error::Elapsed>,
}

/// The header reads in progress, oldest first, and the channel their results arrive on.
///
/// Results go through a channel rather than a `JoinSet`, because several tasks may call
/// `accept` on one listener: a channel receiver behind an async mutex wakes whichever of them
/// is waiting, where a `JoinSet` remembers only the last task that polled it.
pub(super) struct HeaderReads<IO> {
    in_progress: Mutex<VecDeque<AbortHandle>>,
    sender: mpsc::UnboundedSender<HeaderRead<IO>>,
    receiver: tokio::sync::Mutex<mpsc::UnboundedReceiver<HeaderRead<IO>>>,
}

impl<IO: Send + 'static> HeaderReads<IO> {
    pub(super) fn new() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        HeaderReads {
            in_progress: Mutex::new(VecDeque::new()),
            sender,
            receiver: tokio::sync::Mutex::new(receiver),
        }
    }

    /// Starts `read`, keeping at most `max` (at least 1) reads in progress: when full, the oldest
    /// is abandoned (its connection closed) and `true` returned. The oldest is the one most likely
    /// to be a peer that connected and went silent, and a flood of silent connections then only
    /// pushes out its own.
    pub(super) fn start(
        &self,
        max: usize,
        read: impl Future<Output = HeaderRead<IO>> + Send + 'static,
    ) -> bool {
        let mut in_progress = self
            .in_progress
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut evicted = false;
        if in_progress.len() >= max {
            in_progress.retain(|task| !task.is_finished());
            if in_progress.len() >= max {
                if let Some(oldest) = in_progress.pop_front() {
                    oldest.abort();
                    evicted = true;
                }
            }
        }
        let sender = self.sender.clone();
        let task = tokio::spawn(async move {
            // The receiver lives as long as `self`; if it is gone, so is the listener.
            let _ = sender.send(read.await);
        });
        in_progress.push_back(task.abort_handle());
        evicted
    }

    /// Polls for the next finished read, for an owner with exclusive access (a stream's
    /// `poll_next`), which needs no lock around the receiver.
    pub(super) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<HeaderRead<IO>> {
        // The receiver never ends while `self.sender` exists.
        self.receiver
            .get_mut()
            .poll_recv(cx)
            .map(|finished| finished.expect("the sender lives as long as the receiver"))
    }

    /// The next finished read, for owners that share the listener. Cancel safe; never ready
    /// while no read finishes.
    pub(super) async fn next(&self) -> HeaderRead<IO> {
        let mut receiver = self.receiver.lock().await;
        match receiver.recv().await {
            Some(finished) => finished,
            // Unreachable while `self.sender` exists; wait forever rather than spin.
            None => std::future::pending().await,
        }
    }
}

impl<IO> Drop for HeaderReads<IO> {
    /// Abandons the reads in progress with the listener: their connections close.
    fn drop(&mut self) {
        let in_progress = self
            .in_progress
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for task in in_progress.drain(..) {
            task.abort();
        }
    }
}
