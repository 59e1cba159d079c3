//! Files holding patient data are the node's alone. A process umask of `0o077`, set before
//! anything is created, makes every file the node (or a library in it: SQLite's database,
//! `-wal` and `-shm`) creates 0600 and every folder 0700, whatever the code path. What an
//! earlier version left readable is tightened at start, with a warning per path.

use std::path::{Path, PathBuf};

/// Group and other get nothing.
pub const UMASK: u32 = 0o077;

/// Sets the process umask to [`UMASK`]. Idempotent; call it before the first file is made.
pub fn restrict_umask() {
    #[cfg(target_os = "linux")]
    // SAFETY: umask(2) cannot fail and touches only the process's file-mode mask.
    unsafe {
        libc::umask(UMASK as libc::mode_t);
    }
}

/// Removes group and other access from `dir` and the entries directly in it (files 0600 at
/// most, folders 0700), logging each change; returns the paths changed. Deeper entries need
/// no walk (millions of instances): nobody else can pass a 0700 folder. A missing `dir` is
/// not an error.
pub fn tighten_folder(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut changed = Vec::new();
    if !dir.exists() {
        return Ok(changed);
    }
    tighten(dir, &mut changed)?;
    for entry in std::fs::read_dir(dir)? {
        tighten(&entry?.path(), &mut changed)?;
    }
    Ok(changed)
}

/// Tightens the SQLite database file of `url` and its `-wal`/`-shm` beside it (they may lie
/// outside the data folder).
pub fn tighten_sqlite(url: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut changed = Vec::new();
    let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .and_then(|p| p.split('?').next())
        .filter(|p| !p.is_empty() && *p != ":memory:")
    else {
        return Ok(changed);
    };
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{path}{suffix}"));
        if p.exists() {
            tighten(&p, &mut changed)?;
        }
    }
    Ok(changed)
}

#[cfg(unix)]
fn tighten(path: &Path, changed: &mut Vec<PathBuf>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // symlink_metadata: a link is neither followed nor changed.
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & UMASK == 0 {
        return Ok(());
    }
    let tight = mode & !UMASK;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(tight))?;
    tracing::warn!(
        path = %path.display(),
        from = format!("{mode:04o}"),
        to = format!("{tight:04o}"),
        "removed group/other access from a file of the node"
    );
    changed.push(path.to_path_buf());
    Ok(())
}

#[cfg(not(unix))]
fn tighten(_path: &Path, _changed: &mut Vec<PathBuf>) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn set(p: &Path, m: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    #[test]
    fn loose_entries_are_tightened_and_links_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(data.join("instances/a")).unwrap();
        let db = data.join("radstream.db");
        std::fs::write(&db, b"x").unwrap();
        std::fs::write(data.join("radstream.db-wal"), b"x").unwrap();
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, b"x").unwrap();
        std::os::unix::fs::symlink(&outside, data.join("link")).unwrap();
        for (p, m) in [
            (&data, 0o755),
            (&data.join("instances"), 0o775),
            (&db, 0o644),
            (&data.join("radstream.db-wal"), 0o640),
            (&outside, 0o644),
        ] {
            set(p, m);
        }
        let changed = tighten_folder(&data).unwrap();
        assert_eq!(changed.len(), 4, "{changed:?}");
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("instances")), 0o700);
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&data.join("radstream.db-wal")), 0o600);
        assert_eq!(
            mode(&outside),
            0o644,
            "a link's target is not ours to change"
        );
        assert!(tighten_folder(&data).unwrap().is_empty(), "idempotent");

        set(&db, 0o644);
        let url = format!("sqlite://{}?mode=rwc", db.display());
        assert_eq!(tighten_sqlite(&url).unwrap(), vec![db.clone()]);
        assert!(tighten_folder(&tmp.path().join("missing"))
            .unwrap()
            .is_empty());
    }
}
