//! The answer a layer sends instead of calling the inner service, built from the refusal
//! reason's facets ([`ReasonInfo`]): its HTTP status and text, or its gRPC code.

use std::time::Duration;

use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode, Version};

use crate::reason::{coarse_secs, ReasonInfo, Rejected};

/// Why a layer answers a request itself: the reason, and when the client may come back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    reason: &'static ReasonInfo,
    retry_after: Option<Duration>,
}

impl Refusal {
    pub(crate) fn new(reason: &'static ReasonInfo, retry_after: Option<Duration>) -> Self {
        Refusal {
            reason,
            retry_after,
        }
    }
}

impl From<Rejected> for Refusal {
    fn from(rejected: Rejected) -> Self {
        Refusal::new(rejected.reason().info(), rejected.retry_after())
    }
}

/// What a refusal needs to know about the request it answers: its HTTP version, and whether it
/// is a gRPC call, which gets a gRPC status instead of an HTTP error. Taken only when refusing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RequestShape {
    version: Version,
    grpc: Option<&'static HeaderValue>,
}

impl RequestShape {
    pub(crate) fn of<B>(request: &Request<B>) -> Self {
        RequestShape {
            version: request.version(),
            grpc: grpc_content_type(request.method(), request.headers()),
        }
    }
}

/// For a gRPC call, the content type to answer it with: gRPC (`application/grpc`,
/// `application/grpc+proto`, ...) or gRPC-Web (`application/grpc-web...`, and its `-text`
/// form), told apart by the request's content type as gRPC servers do. Every gRPC call is a
/// `POST`; any other request is plain HTTP whatever its content type, so it can never turn its
/// refusal into a `200 OK` that a cache in front might keep.
fn grpc_content_type(method: &Method, headers: &HeaderMap) -> Option<&'static HeaderValue> {
    if method != Method::POST {
        return None;
    }
    let content_type = headers.get(CONTENT_TYPE)?.as_bytes();
    // `application/grpc` then nothing, a `+format` or `; parameters`.
    let then_format = |rest: &[u8]| matches!(rest.first(), None | Some(b'+' | b';'));
    let rest = content_type.strip_prefix(b"application/grpc")?;
    if then_format(rest) {
        return Some(&APPLICATION_GRPC);
    }
    let web = rest.strip_prefix(b"-web")?;
    if then_format(web) {
        return Some(&APPLICATION_GRPC_WEB);
    }
    web.strip_prefix(b"-text")
        .filter(|rest| then_format(rest))
        .map(|_| &APPLICATION_GRPC_WEB_TEXT)
}

static TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
static APPLICATION_GRPC: HeaderValue = HeaderValue::from_static("application/grpc");
static APPLICATION_GRPC_WEB: HeaderValue = HeaderValue::from_static("application/grpc-web");
static APPLICATION_GRPC_WEB_TEXT: HeaderValue =
    HeaderValue::from_static("application/grpc-web-text");
static CLOSE: HeaderValue = HeaderValue::from_static("close");
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
static GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

impl Refusal {
    /// The response for this refusal, its body made by `body` from a static text.
    ///
    /// An HTTP request gets the reason's status with its text as the body. A gRPC call gets a
    /// trailers-only gRPC response: `200 OK`, an empty body, and the reason's code and text in
    /// `grpc-status` and `grpc-message`. A refusal that knows when to come back sets
    /// `Retry-After`, or `grpc-retry-pushback-ms` for gRPC. `close_connection` adds
    /// `Connection: close` on HTTP/1 (an HTTP/2 response cannot carry it: hyper strips
    /// connection-level headers there).
    pub(crate) fn response<B>(
        self,
        body: impl FnOnce(&'static str) -> B,
        shape: RequestShape,
        close_connection: bool,
    ) -> Response<B> {
        let reason = self.reason;
        let mut response;
        if let Some(content_type) = shape.grpc {
            response = Response::new(body(""));
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, content_type.clone());
            headers.insert(
                GRPC_STATUS.clone(),
                HeaderValue::from(u16::from(reason.grpc_code())),
            );
            headers.insert(
                GRPC_MESSAGE.clone(),
                HeaderValue::from_static(reason.message()),
            );
            if let Some(wait) = self.retry_after {
                headers.insert(
                    GRPC_RETRY_PUSHBACK_MS.clone(),
                    HeaderValue::from(coarse_secs(wait).saturating_mul(1000)),
                );
            }
        } else {
            response = Response::new(body(reason.message()));
            *response.status_mut() = StatusCode::from_u16(reason.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, TEXT_PLAIN.clone());
            if let Some(wait) = self.retry_after {
                headers.insert(RETRY_AFTER, HeaderValue::from(coarse_secs(wait)));
            }
        }
        if close_connection && shape.version <= Version::HTTP_11 {
            response.headers_mut().insert(CONNECTION, CLOSE.clone());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Limiter};
    use std::net::{IpAddr, Ipv4Addr};

    fn refused_by(config: Config) -> Refusal {
        let limiter = Limiter::new(config);
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let _held = limiter.try_acquire(ip).unwrap();
        Refusal::from(limiter.try_acquire(ip).unwrap_err())
    }

    fn shape(content_type: Option<&'static str>, version: Version) -> RequestShape {
        asked_with(Method::POST, content_type, version)
    }

    fn asked_with(
        method: Method,
        content_type: Option<&'static str>,
        version: Version,
    ) -> RequestShape {
        let mut request = Request::builder().method(method).version(version);
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        RequestShape::of(&request.body(()).unwrap())
    }

    #[test]
    fn grpc_calls_are_recognised_by_method_and_content_type() {
        let grpc = |content_type| shape(Some(content_type), Version::HTTP_2).grpc;
        for (content_type, answered) in [
            ("application/grpc", "application/grpc"),
            ("application/grpc+proto", "application/grpc"),
            ("application/grpc; charset=utf-8", "application/grpc"),
            ("application/grpc-web", "application/grpc-web"),
            ("application/grpc-web+proto", "application/grpc-web"),
            ("application/grpc-web-text", "application/grpc-web-text"),
            (
                "application/grpc-web-text+proto",
                "application/grpc-web-text",
            ),
        ] {
            assert_eq!(grpc(content_type).unwrap(), answered, "{content_type}");
        }
        for other in [
            "application/json",
            "text/grpc",
            "application/grpcx",
            "application/grpc-webx",
        ] {
            assert_eq!(grpc(other), None, "{other}");
        }
        assert_eq!(shape(None, Version::HTTP_2).grpc, None);
        // Only a POST is a gRPC call: a GET can never turn its refusal into a `200 OK`.
        let get = asked_with(Method::GET, Some("application/grpc"), Version::HTTP_11);
        assert_eq!(get.grpc, None);
    }

    #[test]
    fn grpc_refusals_are_trailers_only_with_a_generic_status() {
        let per_client = refused_by(Config {
            max_conns_per_client: 1,
            ..Config::default()
        });
        let global = refused_by(Config {
            max_conns_total: 1,
            ..Config::default()
        });
        let grpc = shape(Some("application/grpc"), Version::HTTP_2);
        for (refusal, code) in [
            (per_client, "8"),
            (global, "14"),
            (Refusal::new(&crate::peer::NO_CLIENT_ADDRESS, None), "13"),
        ] {
            let response = refusal.response(|text| text, grpc, true);
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(*response.body(), "", "trailers-only: no body");
            let headers = response.headers();
            assert_eq!(headers["content-type"], "application/grpc");
            assert_eq!(headers["grpc-status"], code);
            assert_eq!(headers["grpc-message"], refusal.reason.message());
            assert!(
                !headers.contains_key(CONNECTION),
                "HTTP/2 has no Connection"
            );
            assert!(!headers.contains_key(RETRY_AFTER));
        }
    }

    #[test]
    fn a_rate_refusal_tells_grpc_clients_when_to_come_back() {
        let refusal = refused_by(Config {
            connect_rate: Some(crate::RateLimit::new(1, std::time::Duration::from_secs(60))),
            ..Config::default()
        });
        let grpc = shape(Some("application/grpc"), Version::HTTP_2);
        let response = refusal.response(|text| text, grpc, false);
        let pushback: u64 = response.headers()["grpc-retry-pushback-ms"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        // Up to 60 s left, told as the 60 s step with up to 12 s added.
        assert!((1_000..=72_000).contains(&pushback), "{pushback}");
        assert_eq!(pushback % 1000, 0, "whole seconds");
        assert!(!response.headers().contains_key(RETRY_AFTER));
    }

    #[test]
    fn http_refusals_keep_their_status_and_text() {
        let refusal = refused_by(Config {
            max_conns_per_client: 1,
            ..Config::default()
        });
        let response = refusal.response(|text| text, shape(None, Version::HTTP_11), true);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(*response.body(), "too many requests");
        assert_eq!(response.headers()[CONNECTION], "close");
        assert!(!response.headers().contains_key("grpc-status"));
    }
}
