//! The request vocabulary every front end shares: what a client asks of
//! one key, whichever protocol carried it (gRPC, the HTTP gateway, a peer
//! node), and whichever shard or node ends up serving it.

use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOp {
    Get {
        group: String,
        key: String,
    },
    Set {
        group: String,
        key: String,
        value: Bytes,
        /// 0 = never expires.
        ttl_ms: u64,
    },
    Delete {
        group: String,
        key: String,
    },
}

impl CacheOp {
    pub fn group(&self) -> &str {
        match self {
            CacheOp::Get { group, .. }
            | CacheOp::Set { group, .. }
            | CacheOp::Delete { group, .. } => group,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            CacheOp::Get { key, .. } | CacheOp::Set { key, .. } | CacheOp::Delete { key, .. } => {
                key
            }
        }
    }
}

/// Largest key, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;

/// Largest group name, in bytes.
pub const MAX_GROUP_BYTES: usize = 128;

/// Why a request's key, group or value is refused. The same rules hold
/// for every front end (gRPC, the gateway, peer nodes); each maps the
/// reason to its own status (gRPC INVALID_ARGUMENT / RESOURCE_EXHAUSTED,
/// HTTP 400 / 413, the peer error reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// The key or the group breaks the rules; the text says how.
    Name(String),
    /// The value is longer than `--max-value`.
    ValueTooLarge { len: usize, max: u64 },
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Name(why) => f.write_str(why),
            Invalid::ValueTooLarge { len, max } => write!(
                f,
                "value is {len} bytes: the limit is {max} bytes (--max-value)"
            ),
        }
    }
}

/// A key: 1 to [`MAX_KEY_BYTES`] bytes of UTF-8 without control
/// characters (U+0000-U+001F, U+007F), so that keys are safe to log, to
/// put in a URL path and to compare byte for byte.
pub fn check_key(key: &str) -> Result<(), Invalid> {
    if key.is_empty() {
        return Err(Invalid::Name(format!(
            "key is empty: a key must be 1 to {MAX_KEY_BYTES} bytes"
        )));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Invalid::Name(format!(
            "key is {} bytes: the limit is {MAX_KEY_BYTES} bytes",
            key.len()
        )));
    }
    check_no_controls("key", key)
}

/// A group: 0 ("" is the default group) to [`MAX_GROUP_BYTES`] bytes of
/// UTF-8 without control characters.
pub fn check_group(group: &str) -> Result<(), Invalid> {
    if group.len() > MAX_GROUP_BYTES {
        return Err(Invalid::Name(format!(
            "group is {} bytes: the limit is {MAX_GROUP_BYTES} bytes",
            group.len()
        )));
    }
    check_no_controls("group", group)
}

fn check_no_controls(what: &str, s: &str) -> Result<(), Invalid> {
    match s.bytes().position(|b| b < 0x20 || b == 0x7f) {
        None => Ok(()),
        Some(at) => Err(Invalid::Name(format!(
            "{what} has a control character (byte 0x{:02x} at offset {at}): \
             control characters U+0000-U+001F and U+007F are not allowed",
            s.as_bytes()[at]
        ))),
    }
}

impl CacheOp {
    /// Checks the key, the group and (for a Set) the value against the
    /// rules every front end enforces alike.
    pub fn validate(&self, max_value: u64) -> Result<(), Invalid> {
        check_key(self.key())?;
        check_group(self.group())?;
        if let CacheOp::Set { value, .. } = self {
            if value.len() as u64 > max_value {
                return Err(Invalid::ValueTooLarge {
                    len: value.len(),
                    max: max_value,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(group: &str, key: &str) -> CacheOp {
        CacheOp::Get {
            group: group.into(),
            key: key.into(),
        }
    }

    #[test]
    fn keys_groups_and_values() {
        assert_eq!(get("", "k").validate(10), Ok(()));
        assert_eq!(get("g", &"k".repeat(MAX_KEY_BYTES)).validate(10), Ok(()));
        assert_eq!(get(&"g".repeat(MAX_GROUP_BYTES), "ü").validate(10), Ok(()));
        for (group, key, needle) in [
            ("", "", "key is empty"),
            ("", &"k".repeat(MAX_KEY_BYTES + 1) as &str, "limit is 4096"),
            (
                &"g".repeat(MAX_GROUP_BYTES + 1) as &str,
                "k",
                "limit is 128",
            ),
            ("", "a\0b", "byte 0x00 at offset 1"),
            ("", "line\n", "byte 0x0a at offset 4"),
            ("g\x7f", "k", "group has a control character"),
        ] {
            match get(group, key).validate(10) {
                Err(Invalid::Name(why)) => assert!(why.contains(needle), "{why}"),
                other => panic!("{group:?}/{key:?}: {other:?}"),
            }
        }
        let set = |n: usize| CacheOp::Set {
            group: String::new(),
            key: "k".into(),
            value: Bytes::from(vec![0; n]),
            ttl_ms: 0,
        };
        assert_eq!(set(10).validate(10), Ok(()));
        assert_eq!(
            set(11).validate(10),
            Err(Invalid::ValueTooLarge { len: 11, max: 10 })
        );
        assert!(set(11)
            .validate(10)
            .unwrap_err()
            .to_string()
            .contains("--max-value"));
    }
}
