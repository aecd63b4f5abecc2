//! Where a session's files go, checked: ids that become file names match a strict
//! pattern, and a session directory is a new directory inside
//! `<workingDirectory>/.vp-daemon/sessions/`, reached through real directories only
//! (no symlink can send it elsewhere). Directories are 0700, files 0600.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// `claude-session-` and a lower-case hyphenated UUID.
pub fn is_session_id(id: &str) -> bool {
    id.strip_prefix("claude-session-")
        .and_then(|u| uuid::Uuid::try_parse(u).ok().map(|p| p.hyphenated().to_string() == u))
        .unwrap_or(false)
}

/// `<working_directory>/.vp-daemon/<parts...>`, each level created (0700) if missing
/// and required to be a real directory, not a symlink.
pub fn private_dir(working_directory: &Path, parts: &[&str]) -> io::Result<PathBuf> {
    let mut dir = working_directory.join(".vp-daemon");
    ensure_dir(&dir)?;
    for part in parts {
        dir.push(part);
        ensure_dir(&dir)?;
    }
    Ok(dir)
}

fn ensure_dir(dir: &Path) -> io::Result<()> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = std::fs::symlink_metadata(dir)?;
            if meta.file_type().is_symlink() || !meta.is_dir() {
                Err(io::Error::other(format!("{} is not a real directory", dir.display())))
            } else {
                Ok(())
            }
        }
        Err(e) => Err(e),
    }
}

/// `dir` and its missing parents, created 0700; `dir` must be a real directory (a
/// symlink is refused). For directories the caller names, such as dump and state
/// directories.
pub fn private_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() || !meta.is_dir() {
        return Err(io::Error::other(format!("{} is not a real directory", dir.display())));
    }
    Ok(())
}

/// Writes `target` (0600) all at once: a temporary file beside it, then renamed over
/// it (`replace`) or linked to its name, which fails if it exists (no `replace`).
/// With `sync`, the data reach the disk before the file appears.
pub fn write_atomically(target: &Path, bytes: &[u8], replace: bool, sync: bool) -> io::Result<()> {
    use std::io::Write;
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        let mut file = new_private_file(&temp)?;
        file.write_all(bytes)?;
        if sync {
            file.sync_all()?;
        }
        if replace {
            std::fs::rename(&temp, target)
        } else {
            std::fs::hard_link(&temp, target)
        }
    })();
    if !replace || written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written?;
    if sync {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Creates the directory of session `id`: it must be new.
pub fn session_dir(working_directory: &Path, id: &str) -> io::Result<PathBuf> {
    if !is_session_id(id) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid session id {id:?}")));
    }
    let dir = private_dir(working_directory, &["sessions"])?.join(id);
    DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// A new file (0600), not following a symlink planted at its name.
pub fn new_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// A file (0600) opened for appending, created if needed, never through a symlink.
pub fn private_log(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn session_ids_are_checked_strictly() {
        assert!(is_session_id("claude-session-0b0a3d0e-7c1c-4a5e-9f3e-1a2b3c4d5e6f"));
        for bad in [
            "claude-session-../../etc",
            "claude-session-0B0A3D0E-7C1C-4A5E-9F3E-1A2B3C4D5E6F",
            "claude-session-0b0a3d0e7c1c4a5e9f3e1a2b3c4d5e6f",
            "x-0b0a3d0e-7c1c-4a5e-9f3e-1a2b3c4d5e6f",
            "",
        ] {
            assert!(!is_session_id(bad), "{bad}");
        }
    }

    #[test]
    fn directories_are_private_and_real() {
        let wd = tempfile::tempdir().unwrap();
        let id = "claude-session-0b0a3d0e-7c1c-4a5e-9f3e-1a2b3c4d5e6f";
        let dir = session_dir(wd.path(), id).unwrap();
        assert_eq!(dir, wd.path().join(".vp-daemon/sessions").join(id));
        for d in [wd.path().join(".vp-daemon"), wd.path().join(".vp-daemon/sessions"), dir.clone()] {
            assert_eq!(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700, "{}", d.display());
        }
        assert!(session_dir(wd.path(), id).is_err(), "a session directory is always new");
        let f = dir.join("CLAUDE.md");
        new_private_file(&f).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(new_private_file(&f).is_err());
        assert!(session_dir(wd.path(), "../escape").is_err());
    }

    #[test]
    fn a_symlinked_vp_daemon_is_refused() {
        let wd = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), wd.path().join(".vp-daemon")).unwrap();
        let err = session_dir(wd.path(), "claude-session-0b0a3d0e-7c1c-4a5e-9f3e-1a2b3c4d5e6f").unwrap_err();
        assert!(err.to_string().contains("not a real directory"), "{err}");
        assert!(std::fs::read_dir(elsewhere.path()).unwrap().next().is_none());
    }

    #[test]
    fn files_are_not_opened_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("stdout.log")).unwrap();
        assert!(private_log(&dir.path().join("stdout.log")).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }
}
