//! Domain-separated, length-prefixed byte strings: the only bytes that are ever signed.
//!
//! A signature never covers serde output (STYLE.md house rule 2): every signed object builds
//! its transcript by hand from its fields. A transcript starts with the label
//! `mbc-node/v{PROTOCOL_VERSION} {purpose}` and every field after it is written with its
//! length, so no two different field lists give the same bytes and a signature made for one
//! purpose (a roster, a request) is never valid for another.

use crate::PROTOCOL_VERSION;

/// A transcript under construction.
#[derive(Debug, Clone)]
pub struct Transcript(Vec<u8>);

impl Transcript {
    /// Starts a transcript for `purpose`, e.g. `"roster"` or `"request"`.
    pub fn new(purpose: &str) -> Self {
        let label = format!("mbc-node/v{PROTOCOL_VERSION} {purpose}");
        Self(Vec::with_capacity(256)).bytes(label.as_bytes())
    }

    /// Appends a byte string, prefixed by its length (u32, big-endian).
    pub fn bytes(mut self, bytes: &[u8]) -> Self {
        let len =
            u32::try_from(bytes.len()).expect("transcript fields are size-bounded below 4 GiB");
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(bytes);
        self
    }

    /// Appends a UTF-8 string as a byte string.
    pub fn str(self, s: &str) -> Self {
        self.bytes(s.as_bytes())
    }

    /// Appends an unsigned integer (8 bytes, big-endian).
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a signed integer (8 bytes, big-endian two's complement).
    pub fn i64(mut self, v: i64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a one-byte tag (an enum variant).
    pub fn tag(mut self, tag: u8) -> Self {
        self.0.push(tag);
        self
    }

    /// The finished bytes.
    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes() {
        let t = Transcript::new("x")
            .str("ab")
            .u64(1)
            .i64(-1)
            .tag(7)
            .finish();
        assert_eq!(
            hex::encode(t),
            concat!(
                "0000000d",
                "6d62632d6e6f64652f76312078", // "mbc-node/v1 x"
                "00000002",
                "6162",
                "0000000000000001",
                "ffffffffffffffff",
                "07"
            )
        );
    }

    #[test]
    fn length_prefixes_separate_fields() {
        let a = Transcript::new("x").str("ab").str("c").finish();
        let b = Transcript::new("x").str("a").str("bc").finish();
        assert_ne!(a, b);
        assert_ne!(Transcript::new("x").finish(), Transcript::new("y").finish());
    }
}
