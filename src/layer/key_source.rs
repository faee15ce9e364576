//! [`KeySource`]: where the request level finds who a request is from.

use std::fmt;
use std::sync::Arc;

use http::header::{HeaderName, AUTHORIZATION};
use http::request::Parts;

use crate::keys::RequestKey;

/// Where the request layer finds a request's [`RequestKey`]: a header, a bearer token, an
/// extension an auth layer put on the request, or a function of the request's head. A request
/// it finds no key in is limited by its address alone, as without a key source.
///
/// A keyed request is held to its key's limits *and* to its address's (see
/// [`keys`](crate::keys)), so a client gains nothing by inventing keys.
///
/// ```
/// use tower_connlimit::{keys::RequestKey, layer::KeySource, Config, ConnLimitLayer};
///
/// // Keyed by the `x-api-key` header.
/// let layer = ConnLimitLayer::new(Config::default())
///     .keyed_by(KeySource::header("x-api-key".parse().unwrap()));
///
/// // Keyed by the tenant a header names, in the tier the application knows it by.
/// let by_tenant = KeySource::from_fn(|head| {
///     let tenant = head.headers.get("x-tenant")?.to_str().ok()?;
///     let tier = if tenant.starts_with("enterprise-") { "pro" } else { "free" };
///     Some(RequestKey::new(tenant).tier(tier))
/// });
/// # let _ = (layer, by_tenant);
/// ```
#[derive(Clone)]
pub struct KeySource {
    find: Arc<Find>,
    describe: &'static str,
}

/// What finds a request's key in its head.
type Find = dyn Fn(&Parts) -> Option<RequestKey> + Send + Sync;

impl KeySource {
    /// The value of header `name` (its bytes, whatever they are); a request without it, or
    /// with an empty one, has no key. The first value counts when the header is repeated.
    pub fn header(name: HeaderName) -> Self {
        KeySource {
            find: Arc::new(move |head| {
                let value = head.headers.get(&name)?.as_bytes();
                (!value.is_empty()).then(|| RequestKey::new(value))
            }),
            describe: "header",
        }
    }

    /// The token of an `Authorization: Bearer <token>` header (the scheme in any case, as RFC
    /// 9110 has it); another scheme, or no token, is no key.
    pub fn bearer() -> Self {
        KeySource {
            find: Arc::new(|head| {
                bearer_token(head.headers.get(AUTHORIZATION)?.as_bytes()).map(RequestKey::new)
            }),
            describe: "bearer",
        }
    }

    /// A [`RequestKey`] request extension, as an authentication layer placed before this one
    /// inserts it once it knows the caller (with its tier, if it knows that too).
    pub fn extension() -> Self {
        KeySource {
            find: Arc::new(|head| head.extensions.get::<RequestKey>().cloned()),
            describe: "extension",
        }
    }

    /// What `find` says of the request's head: its method, URI, headers and extensions.
    pub fn from_fn(find: impl Fn(&Parts) -> Option<RequestKey> + Send + Sync + 'static) -> Self {
        KeySource {
            find: Arc::new(find),
            describe: "function",
        }
    }

    /// The key of the request whose head is `head`, if it has one.
    #[inline]
    pub(crate) fn find(&self, head: &Parts) -> Option<RequestKey> {
        (self.find)(head)
    }
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeySource").field(&self.describe).finish()
    }
}

/// The token of an `Authorization` value with the `Bearer` scheme.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let token = value[SCHEME.len()..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &[(&str, &str)]) -> Parts {
        let mut request = http::Request::builder();
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn each_source_finds_its_key_or_none() {
        let header = KeySource::header(HeaderName::from_static("x-api-key"));
        let key = |name: &str| Some(RequestKey::new(name));
        assert_eq!(header.find(&head(&[("x-api-key", "k1")])), key("k1"));
        assert_eq!(header.find(&head(&[("x-api-key", "")])), None);
        assert_eq!(header.find(&head(&[])), None);
        let bearer = KeySource::bearer();
        assert_eq!(
            bearer.find(&head(&[("authorization", "Bearer t0k")])),
            key("t0k")
        );
        assert_eq!(
            bearer.find(&head(&[("authorization", "bEaReR  t0k ")])),
            key("t0k")
        );
        assert_eq!(
            bearer.find(&head(&[("authorization", "Basic dXNlcg==")])),
            None
        );
        assert_eq!(bearer.find(&head(&[("authorization", "Bearer ")])), None);
        let extension = KeySource::extension();
        let mut with_extension = head(&[]);
        with_extension
            .extensions
            .insert(RequestKey::new("user-7").tier("pro"));
        assert_eq!(
            extension.find(&with_extension),
            Some(RequestKey::new("user-7").tier("pro"))
        );
        assert_eq!(extension.find(&head(&[])), None);
    }
}
