//! The primitives SecAgg is built from, each from a well-kept crate: X25519 key agreement
//! (x25519-dalek, whose secrets can be exported and so secret-shared), HKDF-SHA256 and
//! ChaCha20-Poly1305 (ring), and the ChaCha20 stream as the mask generator (rand_chacha).

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, KeyType, Salt};
use x25519_dalek::{PublicKey, StaticSecret};

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA256: 32 bytes from `ikm`, salted with the round digest, for `info`.
pub(crate) fn derive(round: &[u8; 32], ikm: &[u8], info: &[&[u8]]) -> [u8; 32] {
    let mut out = [0u8; 32];
    Salt::new(HKDF_SHA256, round)
        .extract(ikm)
        .expand(info, Len(32))
        .and_then(|okm| okm.fill(&mut out))
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    out
}

/// X25519 between our secret and their public key; `None` when the result is all zeros (a
/// low-order public key), which must never become a key.
pub(crate) fn agree(secret: &StaticSecret, public: &[u8; 32]) -> Option<[u8; 32]> {
    let shared = secret.diffie_hellman(&PublicKey::from(*public));
    shared.was_contributory().then(|| *shared.as_bytes())
}

/// The public key of a secret.
pub(crate) fn public(secret: &StaticSecret) -> [u8; 32] {
    PublicKey::from(secret).to_bytes()
}

fn aead_key(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("32-byte ChaCha20 key"))
}

/// Encrypts `plaintext` under a key used for exactly one message (so the all-zero nonce is
/// safe), authenticating `aad`.
pub(crate) fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut buf = plaintext.to_vec();
    aead_key(key)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(aad),
            &mut buf,
        )
        .expect("ChaCha20-Poly1305 seals any message below 256 GiB");
    buf
}

/// Decrypts and authenticates; `None` if the key, the associated data or the bytes differ.
pub(crate) fn open(key: &[u8; 32], aad: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
    let mut buf = ciphertext.to_vec();
    let len = aead_key(key)
        .open_in_place(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(aad),
            &mut buf,
        )
        .ok()?
        .len();
    buf.truncate(len);
    Some(buf)
}

/// Adds (`sign` = +1) or subtracts (−1) the mask stream of `seed` to `acc`, mod 2^64.
pub(crate) fn apply_mask(acc: &mut [u64], seed: &[u8; 32], sign: i8) {
    let mut prg = ChaCha20Rng::from_seed(*seed);
    let mut block = [0u8; 8 * 64];
    for chunk in acc.chunks_mut(64) {
        let bytes = &mut block[..8 * chunk.len()];
        prg.fill_bytes(bytes);
        for (a, b) in chunk.iter_mut().zip(bytes.chunks_exact(8)) {
            let m = u64::from_le_bytes(b.try_into().expect("8-byte chunk"));
            *a = if sign >= 0 {
                a.wrapping_add(m)
            } else {
                a.wrapping_sub(m)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hkdf_separates_salt_and_info() {
        let r = [1u8; 32];
        assert_ne!(derive(&r, b"k", &[b"a"]), derive(&r, b"k", &[b"b"]));
        assert_ne!(derive(&r, b"k", &[b"a"]), derive(&[2; 32], b"k", &[b"a"]));
        assert_eq!(derive(&r, b"k", &[b"a", b"b"]), derive(&r, b"k", &[b"ab"]));
    }

    #[test]
    fn agreement_is_symmetric() {
        let a = StaticSecret::from([3u8; 32]);
        let b = StaticSecret::from([4u8; 32]);
        assert_eq!(agree(&a, &public(&b)), agree(&b, &public(&a)));
        assert_eq!(agree(&a, &[0; 32]), None);
    }

    #[test]
    fn aead_round_trip_and_tamper() {
        let key = [9u8; 32];
        let c = seal(&key, b"ad", b"hello");
        assert_eq!(open(&key, b"ad", &c).as_deref(), Some(&b"hello"[..]));
        assert_eq!(open(&key, b"other", &c), None);
        assert_eq!(open(&[8; 32], b"ad", &c), None);
        let mut t = c.clone();
        t[0] ^= 1;
        assert_eq!(open(&key, b"ad", &t), None);
    }

    #[test]
    fn masks_cancel_and_match_the_chacha20_stream() {
        let seed = [5u8; 32];
        let mut v = vec![10u64, 20, 30];
        apply_mask(&mut v, &seed, 1);
        let mut prg = ChaCha20Rng::from_seed(seed);
        assert_eq!(v[0], 10u64.wrapping_add(prg.next_u64()));
        apply_mask(&mut v, &seed, -1);
        assert_eq!(v, [10, 20, 30]);
    }
}
