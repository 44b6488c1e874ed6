//! Key files in the data directory: the Ed25519 identity seed and the pseudonymisation secret.
//!
//! Both are 32 random bytes from the OS RNG (ring's `SystemRandom`), written with mode 0600 and
//! `create_new`, so an existing key is never overwritten. The identity seed gives the libp2p
//! `Keypair` (and so the PeerId) and the ring signing key of `protocol::keys`: the same 32 bytes.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};
use libp2p::identity::{Keypair, PeerId};
use protocol::pseudonym::{Pseudonymiser, SECRET_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// Length of every key file in bytes.
pub const KEY_LEN: usize = 32;

/// Writes a fresh random key to `path` (mode 0600). Fails if the file exists.
pub fn create_key_file(path: &Path) -> Result<()> {
    let mut key = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| anyhow::anyhow!("the operating system's random number generator failed"))?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("couldn't create key file {}", path.display()))?;
    file.write_all(&key)?;
    file.sync_all()?;
    Ok(())
}

/// Refuses `path` (a key file, the store, the data directory: `what`) if its mode lets other
/// users read it, naming the `chmod` to `fix` (e.g. 0o600) that mends it.
pub fn check_owner_only(path: &Path, what: &str, fix: u32) -> Result<()> {
    let mode = std::fs::metadata(path)
        .with_context(|| format!("couldn't read {what} {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "{what} {} is readable by other users (mode {:o}); run `chmod {fix:o} {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(())
}

/// Reads a key file, refusing one that is the wrong size or readable by others.
pub fn read_key_file(path: &Path) -> Result<[u8; KEY_LEN]> {
    check_owner_only(path, "key file", 0o600)?;
    let bytes = std::fs::read(path)
        .with_context(|| format!("couldn't read key file {}", path.display()))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        anyhow::anyhow!(
            "key file {} has {} bytes, expected {KEY_LEN}",
            path.display(),
            b.len()
        )
    })
}

/// The libp2p keypair for an identity seed.
pub fn identity_keypair(seed: [u8; KEY_LEN]) -> Result<Keypair> {
    Ok(Keypair::ed25519_from_bytes(seed)?)
}

/// The PeerId for an identity seed.
pub fn peer_id(seed: [u8; KEY_LEN]) -> Result<PeerId> {
    Ok(identity_keypair(seed)?.public().to_peer_id())
}

/// The protocol signer for an identity seed (the same key as the libp2p identity).
pub fn signer(seed: [u8; KEY_LEN]) -> protocol::keys::Signer {
    protocol::keys::Signer::from_seed(&seed)
}

/// The pseudonymiser keyed by the secret in `path`.
pub fn pseudonymiser(path: &Path) -> Result<Pseudonymiser> {
    let secret: [u8; SECRET_LEN] = read_key_file(path)?;
    Ok(Pseudonymiser::new(&secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_are_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        create_key_file(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let key = read_key_file(&path).unwrap();
        assert!(create_key_file(&path).is_err());
        assert_eq!(read_key_file(&path).unwrap(), key);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            read_key_file(&path)
                .unwrap_err()
                .to_string()
                .contains("chmod 600")
        );
    }

    #[test]
    fn same_seed_same_peer_id() {
        let a = peer_id([7; 32]).unwrap();
        assert_eq!(a, peer_id([7; 32]).unwrap());
        assert_ne!(a, peer_id([8; 32]).unwrap());
        assert!(a.to_string().starts_with("12D3KooW"));
    }
}
