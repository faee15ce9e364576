//! Requests keyed by who is calling: an API key, a user, a tenant, with tiers of limits.
//!
//! Connections carry nothing but their address, so every connection limit is keyed by it. A
//! request can carry more: an `x-api-key` header, a bearer token, the user an auth layer found.
//! A request admitted with a [`RequestKey`] (by [`Limiter::try_acquire_request_as`], or by the
//! request layer with a [`KeySource`](crate::layer::KeySource)) is held to two sets of limits:
//!
//! - **the key's**: its tier's `max_requests` and `request_rate` (the config's own
//!   `max_requests_per_client` and `request_rate` when the key has no tier), the config's path
//!   rules, and the ban policy, all counted per key;
//! - **its address's**: a ban of the address, and [`KeyConfig::max_requests_per_address`] and
//!   [`KeyConfig::request_rate_per_address`], which every keyed request from one address (one
//!   client key of the address, under the config's prefixes) counts towards, whatever its key.
//!
//! So a client that invents a new key for every request gains nothing over its address's
//! limits: set those to what one address may do in all, and each key's tier to what one caller
//! may do. Requests with no key are limited by address alone, as before.
//!
//! # Private and bounded
//!
//! A key is never stored: [`RequestKey::new`] keeps a 64-bit fingerprint of the name, a keyed
//! hash (SipHash-1-3) under a secret, so the limiter's table, its stats, the admin API and the
//! fleet's Redis hold no credential, and a long key costs what a short one does in memory. The
//! secret is drawn at random per process unless [`set_secret`] gives one: give the same to every
//! node of a fleet (so that they count a key together) and keep it across restarts (so that the
//! fingerprints in [`KeyConfig::assigned`] stay valid). A key prints as `key:` and its 16 hex
//! digits (see [`ClientKey::fingerprint`](crate::ClientKey::fingerprint)). Keys live in the same
//! table as addresses, under the same `max_tracked_clients` and eviction order.
//!
//! [`Limiter::try_acquire_request_as`]: crate::Limiter::try_acquire_request_as

use std::borrow::Cow;
use std::fmt;
use std::hash::Hasher;
use std::sync::OnceLock;

use siphasher::sip::SipHasher13;

use crate::error::ConfigError;
use crate::key::ClientKey;
use crate::rate::RateLimit;

/// Who a request is from, as a fingerprint of its name, and optionally the tier the caller is
/// in (as the application's own records say; else [`KeyConfig::assigned`] or the default tier).
///
/// ```
/// use tower_connlimit::keys::RequestKey;
///
/// let key = RequestKey::new("sk_live_0123456789abcdef").tier("pro");
/// assert!(key.client_key().to_string().starts_with("key:"));
/// assert_eq!(key.client_key(), RequestKey::new("sk_live_0123456789abcdef").client_key());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RequestKey {
    key: ClientKey,
    tier: Option<Cow<'static, str>>,
}

impl RequestKey {
    /// The key named `name` (an API key, a user id, a tenant), hashed under the process's
    /// secret: the name itself is not kept.
    pub fn new(name: impl AsRef<[u8]>) -> Self {
        RequestKey {
            key: ClientKey::named(fingerprint(name.as_ref())),
            tier: None,
        }
    }

    /// The same key in tier `tier` (a name from [`KeyConfig::tiers`]). A tier the config does
    /// not have is the default tier, with a warning in the log.
    pub fn tier(mut self, tier: impl Into<Cow<'static, str>>) -> Self {
        self.tier = Some(tier.into());
        self
    }

    /// The client key this key is counted under: `key:` and its fingerprint.
    pub fn client_key(&self) -> ClientKey {
        self.key
    }

    /// The tier the caller said, if any.
    pub fn tier_name(&self) -> Option<&str> {
        self.tier.as_deref()
    }
}

impl fmt::Debug for RequestKey {
    /// The fingerprint only: the name is not known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestKey")
            .field("key", &format_args!("{}", self.key))
            .field("tier", &self.tier)
            .finish()
    }
}

/// The process's secret, as SipHash's two keys: [`set_secret`]'s, or drawn at random on first
/// use.
static SECRET: OnceLock<(u64, u64)> = OnceLock::new();

/// Sets the secret that keys' fingerprints are hashed under, for the whole process. Give every
/// node of a fleet the same secret (of at least 16 random bytes, read from a file or the
/// environment, never from the config), and keep it across restarts, so that fingerprints mean
/// the same everywhere and always.
///
/// # Errors
///
/// [`SecretInUse`] when a secret is in use already: set by an earlier call, or drawn at random
/// by the first key made. Set it at start, before any request is keyed.
pub fn set_secret(secret: impl AsRef<[u8]>) -> Result<(), SecretInUse> {
    let secret = secret.as_ref();
    let derive = |k0, k1| {
        let mut hasher = SipHasher13::new_with_keys(k0, k1);
        hasher.write(secret);
        hasher.finish()
    };
    let keys = (derive(0x6b65_7973, 1), derive(0x6b65_7973, 2));
    match SECRET.set(keys) {
        Ok(()) => Ok(()),
        Err(_) if SECRET.get() == Some(&keys) => Ok(()),
        Err(_) => Err(SecretInUse(())),
    }
}

/// [`set_secret`] came too late: another secret is in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInUse(());

impl fmt::Display for SecretInUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key secret is in use already: set it before any request is keyed")
    }
}

impl std::error::Error for SecretInUse {}

/// The fingerprint of `name` under the process's secret.
#[inline]
fn fingerprint(name: &[u8]) -> u64 {
    let &(k0, k1) = SECRET.get_or_init(random_secret);
    let mut hasher = SipHasher13::new_with_keys(k0, k1);
    hasher.write(name);
    hasher.finish()
}

/// Two random words, from the standard library's per-process random hash keys.
fn random_secret() -> (u64, u64) {
    use std::hash::BuildHasher;
    let state = std::collections::hash_map::RandomState::new();
    (state.hash_one(1u8), state.hash_one(2u8))
}

/// The limits of keyed requests: [`Config::keys`](crate::Config::keys).
///
/// ```toml
/// [keys]
/// default_tier = "free"
/// max_requests_per_address = 50
/// request_rate_per_address = { events = 600, period = "1m" }
///
/// [[keys.tiers]]
/// name = "free"
/// max_requests = 2
/// request_rate = { events = 60, period = "1m", strategy = "token_bucket" }
///
/// [[keys.tiers]]
/// name = "pro"
/// max_requests = 20
/// request_rate = { events = 600, period = "1m", strategy = "token_bucket" }
///
/// [[keys.assigned]]
/// key = "key:5f0c2a9e77d1b3a4"
/// tier = "pro"
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct KeyConfig {
    /// Named tiers of limits. Default none: every key gets the config's own
    /// `max_requests_per_client` and `request_rate`, counted per key.
    pub tiers: Vec<Tier>,
    /// The tier of a key that names none and is in no [`assigned`](Self::assigned) entry.
    /// Default none: such a key gets the config's own `max_requests_per_client` and
    /// `request_rate`.
    pub default_tier: Option<String>,
    /// Keys given a tier by their fingerprint (as `key:…` prints in stats and the admin), for
    /// keys whose requests name no tier. Needs a [`set_secret`] kept across restarts.
    pub assigned: Vec<KeyTier>,
    /// Keyed requests one address may have in flight, whatever their keys. Default 0: no limit.
    pub max_requests_per_address: usize,
    /// How fast one address may make keyed requests, whatever their keys. Default none.
    pub request_rate_per_address: Option<RateLimit>,
}

/// A named tier of limits for keyed requests.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct Tier {
    /// The tier's name, unique among the tiers.
    pub name: String,
    /// Requests one key of this tier may have in flight. 0 means unlimited.
    #[cfg_attr(feature = "serde", serde(default))]
    pub max_requests: usize,
    /// How fast one key of this tier may make requests. None means no rate.
    #[cfg_attr(feature = "serde", serde(default))]
    pub request_rate: Option<RateLimit>,
}

impl Tier {
    /// A tier named `name` with no limit: set the fields for some.
    pub fn new(name: impl Into<String>) -> Self {
        Tier {
            name: name.into(),
            max_requests: 0,
            request_rate: None,
        }
    }

    /// The same tier with at most `max_requests` in flight per key.
    pub fn max_requests(mut self, max_requests: usize) -> Self {
        self.max_requests = max_requests;
        self
    }

    /// The same tier with `rate` per key.
    pub fn request_rate(mut self, rate: RateLimit) -> Self {
        self.request_rate = Some(rate);
        self
    }
}

/// A key's tier, by the key's fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct KeyTier {
    /// The key, as it prints: `key:` and 16 hex digits.
    #[cfg_attr(feature = "serde", serde(with = "key_text"))]
    pub key: ClientKey,
    /// The name of one of [`KeyConfig::tiers`].
    pub tier: String,
}

impl KeyConfig {
    /// Checks the tiers and the assignments, naming the offending field.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (i, tier) in self.tiers.iter().enumerate() {
            if tier.name.is_empty() {
                return Err(ConfigError::new(
                    format!("keys.tiers[{i}].name"),
                    "must not be empty",
                ));
            }
            if self.tiers[..i].iter().any(|other| other.name == tier.name) {
                return Err(ConfigError::new(
                    format!("keys.tiers[{i}].name"),
                    format!("another tier is named {:?}", tier.name),
                ));
            }
            if let Some(rate) = &tier.request_rate {
                rate.validate(&format!("keys.tiers[{i}].request_rate"))?;
            }
        }
        let has_tier = |name: &str| self.tiers.iter().any(|tier| tier.name == name);
        if let Some(name) = &self.default_tier {
            if !has_tier(name) {
                return Err(ConfigError::new(
                    "keys.default_tier",
                    format!("names no tier in keys.tiers: {name:?}"),
                ));
            }
        }
        for (i, assigned) in self.assigned.iter().enumerate() {
            if assigned.key.fingerprint().is_none() {
                return Err(ConfigError::new(
                    format!("keys.assigned[{i}].key"),
                    "must be a key's fingerprint, `key:` and 16 hex digits, not an address",
                ));
            }
            if self.assigned[..i]
                .iter()
                .any(|other| other.key == assigned.key)
            {
                return Err(ConfigError::new(
                    format!("keys.assigned[{i}].key"),
                    "assigned a tier twice",
                ));
            }
            if !has_tier(&assigned.tier) {
                return Err(ConfigError::new(
                    format!("keys.assigned[{i}].tier"),
                    format!("names no tier in keys.tiers: {:?}", assigned.tier),
                ));
            }
        }
        if let Some(rate) = &self.request_rate_per_address {
            rate.validate("keys.request_rate_per_address")?;
        }
        Ok(())
    }

    /// Whether a keyed request is held to the config's own request limits and to nothing per
    /// address but a ban: no tier of any kind, no limit per address.
    pub(crate) fn is_plain(&self) -> bool {
        self.tiers.is_empty()
            && self.default_tier.is_none()
            && self.assigned.is_empty()
            && !self.limits_addresses()
    }

    /// Whether keyed requests are limited per address beyond a ban.
    pub(crate) fn limits_addresses(&self) -> bool {
        self.max_requests_per_address != 0 || self.request_rate_per_address.is_some()
    }
}

/// A [`ClientKey`] in a config file as the text it prints as.
#[cfg(feature = "serde")]
mod key_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::key::ClientKey;

    pub(super) fn serialize<S: Serializer>(key: &ClientKey, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(key)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ClientKey, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|_| serde::de::Error::custom(format!("not a client key: {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_depends_on_every_byte_and_prints_as_it_parses() {
        let a = RequestKey::new("sk_live_0123456789abcdef").client_key();
        let b = RequestKey::new("sk_live_0123456789abcdeg").client_key();
        assert_ne!(a, b);
        let long = RequestKey::new([7u8; 4096]).client_key();
        assert_eq!(std::mem::size_of_val(&long), std::mem::size_of_val(&a));
        for key in [a, b, long] {
            let text = key.to_string();
            assert!(text.starts_with("key:") && text.len() == 20, "{text}");
            assert_eq!(text.parse::<ClientKey>().unwrap(), key);
        }
        assert!("key:12".parse::<ClientKey>().is_err());
        assert!("key:zz00000000000000".parse::<ClientKey>().is_err());
    }

    #[test]
    fn a_secret_in_use_is_kept() {
        // This test's process drew its secret (or another test set it) before this call.
        let before = RequestKey::new("k").client_key();
        assert!(set_secret("another secret").is_err());
        assert_eq!(RequestKey::new("k").client_key(), before);
    }

    #[test]
    fn tiers_are_checked_by_field() {
        let tiers = vec![Tier::new("free"), Tier::new("pro")];
        let ok = KeyConfig {
            tiers: tiers.clone(),
            default_tier: Some("free".into()),
            ..KeyConfig::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        let cases = [
            (
                KeyConfig {
                    tiers: vec![Tier::new("free"), Tier::new("free")],
                    ..KeyConfig::default()
                },
                "keys.tiers[1].name",
            ),
            (
                KeyConfig {
                    tiers: tiers.clone(),
                    default_tier: Some("gold".into()),
                    ..KeyConfig::default()
                },
                "keys.default_tier",
            ),
            (
                KeyConfig {
                    tiers: tiers.clone(),
                    assigned: vec![KeyTier {
                        key: "192.0.2.1".parse().unwrap(),
                        tier: "pro".into(),
                    }],
                    ..KeyConfig::default()
                },
                "keys.assigned[0].key",
            ),
            (
                KeyConfig {
                    tiers,
                    assigned: vec![KeyTier {
                        key: RequestKey::new("a").client_key(),
                        tier: "gold".into(),
                    }],
                    ..KeyConfig::default()
                },
                "keys.assigned[0].tier",
            ),
        ];
        for (config, field) in cases {
            assert_eq!(config.validate().unwrap_err().field(), field);
        }
    }
}
