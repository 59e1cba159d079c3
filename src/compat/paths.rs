//! Server paths named in requests (LeapAI's `input_image_path` and friends), confined to the
//! configured roots. A path is refused when it is relative, has a `..` component, lies
//! lexically outside every root, or resolves (through symlinks) outside every root. Whether a
//! path outside the roots exists is never revealed: it is simply invalid.

use std::path::{Component, Path, PathBuf};

/// Why a requested path cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathProblem {
    /// Not absolute, `..`, outside the roots, or not representable.
    Invalid,
    /// Inside the roots but not there.
    NotFound,
}

/// Roots made canonical once (at start), so comparisons see through symlinked roots.
#[derive(Debug, Clone, Default)]
pub struct Roots(Vec<PathBuf>);

impl Roots {
    /// Canonicalises the configured roots; roots that do not exist are dropped with a warning.
    pub fn new(configured: &[PathBuf]) -> Roots {
        Roots(
            configured
                .iter()
                .filter_map(|r| match r.canonicalize() {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::warn!(root = %r.display(), error = %e, "configured root is not usable");
                        None
                    }
                })
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn contains(&self, p: &Path) -> bool {
        self.0.iter().any(|r| p.starts_with(r))
    }

    /// Absolute, without `..`; where it leads is checked after resolving symlinks.
    fn lexical(&self, raw: &str) -> Result<PathBuf, PathProblem> {
        if raw.is_empty() || raw.contains('\0') {
            return Err(PathProblem::Invalid);
        }
        let p = PathBuf::from(raw);
        if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(PathProblem::Invalid);
        }
        Ok(p)
    }

    /// An existing file or folder under a root, canonical.
    pub fn existing(&self, raw: &str) -> Result<PathBuf, PathProblem> {
        let p = self.lexical(raw)?;
        match p.canonicalize() {
            Ok(c) if self.contains(&c) => Ok(c),
            Ok(_) => Err(PathProblem::Invalid),
            Err(_) => {
                // Only say "does not exist" when the nearest existing ancestor is inside.
                match nearest_existing(&p) {
                    Some(a) if self.contains(&a) => Err(PathProblem::NotFound),
                    _ => Err(PathProblem::Invalid),
                }
            }
        }
    }

    /// A folder to write into, under a root; it may not exist yet (the caller creates it).
    pub fn writable(&self, raw: &str) -> Result<PathBuf, PathProblem> {
        let p = self.lexical(raw)?;
        let anc = nearest_existing(&p).ok_or(PathProblem::Invalid)?;
        if !self.contains(&anc) {
            return Err(PathProblem::Invalid);
        }
        let rest = p.strip_prefix(p.ancestors().find(|a| a.exists()).unwrap_or(Path::new("/")));
        Ok(match rest {
            Ok(r) => anc.join(r),
            Err(_) => anc,
        })
    }

    /// Writes `bytes` as the file `name` in `dir`, a folder under a root, never through a
    /// link: the bytes go to a fresh temporary file beside it (created exclusively, 0600,
    /// so nothing already there is opened), which is then renamed over `name`. A rename
    /// replaces a symlink sitting at `name` itself, never its target. Refused when `name` is
    /// not a plain file name or `dir` resolves (through symlinks) outside every root.
    pub fn write_file(&self, dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
        use std::io::{Error, ErrorKind, Write};
        let plain = Path::new(name).components().count() == 1
            && matches!(
                Path::new(name).components().next(),
                Some(Component::Normal(_))
            );
        if !plain || name.contains('\0') {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{name:?} is not a plain file name"),
            ));
        }
        let dir = dir.canonicalize()?;
        if !self.contains(&dir) {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!("{} leads outside the output roots", dir.display()),
            ));
        }
        let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let written = opts.open(&tmp).and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
        let target = dir.join(name);
        match written.and_then(|()| std::fs::rename(&tmp, &target)) {
            Ok(()) => Ok(target),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }
}

/// The canonical form of the nearest ancestor of `p` (or `p`) that exists.
fn nearest_existing(p: &Path) -> Option<PathBuf> {
    p.ancestors().find_map(|a| a.canonicalize().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confinement() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("in");
        let outside = dir.path().join("out");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("sub/a.dcm"), b"x").unwrap();
        std::fs::write(outside.join("secret.dcm"), b"x").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        let roots = Roots::new(std::slice::from_ref(&root));
        let s = |p: &Path| p.display().to_string();

        assert!(roots.existing(&s(&root.join("sub/a.dcm"))).is_ok());
        assert_eq!(
            roots.existing(&s(&root.join("sub/missing.dcm"))),
            Err(PathProblem::NotFound)
        );
        assert_eq!(
            roots.existing(&s(&outside.join("secret.dcm"))),
            Err(PathProblem::Invalid)
        );
        assert_eq!(
            roots.existing(&s(&outside.join("nothing.dcm"))),
            Err(PathProblem::Invalid)
        );
        assert_eq!(
            roots.existing(&format!("{}/sub/../../out/secret.dcm", root.display())),
            Err(PathProblem::Invalid)
        );
        assert_eq!(roots.existing("relative/a.dcm"), Err(PathProblem::Invalid));
        assert_eq!(roots.existing(""), Err(PathProblem::Invalid));
        #[cfg(unix)]
        assert_eq!(
            roots.existing(&s(&root.join("escape/secret.dcm"))),
            Err(PathProblem::Invalid)
        );
        assert!(roots.writable(&s(&root.join("new/deeper"))).is_ok());
        assert_eq!(
            roots.writable(&s(&outside.join("new"))),
            Err(PathProblem::Invalid)
        );
        #[cfg(unix)]
        assert_eq!(
            roots.writable(&s(&root.join("escape/new"))),
            Err(PathProblem::Invalid)
        );
        assert!(Roots::new(&[])
            .existing(&s(&root.join("sub/a.dcm")))
            .is_err());
    }

    #[cfg(unix)]
    #[test]
    fn written_files_replace_links_and_stay_inside() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("out");
        let outside = dir.path().join("elsewhere");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let victim = outside.join("victim.json");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, root.join("r.json")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        let roots = Roots::new(std::slice::from_ref(&root));

        let p = roots.write_file(&root, "r.json", b"result").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!std::fs::symlink_metadata(&p).unwrap().is_symlink());
        assert_eq!(std::fs::read(&p).unwrap(), b"result");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );

        assert!(roots
            .write_file(&root.join("escape"), "x.json", b"x")
            .is_err());
        assert!(!outside.join("x.json").exists());
        for bad in ["../x.json", "a/b.json", "", ".."] {
            assert!(roots.write_file(&root, bad, b"x").is_err(), "{bad}");
        }
        assert_eq!(
            std::fs::read_dir(&root).unwrap().count(),
            2,
            "no temporary left"
        );
    }
}
