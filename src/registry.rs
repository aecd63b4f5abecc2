//! The registry of live sessions on disk, so that when a daemon dies without stopping
//! its agents, the next one can find and stop them. One small JSON file per live
//! session (`<stateDir>/<sessionId>.json`, 0600 in a 0700 directory): the agent's pid
//! and process group, its start time from `/proc` (so a reused pid is never taken for
//! it), and the owning daemon's pid and start time. Written when the agent starts,
//! removed when the session ends.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use std::io::Write;

use crate::paths::{new_private_file, private_dir_all};
use crate::process;
use crate::spawner::SESSION_ID_ENV;

/// Where state files go by default: `$XDG_STATE_HOME` or `~/.local/state`, then
/// `claude-session-spawner/`.
pub fn default_state_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))?;
    Some(base.join("claude-session-spawner"))
}

/// A process's start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`),
/// `None` when it is gone (or a zombie: it runs nothing any more).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// How long an unreadable state file is taken for one being written.
const UNREADABLE_GRACE: Duration = Duration::from_secs(10);

/// One live session, as its state file has it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSession {
    pub session_id: String,
    pub pid: u32,
    pub pgid: u32,
    pub start_time: u64,
    pub daemon_pid: u32,
    pub daemon_start_time: u64,
    pub working_directory: PathBuf,
}

impl LiveSession {
    fn to_json(&self) -> Value {
        json!({
            "sessionId": self.session_id,
            "pid": self.pid,
            "pgid": self.pgid,
            "startTime": self.start_time,
            "daemonPid": self.daemon_pid,
            "daemonStartTime": self.daemon_start_time,
            "workingDirectory": self.working_directory.to_string_lossy(),
        })
    }

    fn from_json(v: &Value) -> Option<Self> {
        let n = |k: &str| v[k].as_u64();
        Some(Self {
            session_id: v["sessionId"].as_str()?.to_owned(),
            pid: u32::try_from(n("pid")?).ok()?,
            pgid: u32::try_from(n("pgid")?).ok()?,
            start_time: n("startTime")?,
            daemon_pid: u32::try_from(n("daemonPid")?).ok()?,
            daemon_start_time: n("daemonStartTime")?,
            working_directory: PathBuf::from(v["workingDirectory"].as_str()?),
        })
    }
}

/// What `reap_orphans` found and did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReapReport {
    /// Sessions whose daemon is gone.
    pub orphans: Vec<Orphan>,
    /// State files of sessions whose daemon still runs (left alone).
    pub owned_by_live_daemons: usize,
    /// Unreadable state files, removed.
    pub invalid: usize,
}

/// A session whose daemon died, and what was done about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Orphan {
    pub session: LiveSession,
    /// Its agent still ran (same pid, same start time), and its group was stopped.
    pub was_running: bool,
    /// Processes it had started that were stopped, found by the session id in their
    /// environment (in the agent's group or out of it), the agent not counted.
    pub leftovers: usize,
}

/// A directory of state files.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
    daemon_pid: u32,
    daemon_start_time: u64,
}

impl Registry {
    /// Opens (creating, 0700) the registry in `dir`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        private_dir_all(dir)?;
        let daemon_pid = std::process::id();
        Ok(Self { dir: dir.to_owned(), daemon_pid, daemon_start_time: start_time(daemon_pid).unwrap_or(0) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, session_id: &str) -> PathBuf {
        self.dir.join(format!("{session_id}.json"))
    }

    /// Records a session whose agent just started.
    pub fn add(&self, session_id: &str, pid: u32, working_directory: &Path) -> io::Result<()> {
        let entry = LiveSession {
            session_id: session_id.to_owned(),
            pid,
            pgid: pid,
            start_time: start_time(pid).unwrap_or(0),
            daemon_pid: self.daemon_pid,
            daemon_start_time: self.daemon_start_time,
            working_directory: working_directory.to_owned(),
        };
        // Written in place with one write, not through a renamed temporary file: this
        // is on every session's path, and a reader that catches it half-written (or a
        // daemon killed between open and write) leaves a young unreadable file, which
        // `reap_orphans` leaves alone. Not synced: a state file matters after a daemon
        // crash, not a machine crash (which ends the agents too).
        let mut file = new_private_file(&self.file(session_id))?;
        file.write_all(entry.to_json().to_string().as_bytes())
    }

    /// Forgets a session that ended.
    pub fn remove(&self, session_id: &str) {
        let _ = std::fs::remove_file(self.file(session_id));
    }

    /// Finds sessions whose daemon is gone; stops what is left of each (SIGTERM to
    /// its process group when the pid still belongs to it, and to every process
    /// tagged with its id; SIGKILL to both after `grace`); removes their state files.
    pub fn reap_orphans(&self, grace: Duration) -> io::Result<ReapReport> {
        let mut report = ReapReport::default();
        let mut running = Vec::new();
        for item in std::fs::read_dir(&self.dir)? {
            let path = item?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let entry = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .and_then(|v| LiveSession::from_json(&v));
            let Some(entry) = entry else {
                // A young one may be a live daemon's, still being written.
                let young = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().map_or(true, |age| age < UNREADABLE_GRACE));
                if !young {
                    report.invalid += 1;
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            };
            let daemon_alive = start_time(entry.daemon_pid) == Some(entry.daemon_start_time);
            if daemon_alive {
                report.owned_by_live_daemons += 1;
                continue;
            }
            // The pid is the agent's only if it started when the agent did; and never
            // signal this daemon's own group.
            // SAFETY: getpgrp has no preconditions.
            let own_group = unsafe { libc::getpgrp() } as u32;
            let alive = entry.start_time != 0
                && entry.pgid != own_group
                && start_time(entry.pid) == Some(entry.start_time);
            if alive {
                let _ = process::signal_group(entry.pgid, libc::SIGTERM);
            }
            running.push((path, entry, alive));
        }
        // What the sessions started carries their ids, in the group or out of it, and
        // outlives a leader that is gone (or was killed by its parent-death signal).
        let ids: Vec<&str> = running.iter().map(|(_, e, _)| e.session_id.as_str()).collect();
        let mut tagged = process::signal_tagged(SESSION_ID_ENV, &ids, libc::SIGTERM);
        let deadline = std::time::Instant::now() + grace;
        for (_, entry, alive) in &running {
            if !alive {
                continue;
            }
            while start_time(entry.pid) == Some(entry.start_time) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            // The leader may be gone while others of its group remain: the group id
            // stays theirs as long as one of them lives.
            let _ = process::signal_group(entry.pgid, libc::SIGKILL);
        }
        let ids: Vec<&str> = running.iter().map(|(_, e, _)| e.session_id.as_str()).collect();
        for (id, pids) in process::signal_tagged(SESSION_ID_ENV, &ids, libc::SIGKILL) {
            tagged.entry(id).or_default().extend(pids);
        }
        for (path, entry, was_running) in running {
            let _ = std::fs::remove_file(path);
            let mut pids = tagged.remove(&entry.session_id).unwrap_or_default();
            pids.sort_unstable();
            pids.dedup();
            pids.retain(|pid| *pid != entry.pid);
            report.orphans.push(Orphan { leftovers: pids.len(), session: entry, was_running });
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_start_time_is_readable_and_stable() {
        let me = std::process::id();
        assert!(start_time(me).is_some());
        assert_eq!(start_time(me), start_time(me));
        assert_eq!(start_time(u32::MAX - 1), None);
    }

    #[test]
    fn entries_round_trip_and_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(&dir.path().join("state")).unwrap();
        reg.add("claude-session-x", std::process::id(), Path::new("/srv")).unwrap();
        let file = reg.file("claude-session-x");
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(reg.dir()).unwrap().permissions().mode() & 0o777, 0o700);
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let entry = LiveSession::from_json(&v).unwrap();
        assert_eq!((entry.pid, entry.daemon_pid), (std::process::id(), std::process::id()));
        // Our own daemon is alive: its sessions are not orphans.
        let report = reg.reap_orphans(Duration::ZERO).unwrap();
        assert_eq!((report.orphans.len(), report.owned_by_live_daemons), (0, 1));
        reg.remove("claude-session-x");
        assert!(!file.exists());
    }

    #[test]
    fn a_dead_daemons_entries_are_reaped_without_touching_reused_pids() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        // A daemon that is gone, whose agent pid now belongs to someone else (us).
        let stale = LiveSession {
            session_id: "claude-session-old".into(),
            pid: std::process::id(),
            pgid: std::process::id(),
            start_time: 1,
            daemon_pid: u32::MAX - 1,
            daemon_start_time: 5,
            working_directory: "/srv".into(),
        };
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
}
