//! The responses a layer sends instead of calling the inner service.

use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode, Version};

use crate::{RejectReason, Rejected};

/// Why a layer answers a request itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A limit refused the connection (make-service level) or the request (request level).
    Limit(Rejected),
    /// No client address could be found: a server misconfiguration, answered with 500.
    NoClientAddress,
}

static TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
static CLOSE: HeaderValue = HeaderValue::from_static("close");

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Refusal::Limit(rejected)
                if matches!(
                    rejected.reason(),
                    RejectReason::TotalConnections | RejectReason::TrackedClientsFull
                ) =>
            {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::Limit(_) => StatusCode::TOO_MANY_REQUESTS,
            Refusal::NoClientAddress => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A generic body: it names no limit and no count.
    fn body(self) -> &'static str {
        match self {
            Refusal::Limit(rejected) => rejected.reason().public_message(),
            Refusal::NoClientAddress => "internal server error",
        }
    }

    /// The response for this refusal, its body made by `body` from the static text.
    /// `close_connection` adds `Connection: close` on HTTP/1 (an HTTP/2 response cannot carry
    /// it: hyper strips connection-level headers there).
    pub(crate) fn response<B>(
        self,
        body: impl FnOnce(&'static str) -> B,
        version: Version,
        close_connection: bool,
    ) -> Response<B> {
        let mut response = Response::new(body(self.body()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, TEXT_PLAIN.clone());
        if close_connection && version <= Version::HTTP_11 {
            headers.insert(CONNECTION, CLOSE.clone());
        }
        if let Refusal::Limit(rejected) = self {
            if let Some(secs) = rejected.retry_after_secs() {
                headers.insert(RETRY_AFTER, HeaderValue::from(secs));
            }
        }
        response
    }
}
