//! Tests of `registry`.

use super::*;

#[test]
fn our_own_start_time_is_readable_and_stable() {
    let me = std::process::id();
    assert!(start_time(me).is_some());
    assert_eq!(start_time(me), start_time(me));
    assert_eq!(start_time(u32::MAX - 1), None);
}

/// A session of a daemon that is gone, whose agent pid now belongs to someone else (us).
fn stale_session() -> LiveSession {
    LiveSession {
        session_id: "claude-session-old".into(),
        pid: std::process::id(),
        pgid: std::process::id(),
        start_time: 1,
        daemon_pid: u32::MAX - 1,
        daemon_start_time: 5,
        working_directory: "/srv".into(),
    }
}

fn slots_file(reg: &Registry) -> PathBuf {
    reg.slots.lock().path.clone()
}

#[test]
fn entries_round_trip_and_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(&dir.path().join("state")).unwrap();
    reg.add("claude-session-x", std::process::id(), None, Path::new("/srv")).unwrap();
    let file = slots_file(&reg);
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(reg.dir()).unwrap().permissions().mode() & 0o777, 0o700);
    let entries = recorded_sessions(reg.dir()).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].pid, entries[0].daemon_pid), (std::process::id(), std::process::id()));
    assert_eq!(entries[0].working_directory, Path::new("/srv"));
    // Our own daemon is alive: its sessions are not orphans.
    let report = reg.reap_orphans(Duration::ZERO).unwrap();
    assert_eq!((report.orphans.len(), report.owned_by_live_daemons), (0, 1));
    reg.remove("claude-session-x");
    assert_eq!(recorded_sessions(reg.dir()).unwrap(), vec![]);
    // Gone with its spawner, having no live session.
    drop(reg);
    assert!(!file.exists());
}

#[test]
fn slots_are_reused_and_written_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    for id in ["a", "b", "c"] {
        reg.add(id, std::process::id(), None, Path::new("/srv")).unwrap();
    }
    reg.remove("b");
    reg.add("d", std::process::id(), None, Path::new("/srv")).unwrap();
    let file = slots_file(&reg);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 3 * SLOT as u64);
    let mut ids: Vec<String> = recorded_sessions(dir.path()).unwrap().into_iter().map(|e| e.session_id).collect();
    ids.sort();
    assert_eq!(ids, ["a", "c", "d"]);
    // Only this spawner's file is in the directory: no file per session.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    // A spawner dropped with sessions still recorded leaves them for the next sweep.
    drop(reg);
    assert!(file.exists());
}

#[test]
fn a_line_too_long_for_a_slot_gets_a_file_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    let deep = PathBuf::from(format!("/{}", "d".repeat(SLOT)));
    reg.add("claude-session-deep", std::process::id(), None, &deep).unwrap();
    let own = dir.path().join("claude-session-deep.json");
    assert!(own.exists());
    assert_eq!(recorded_sessions(dir.path()).unwrap()[0].working_directory, deep);
    assert_eq!(reg.reap_orphans(Duration::ZERO).unwrap().owned_by_live_daemons, 1);
    reg.remove("claude-session-deep");
    assert!(!own.exists());
}

#[test]
fn a_dead_daemons_slots_are_reaped_and_its_file_removed() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    let stale = stale_session();
    let mut bytes = BLANK.to_vec();
    bytes.extend(slot_line(&stale).unwrap());
    bytes.extend(b"{\"torn");
    let file = dir.path().join(format!("daemon-{}-5-0.live", u32::MAX - 1));
    std::fs::write(&file, bytes).unwrap();
    let report = reg.reap_orphans(Duration::ZERO).unwrap();
    assert_eq!(report.orphans, vec![Orphan { session: stale, was_running: false, leftovers: 0 }]);
    assert_eq!((report.invalid, report.owned_by_live_daemons), (1, 0));
    assert!(!file.exists());
}

#[test]
fn a_dead_daemons_entries_are_reaped_without_touching_reused_pids() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    let stale = stale_session();
    std::fs::write(dir.path().join("claude-session-old.json"), stale.to_json().to_string()).unwrap();
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{").unwrap();
    // Unreadable and young: perhaps being written, so left alone for now.
    let young = reg.reap_orphans(Duration::ZERO).unwrap();
    assert_eq!((young.invalid, garbage.exists()), (0, true));
    let old = std::time::SystemTime::now() - Duration::from_secs(60);
    std::fs::File::options().write(true).open(&garbage).unwrap().set_modified(old).unwrap();
    std::fs::write(dir.path().join("claude-session-old.json"), stale.to_json().to_string()).unwrap();
    let report = reg.reap_orphans(Duration::ZERO).unwrap();
    assert_eq!(report.orphans, vec![Orphan { session: stale, was_running: false, leftovers: 0 }]);
    assert_eq!(report.invalid, 1);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
