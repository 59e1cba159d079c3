//! The keyed `patient_id_hash`: HMAC-SHA256 of the DICOM Patient ID, so the same patient gets
//! the same hash on this node while nobody without the key can test a guessed ID against it
//! (a plain hash of a short ID can be reversed by trying them all).

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Name of the generated key inside the data folder.
pub const KEY_FILE: &str = "voxray_hash.key";
/// Shortest accepted key, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read or create the VoxRay hash key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the VoxRay hash key ({0}) is shorter than {MIN_KEY_BYTES} bytes")]
    TooShort(String),
}

/// `compat.voxray_hash_key` when set, else `<data_dir>/voxray_hash.key`, created with 32
/// random bytes (hex, mode 0600) when missing.
pub fn hash_key(
    configured: Option<&SecretString>,
    data_dir: &Path,
) -> Result<SecretString, KeyFileError> {
    if let Some(k) = configured.filter(|k| !k.expose_secret().is_empty()) {
        if k.expose_secret().len() < MIN_KEY_BYTES {
            return Err(KeyFileError::TooShort("compat.voxray_hash_key".into()));
        }
        return Ok(k.clone());
    }
    let path = data_dir.join(KEY_FILE);
    let io = |source| KeyFileError::Io {
        path: path.clone(),
        source,
    };
    let from_file = |text: String| {
        let key = text.trim().to_string();
        if key.len() < MIN_KEY_BYTES {
            return Err(KeyFileError::TooShort(path.display().to_string()));
        }
        Ok(SecretString::from(key))
    };
    from_file(
        crate::auth::secret_file::read_or_create(&path, "VoxRay patient hash key").map_err(io)?,
    )
}

/// Lower-case hex HMAC-SHA256 of the trimmed Patient ID.
pub fn patient_hash(key: &SecretString, patient_id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes())
        .expect("BUG: HMAC accepts keys of any length");
    mac.update(patient_id.trim().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let key = SecretString::from("Jefe".to_string());
        assert_eq!(
            patient_hash(&key, "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn generated_once_with_mode_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = hash_key(None, dir.path()).unwrap();
        let b = hash_key(None, dir.path()).unwrap();
        assert_eq!(a.expose_secret(), b.expose_secret());
        assert_eq!(a.expose_secret().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = tempfile::tempdir().unwrap();
        let c = hash_key(None, other.path()).unwrap();
        assert_ne!(
            patient_hash(&a, "PAT-1"),
            patient_hash(&c, "PAT-1"),
            "different keys give different hashes"
        );
    }

    #[test]
    fn configured_key_wins_and_short_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let k = SecretString::from("0123456789abcdef0123".to_string());
        let got = hash_key(Some(&k), dir.path()).unwrap();
        assert_eq!(got.expose_secret(), k.expose_secret());
        assert!(!dir.path().join(KEY_FILE).exists());
        let short = SecretString::from("short".to_string());
        assert!(matches!(
            hash_key(Some(&short), dir.path()),
            Err(KeyFileError::TooShort(_))
        ));
    }
}
