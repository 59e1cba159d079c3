//! Secrets the node generates for itself on first start (the JWT HS256 secret, the VoxRay
//! patient-hash key): 32 random bytes as hex in a file of mode 0600 in the data folder.

use std::io::Write;
use std::path::Path;

use rand::RngCore;

/// The file's text, creating it first when it does not exist. When two processes (the server
/// and a CLI beside it) race to create it, the loser reads the winner's.
pub fn read_or_create(path: &Path, what: &str) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => return Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(mut f) => {
            f.write_all(secret.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            tracing::info!(path = %path.display(), "generated a new {what}");
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(path),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_mode_0600_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/key");
        let a = read_or_create(&p, "test key").unwrap();
        assert_eq!(a.len(), 64);
        let b = read_or_create(&p, "test key").unwrap();
        assert_eq!(a.trim(), b.trim());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
