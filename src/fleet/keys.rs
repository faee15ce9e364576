//! The fleet's Redis keys, and the hash tags that put on one Redis Cluster slot what one sync
//! sends together: a client's rate counters share its tag, a ban shard's keys share the
//! shard's, and the node names share the fleet's.
//!
//! | key | type | what |
//! |---|---|---|
//! | `{P:c:CLIENT}:r:RULE:WINDOW` | string (counter) | the fleet's events of one client under one rule in one window; expires after two periods |
//! | `{P:bS}:ban:SUBJECT` | string | a ban in force on a client (`c:…`) or network (`n:…`): its end, origin node and reason; expires at the ban's end. After a lift, the lift, for 24 h |
//! | `{P:bS}:ends` | sorted set | the shard's banned subjects by the end of their bans |
//! | `{P:bS}:log` | stream | the shard's bans and lifts, kept for [`LOG_KEEP`] |
//! | `{P:bS}:epoch` | string | a random id set when the shard is first written: a missing or changed one means the shard was emptied or replaced |
//! | `{P:meta}:node:NAME` | string | the instance holding a node name, with a TTL renewed every sync |
//! | `{P:meta}:bans:seq` | counter | raised by every sync that publishes: while it stands still, a node reads no shard's log (but every tenth sync) |

use std::time::Duration;

use crate::limiter::sharing::Banned;

/// How many shards the bans are spread over. Fixed: every node must agree on it.
pub(super) const BAN_SHARDS: usize = 16;

/// How long a shard's log keeps its events: a node that has not read it for longer reads the
/// shard's bans whole instead.
pub(super) const LOG_KEEP: Duration = Duration::from_secs(60);

/// The keys of one fleet, by its prefix.
#[derive(Clone, Debug)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The ban shard `banned` belongs to: a hash of its name that every node computes alike.
    pub(super) fn shard_of(banned: &Banned) -> usize {
        (fnv1a(banned.to_string().as_bytes()) % BAN_SHARDS as u64) as usize
    }

    /// The hash tag of ban shard `shard`.
    pub(super) fn shard_tag(&self, shard: usize) -> String {
        format!("{{{}:b{shard}}}", self.prefix)
    }

    pub(super) fn ban(&self, shard: usize, banned: &Banned) -> String {
        format!("{}:ban:{banned}", self.shard_tag(shard))
    }

    pub(super) fn ends(&self, shard: usize) -> String {
        format!("{}:ends", self.shard_tag(shard))
    }

    pub(super) fn log(&self, shard: usize) -> String {
        format!("{}:log", self.shard_tag(shard))
    }

    pub(super) fn epoch(&self, shard: usize) -> String {
        format!("{}:epoch", self.shard_tag(shard))
    }

    /// The hash tag of a client's rate counters.
    pub(super) fn client_tag(&self, client: &str) -> String {
        format!("{{{}:c:{client}}}", self.prefix)
    }

    /// The counter of `client`'s events under rule `rule` in window `window`.
    pub(super) fn rate(&self, client_tag: &str, rule: &str, window: u64) -> String {
        format!("{client_tag}:r:{rule}:{window}")
    }

    /// The hash tag of the fleet's own keys.
    pub(super) fn meta_tag(&self) -> String {
        format!("{{{}:meta}}", self.prefix)
    }

    /// The fleet's ban change counter, raised by every sync that publishes a ban or a lift.
    pub(super) fn bans_seq(&self) -> String {
        format!("{}:bans:seq", self.meta_tag())
    }

    pub(super) fn node(&self, name: &str) -> String {
        format!("{}:node:{name}", self.meta_tag())
    }

    /// The nodes' heartbeats: a hash of each node's name to when it last beat (Redis's
    /// milliseconds), its syncs and its failed syncs, as `"at syncs errors"`.
    pub(super) fn nodes(&self) -> String {
        format!("{}:nodes", self.meta_tag())
    }
}

/// FNV-1a, 64 bits: a hash that is the same in every process and version, for shard numbers and
/// rule ids.
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the part between the first
/// `{` and the next `}`, when not empty), or of the whole key, modulo 16384.
pub(super) fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = key.find('{').and_then(|open| {
        let close = key[open + 1..].find('}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    crc16(tagged.unwrap_or(bytes)) % 16384
}

fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |mut crc, b| {
        crc ^= u16::from(*b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
        crc
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // From the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("foo{}{bar}"), slot("foo{}{bar}"));
        assert_ne!(slot("foo{}{bar}"), slot("bar"));
        let keys = Keys::new("connlimit");
        let tag = keys.client_tag("192.0.2.1");
        assert_eq!(
            slot(&keys.rate(&tag, "h:1", 7)),
            slot(&keys.rate(&tag, "h:2", 8))
        );
        let banned: Banned = "c:192.0.2.1".parse().unwrap();
        let shard = Keys::shard_of(&banned);
        assert_eq!(slot(&keys.ban(shard, &banned)), slot(&keys.epoch(shard)));
        assert_eq!(slot(&keys.log(shard)), slot(&keys.ends(shard)));
    }
}
