//! ed25519 key files, shared by audit checkpoints and config signing.
//!
//! Format: standard PEM, interoperable with OpenSSL
//! (`openssl genpkey -algorithm ed25519` / `openssl pkey -pubout`):
//! - secret: PKCS#8 `-----BEGIN PRIVATE KEY-----`, created mode 0600;
//! - public: SPKI `-----BEGIN PUBLIC KEY-----`, created mode 0644.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// A key file that cannot be read, written or decoded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Writes a fresh key pair. Refuses to overwrite either file, so a running
/// deployment's key cannot be replaced by accident.
pub fn keygen(secret: &Path, public: &Path) -> Result<(), KeyError> {
    let key = SigningKey::generate(&mut rand_core::OsRng);
    let secret_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Format {
            path: secret.to_path_buf(),
            reason: format!("cannot encode the secret key: {e}"),
        })?;
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| KeyError::Format {
            path: public.to_path_buf(),
            reason: format!("cannot encode the public key: {e}"),
        })?;
    write_new(secret, secret_pem.as_bytes(), 0o600)?;
    // Never leave half a key pair behind.
    write_new(public, public_pem.as_bytes(), 0o644).inspect_err(|_| {
        let _ = std::fs::remove_file(secret);
    })
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = crate::files::create_new(path, mode).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

/// A PEM key is a few hundred bytes.
const MAX_KEY_BYTES: u64 = 64 << 10;

fn read_text(path: &Path, secret: bool) -> Result<String, KeyError> {
    use crate::files::{ReadError, SecretError};
    let read = if secret {
        crate::files::read_private(path, MAX_KEY_BYTES)
    } else {
        crate::files::read_rules(path, MAX_KEY_BYTES).map_err(SecretError::from)
    };
    let bytes = read.map_err(|e| match e {
        SecretError::Read(ReadError::Io(source)) => KeyError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => KeyError::Format {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })?;
    String::from_utf8(bytes).map_err(|_| KeyError::Format {
        path: path.to_path_buf(),
        reason: "not UTF-8 text".into(),
    })
}

/// Reads a PKCS#8 PEM ed25519 secret key.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    SigningKey::from_pkcs8_pem(&read_text(path, true)?).map_err(|e| KeyError::Format {
        path: path.to_path_buf(),
        reason: format!("not a PKCS#8 PEM ed25519 secret key: {e}"),
    })
}

/// Reads an SPKI PEM ed25519 public key.
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_public_key_pem(&read_text(path, false)?).map_err(|e| KeyError::Format {
        path: path.to_path_buf(),
        reason: format!("not an SPKI PEM ed25519 public key: {e}"),
    })
}

/// Short fingerprint recorded in checkpoints so a reader can tell keys apart:
/// the first 8 bytes of SHA-256 over the raw 32-byte public key, in hex.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, Verifier};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keygen_round_trips_with_modes() {
        let d = tempfile::tempdir().unwrap();
        let (s, p) = (d.path().join("k.pem"), d.path().join("k.pub"));
        keygen(&s, &p).unwrap();
        let mode = std::fs::metadata(&s).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(read_text(&s, true)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(read_text(&p, false)
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----"));
        let sk = load_signing_key(&s).unwrap();
        let vk = load_verifying_key(&p).unwrap();
        assert_eq!(sk.verifying_key(), vk);
        let sig = sk.sign(b"m");
        assert!(vk.verify(b"m", &sig).is_ok());
        assert!(vk.verify(b"n", &sig).is_err());
        assert_eq!(key_id(&vk).len(), 16);
    }

    #[test]
    fn keygen_refuses_to_overwrite_and_bad_files_are_named() {
        let d = tempfile::tempdir().unwrap();
        let (s, p) = (d.path().join("k.pem"), d.path().join("k.pub"));
        keygen(&s, &p).unwrap();
        assert!(keygen(&s, &d.path().join("other.pub")).is_err());
        let err = load_verifying_key(&s).unwrap_err().to_string();
        assert!(err.contains("k.pem") && err.contains("public key"), "{err}");
        let err = load_signing_key(&d.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing"), "{err}");
    }

    /// A secret key others could read, or replace, is refused: a swapped key would sign
    /// whatever its owner appended to the audit log.
    #[test]
    fn a_secret_key_others_can_reach_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let (s, p) = (d.path().join("k.pem"), d.path().join("k.pub"));
        keygen(&s, &p).unwrap();
        for mode in [0o644, 0o620, 0o604] {
            std::fs::set_permissions(&s, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = load_signing_key(&s).unwrap_err().to_string();
            assert!(
                err.contains("others could read or replace"),
                "{mode:o}: {err}"
            );
        }
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(load_signing_key(&s).is_ok());
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&s, Some(65534), None).unwrap();
            let err = load_signing_key(&s).unwrap_err().to_string();
            assert!(err.contains("owner uid 65534"), "{err}");
        } else {
            eprintln!(
                "SKIPPED the owner half of a_secret_key_others_can_reach_is_refused: needs root"
            );
        }
        // The public key is public.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_verifying_key(&p).is_ok());
    }
}
