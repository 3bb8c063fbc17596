//! Commit timestamps: nanoseconds since the Unix epoch, strictly increasing across
//! commits. On the wire a timestamp travels as base64 of its 8 little-endian bytes.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

/// A commit timestamp (or a snapshot taken at one). `Timestamp::ZERO` is before
/// every commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);

    pub const fn new(nanos: u64) -> Timestamp {
        Timestamp(nanos)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// The next timestamp after `self` that is not before `now_nanos`.
    pub fn next_after(self, now_nanos: u64) -> Timestamp {
        Timestamp(now_nanos.max(self.0 + 1))
    }

    /// Milliseconds since the epoch, as `_creationTime` holds it.
    pub fn as_millis_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// The wire form: base64 of 8 little-endian bytes.
    pub fn to_base64(self) -> String {
        BASE64.encode(self.0.to_le_bytes())
    }

    /// Parses the wire form; `None` unless it is base64 of exactly 8 bytes.
    pub fn from_base64(s: &str) -> Option<Timestamp> {
        let bytes: [u8; 8] = BASE64.decode(s).ok()?.try_into().ok()?;
        Some(Timestamp(u64::from_le_bytes(bytes)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
