//! Node identity keys: Ed25519 signing over transcripts.
//!
//! A node's 32-byte seed gives both its libp2p identity (in `node`) and the [`Signer`] here
//! (ring's `Ed25519KeyPair::from_seed_unchecked`), so the key that authenticates a connection
//! (Noise) is the key that signs rosters and messages. A [`NodeKey`] is the 32-byte public key;
//! `node` maps it to a libp2p PeerId. In JSON (roster files) keys, signatures and byte strings
//! are lowercase hex; on the wire (CBOR) they are byte strings.

use std::fmt;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A signature did not verify (opaque on purpose, as ring's `Unspecified`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signature does not verify")]
pub struct BadSignature;

/// An Ed25519 public key: a node's identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeKey(pub [u8; 32]);

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl NodeKey {
    /// The key written as 64 hex digits, if `hex` is that.
    pub fn from_hex(hex: &str) -> Option<Self> {
        hex::decode(hex.trim()).ok()?.try_into().ok().map(Self)
    }

    /// Checks `signature` over `transcript` under this key.
    pub fn verify(&self, transcript: &[u8], signature: &Signature) -> Result<(), BadSignature> {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(transcript, &signature.0)
            .map_err(|_| BadSignature)
    }
}

impl Signature {
    /// The signature written as 128 hex digits, if `hex` is that.
    pub fn from_hex(hex: &str) -> Option<Self> {
        hex::decode(hex.trim()).ok()?.try_into().ok().map(Self)
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey({})", hex::encode(&self.0[..8]))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}..)", hex::encode(&self.0[..8]))
    }
}

/// The signing half of a node identity. Its `Debug` never shows key material.
pub struct Signer {
    pair: Ed25519KeyPair,
    key: NodeKey,
}

impl Signer {
    /// The signer for a 32-byte identity seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        // Unwrap safety: every 32-byte string is a valid Ed25519 seed.
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).expect("32-byte seeds are valid");
        let key = NodeKey(
            pair.public_key()
                .as_ref()
                .try_into()
                .expect("Ed25519 public keys are 32 bytes"),
        );
        Self { pair, key }
    }

    /// This signer's public key.
    pub fn key(&self) -> NodeKey {
        self.key
    }

    /// Signs a transcript.
    pub fn sign(&self, transcript: &[u8]) -> Signature {
        Signature(
            self.pair
                .sign(transcript)
                .as_ref()
                .try_into()
                .expect("Ed25519 signatures are 64 bytes"),
        )
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Signer")
            .field(&self.key)
            .finish_non_exhaustive()
    }
}

/// A byte string: hex in JSON, a CBOR byte string on the wire.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

fn serialize_bytes<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        s.serialize_str(&hex::encode(bytes))
    } else {
        s.serialize_bytes(bytes)
    }
}

fn deserialize_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string or lowercase hex")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            hex::decode(v).map_err(|_| E::custom("invalid hex"))
        }
    }
    if d.is_human_readable() {
        d.deserialize_str(Visitor)
    } else {
        d.deserialize_byte_buf(Visitor)
    }
}

macro_rules! bytes_serde {
    ($ty:ident, $len:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serialize_bytes(&self.0, s)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = deserialize_bytes(d)?;
                let n = v.len();
                v.try_into().map($ty).map_err(|_| {
                    serde::de::Error::custom(format!(
                        "{} must be {} bytes, got {n}",
                        stringify!($ty),
                        $len
                    ))
                })
            }
        }
    };
}
bytes_serde!(NodeKey, 32);
bytes_serde!(Signature, 64);

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_bytes(&self.0, s)
    }
}
impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_bytes(d).map(Bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_signatures_read_from_hex_only_at_their_length() {
        let key = "ab".repeat(32);
        assert_eq!(NodeKey::from_hex(&key), Some(NodeKey([0xab; 32])));
        assert_eq!(
            NodeKey::from_hex(&format!(" {key}\n")),
            Some(NodeKey([0xab; 32]))
        );
        for bad in [
            "ab".repeat(31),
            "ab".repeat(33),
            format!("{}zz", "ab".repeat(31)),
            String::new(),
        ] {
            assert_eq!(NodeKey::from_hex(&bad), None, "{bad}");
        }
        assert_eq!(
            Signature::from_hex(&"01".repeat(64)).map(|s| s.0),
            Some([1; 64])
        );
        assert!(Signature::from_hex(&key).is_none());
    }

    #[test]
    fn rfc8032_test_vector_1() {
        // RFC 8032 §7.1, TEST 1: the empty message.
        let seed: [u8; 32] =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .unwrap()
                .try_into()
                .unwrap();
        let signer = Signer::from_seed(&seed);
        assert_eq!(
            hex::encode(signer.key().0),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        let sig = signer.sign(b"");
        assert_eq!(
            hex::encode(sig.0),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        signer.key().verify(b"", &sig).unwrap();
        assert_eq!(signer.key().verify(b"x", &sig), Err(BadSignature));
    }

    #[test]
    fn json_is_hex_and_cbor_is_bytes() {
        let key = Signer::from_seed(&[1; 32]).key();
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(json, format!("\"{}\"", hex::encode(key.0)));
        assert_eq!(serde_json::from_str::<NodeKey>(&json).unwrap(), key);
        let mut cbor = Vec::new();
        ciborium::into_writer(&key, &mut cbor).unwrap();
        assert_eq!(cbor[..2], [0x58, 32]); // major type 2 (bytes), one-byte length
        assert_eq!(ciborium::from_reader::<NodeKey, _>(&cbor[..]).unwrap(), key);
        assert!(serde_json::from_str::<NodeKey>("\"abcd\"").is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let s = format!("{:?}", Signer::from_seed(&[2; 32]));
        assert!(s.starts_with("Signer(NodeKey("), "{s}");
        assert!(!s.contains(&hex::encode([2u8; 32])));
    }
}
