//! Giving a connection back for fair share's reclaim: a connection of a client over its share
//! takes one of the client's asks when it has no request in flight, and closes gracefully (an
//! HTTP/1 keep-alive connection is closed, an HTTP/2 one sent `GOAWAY`). A request in flight is
//! never cut: the connection looks only while it is idle, and a graceful shutdown lets a
//! request that started meanwhile finish.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::limiter::{Giveback, RECLAIMED_GOAWAY, RECLAIMED_IDLE};

/// One connection as reclaim sees it: its requests in flight, whether it speaks HTTP/2, and what
/// its client is asked to give back.
#[derive(Debug)]
pub(super) struct ConnState {
    in_flight: AtomicUsize,
    http2: AtomicBool,
    giveback: Arc<Giveback>,
}

impl ConnState {
    pub(super) fn new(giveback: Arc<Giveback>) -> Self {
        ConnState {
            in_flight: AtomicUsize::new(0),
            http2: AtomicBool::new(false),
            giveback,
        }
    }

    /// Counts a request in flight on this connection until the returned guard is dropped (when
    /// its response body ends).
    pub(super) fn start(self: &Arc<Self>, http2: bool) -> InFlight {
        if http2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Completes when this connection, idle, took one of its client's asks: the cause to count
    /// its close under. Never completes while nothing is asked.
    pub(super) async fn given_back(&self) -> &'static str {
        loop {
            let notified = self.giveback.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before looking, so that an ask made after the look wakes it.
            notified.as_mut().enable();
            let idle = self.in_flight.load(Ordering::Relaxed) == 0;
            if idle && self.giveback.take() {
                return if self.http2.load(Ordering::Relaxed) {
                    RECLAIMED_GOAWAY
                } else {
                    RECLAIMED_IDLE
                };
            }
            notified.await;
        }
    }
}

/// A request in flight on a connection; dropping it ends the request.
#[derive(Debug)]
pub(super) struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let state = &self.0;
        let before = state.in_flight.fetch_sub(1, Ordering::Relaxed);
        // The connection is idle now: if its client is asked for one back, it may give itself.
        if before == 1 && state.giveback.is_asked() {
            state.giveback.wake();
        }
    }
}

pin_project! {
    /// A response body that keeps its request counted in flight on its connection until the
    /// body ends, fails or is dropped.
    pub struct InFlightBody<B> {
        #[pin]
        body: B,
        in_flight: Option<InFlight>,
    }
}

impl<B> InFlightBody<B> {
    pub(super) fn new(body: B, in_flight: Option<InFlight>) -> Self {
        InFlightBody { body, in_flight }
    }
}

impl<B: Body> Body for InFlightBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.body.poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            this.in_flight.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> std::fmt::Debug for InFlightBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlightBody").finish_non_exhaustive()
    }
}
