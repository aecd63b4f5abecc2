//! Crash dumps: one JSON file per crash, written atomically (a temporary file, synced,
//! then linked under its final name, so a reader never sees half a dump and an
//! existing dump is never replaced), 0600 in a 0700 directory.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::Value;

use crate::paths::{is_session_id, private_dir_all, write_atomically};

/// How much of each log's end a dump keeps.
pub const DUMP_TAIL_BYTES: u64 = 64 * 1024;

/// The contract's file name: `crash-<sessionId>-<ISO time, ':' as '-'>.json`.
pub fn dump_file_name(session_id: &str, at: SystemTime) -> String {
    let iso = humantime::format_rfc3339_millis(at).to_string().replace(':', "-");
    format!("crash-{session_id}-{iso}.json")
}

/// Writes `dump` into `dir` (created 0700 where missing; it must be a real
/// directory) as the contract names it, for a session id of this spawner's form;
/// returns the file's path.
pub fn write_dump(dir: &Path, session_id: &str, at: SystemTime, dump: &Value) -> io::Result<PathBuf> {
    if !is_session_id(session_id) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{session_id:?} is not a session id")));
    }
    private_dir_all(dir)?;
    let target = dir.join(dump_file_name(session_id, at));
    let mut text = serde_json::to_vec_pretty(dump)?;
    text.push(b'\n');
    write_atomically(&target, &text, false, true)?;
    Ok(target)
}

/// The last `max` bytes of a file, as text (a cut character becomes U+FFFD); empty
/// when it cannot be read.
pub fn file_tail(path: &Path, max: u64) -> String {
    let read = || -> io::Result<Vec<u8>> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(max)))?;
        let mut buf = Vec::with_capacity(max.min(len) as usize);
        file.take(max).read_to_end(&mut buf)?;
        Ok(buf)
    };
    read().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// The Claude Code version its `init` message reported, from the start of the
/// session's stdout log.
pub fn cli_version(stdout_log: &Path) -> Option<String> {
    let mut head = Vec::new();
    File::open(stdout_log).ok()?.take(DUMP_TAIL_BYTES).read_to_end(&mut head).ok()?;
    let text = String::from_utf8_lossy(&head);
    let key = "\"claude_code_version\":\"";
    let start = text.find(key)? + key.len();
    let len = text[start..].find('"')?;
    Some(text[start..start + len].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, UNIX_EPOCH};

    const ID: &str = "claude-session-6f1c0b53-2f6e-4a57-9d43-6a7f2e1b8c90";

    #[test]
    fn writes_private_files_in_a_private_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/crash-dumps");
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let path = write_dump(&dir, ID, at, &serde_json::json!({"x": 1})).unwrap();
        assert_eq!(path.file_name().unwrap().to_str().unwrap(), format!("crash-{ID}-2023-11-14T22-13-20.123Z.json"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&path), mode(&dir)), (0o600, 0o700));
        let back: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back["x"], 1);
        // No temporary file is left, and a second dump at the same instant does not replace the first.
        assert!(write_dump(&dir, ID, at, &serde_json::json!({"x": 2})).is_err());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn refuses_ids_that_are_not_file_names() {
        let root = tempfile::tempdir().unwrap();
        for bad in ["../../etc/passwd", "a/b", "", ".hidden", "x\0y", "claude-session-../x"] {
            let e = write_dump(root.path(), bad, SystemTime::now(), &Value::Null).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn refuses_a_symlinked_directory() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = root.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.path().join("dumps")).unwrap();
        let e = write_dump(&root.path().join("dumps"), ID, SystemTime::now(), &Value::Null).unwrap_err();
        assert!(e.to_string().contains("not a real directory"), "{e}");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn tails_and_versions_from_logs() {
        let root = tempfile::tempdir().unwrap();
        let log = root.path().join("stdout.log");
        let init = r#"{"type":"system","subtype":"init","claude_code_version":"2.1.197"}"#;
        std::fs::write(&log, format!("{init}\n{}", "y".repeat(70_000))).unwrap();
        assert_eq!(cli_version(&log).as_deref(), Some("2.1.197"));
        let tail = file_tail(&log, DUMP_TAIL_BYTES);
        assert_eq!(tail.len(), 65_536);
        assert!(tail.bytes().all(|b| b == b'y'));
        assert_eq!(file_tail(&root.path().join("missing"), 10), "");
    }
}
