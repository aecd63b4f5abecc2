//! The registry of live sessions on disk, so that when a daemon dies without stopping
//! its agents, the next one can find and stop them. For each live session: the
//! agent's pid and process group, its start time from `/proc` (so a reused pid is
//! never taken for it), and the owning daemon's pid and start time, as JSON.
//!
//! Each spawner keeps them in one file of fixed-size slots,
//! `<stateDir>/daemon-<pid>-<startTime>-<n>.live` (0600 in a 0700 directory): a
//! session's line is written in place when its agent starts and blanked when it
//! ends, two writes to a file already open. A file per session cost a create and an
//! unlink in the directory for every session, about 35 µs on ext4 (BENCHMARKS.md).
//! A line too long for a slot (a very long working directory) gets a file of its own,
//! `<sessionId>.json`, which the sweep reads as well.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::paths::{new_private_file, private_dir_all};
use crate::process;
use crate::spawner::SESSION_ID_ENV;

/// Bytes per slot, the last one a newline. A power of two, so no slot straddles a
/// page and each is written by one copy into the page cache.
const SLOT: usize = 1024;

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
    // One read into a buffer on the stack: this runs for every session.
    let mut buf = [0u8; 1024];
    let mut file = File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    start_time_in(&buf[..len])
}

/// The start time in the text of a `/proc/<pid>/stat` (see [`start_time`]).
pub(crate) fn start_time_in(stat: &[u8]) -> Option<u64> {
    let stat = std::str::from_utf8(stat).ok()?;
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// A free slot.
const BLANK: [u8; SLOT] = {
    let mut line = [b' '; SLOT];
    line[SLOT - 1] = b'\n';
    line
};

/// How long an unreadable session file is taken for one being written.
const UNREADABLE_GRACE: Duration = Duration::from_secs(10);

/// One live session, as recorded.
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
    /// Recorded sessions whose daemon still runs (left alone).
    pub owned_by_live_daemons: usize,
    /// Unreadable records of dead daemons, and old unreadable session files; removed.
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

/// A directory of state files, and this spawner's file of slots in it.
#[derive(Debug)]
pub struct Registry {
    dir: PathBuf,
    daemon_pid: u32,
    daemon_start_time: u64,
    slots: Mutex<Slots>,
}

/// This spawner's file of slots, created with its first session.
#[derive(Debug)]
struct Slots {
    path: PathBuf,
    file: Option<File>,
    /// Where each live session's line is.
    taken: HashMap<String, Place>,
    free: Vec<u64>,
    next: u64,
}

#[derive(Debug, Clone, Copy)]
enum Place {
    Slot(u64),
    /// Too long for a slot: `<sessionId>.json`.
    OwnFile,
}

/// Tells apart the files of several spawners in one process.
static SPAWNERS: AtomicU64 = AtomicU64::new(0);

impl Registry {
    /// Opens (creating, 0700) the registry in `dir`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        private_dir_all(dir)?;
        let daemon_pid = std::process::id();
        let daemon_start_time = start_time(daemon_pid).unwrap_or(0);
        let n = SPAWNERS.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("daemon-{daemon_pid}-{daemon_start_time}-{n}.live"));
        let slots = Slots { path, file: None, taken: HashMap::new(), free: Vec::new(), next: 0 };
        Ok(Self { dir: dir.to_owned(), daemon_pid, daemon_start_time, slots: Mutex::new(slots) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn own_file(&self, session_id: &str) -> PathBuf {
        self.dir.join(format!("{session_id}.json"))
    }

    /// Records a session whose agent just started.
    /// `started`: the agent's start time when the spawn learnt it, else it is read here
    /// (which waits while the agent is in the middle of its `exec`).
    pub fn add(&self, session_id: &str, pid: u32, started: Option<u64>, working_directory: &Path) -> io::Result<()> {
        let entry = LiveSession {
            session_id: session_id.to_owned(),
            pid,
            pgid: pid,
            start_time: started.or_else(|| start_time(pid)).unwrap_or(0),
            daemon_pid: self.daemon_pid,
            daemon_start_time: self.daemon_start_time,
            working_directory: working_directory.to_owned(),
        };
        let mut slots = self.slots.lock();
        let Some(line) = slot_line(&entry) else {
            // Written in one write, not through a renamed temporary file: a reader
            // that catches it half-written leaves a young unreadable file alone. Not
            // synced: a state file matters after a daemon crash, not a machine crash
            // (which ends the agents too).
            new_private_file(&self.own_file(session_id))?.write_all(entry.to_json().to_string().as_bytes())?;
            slots.taken.insert(session_id.to_owned(), Place::OwnFile);
            return Ok(());
        };
        if slots.file.is_none() {
            slots.file = Some(new_private_file(&slots.path)?);
        }
        let slot = slots.free.pop().unwrap_or(slots.next);
        let file = slots.file.as_ref().expect("created above");
        file.write_all_at(&line, slot * SLOT as u64).inspect_err(|_| slots.free.push(slot))?;
        slots.next = slots.next.max(slot + 1);
        slots.taken.insert(session_id.to_owned(), Place::Slot(slot));
        Ok(())
    }

    /// Forgets a session that ended.
    pub fn remove(&self, session_id: &str) {
        let mut slots = self.slots.lock();
        match slots.taken.remove(session_id) {
            Some(Place::Slot(slot)) => {
                if let Some(file) = &slots.file {
                    if file.write_all_at(&BLANK, slot * SLOT as u64).is_ok() {
                        slots.free.push(slot);
                    }
                }
            }
            Some(Place::OwnFile) => {
                let _ = std::fs::remove_file(self.own_file(session_id));
            }
            None => {}
        }
    }

    /// Finds sessions whose daemon is gone; stops what is left of each (SIGTERM to
    /// its process group when the pid still belongs to it, and to every process
    /// tagged with its id; SIGKILL to both after `grace`); removes their records.
    pub fn reap_orphans(&self, grace: Duration) -> io::Result<ReapReport> {
        let mut report = ReapReport::default();
        let mut found = Vec::new();
        let mut spent = Vec::new();
        for item in std::fs::read_dir(&self.dir)? {
            let path = item?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("live") => read_slots(path, &mut report, &mut found, &mut spent),
                Some("json") => read_own_file(path, &mut report, &mut found),
                _ => {}
            }
        }
        // The pid is the agent's only if it started when the agent did; and never
        // signal this daemon's own group.
        // SAFETY: getpgrp has no preconditions.
        let own_group = unsafe { libc::getpgrp() } as u32;
        let mut running = Vec::new();
        for (entry, own_file) in found {
            let alive = entry.start_time != 0
                && entry.pgid != own_group
                && start_time(entry.pid) == Some(entry.start_time);
            if alive {
                let _ = process::signal_group(entry.pgid, libc::SIGTERM);
            }
            running.push((own_file, entry, alive));
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
        for path in spent {
            let _ = std::fs::remove_file(path);
        }
        for (own_file, entry, was_running) in running {
            if let Some(path) = own_file {
                let _ = std::fs::remove_file(path);
            }
            let mut pids = tagged.remove(&entry.session_id).unwrap_or_default();
            pids.sort_unstable();
            pids.dedup();
            pids.retain(|pid| *pid != entry.pid);
            report.orphans.push(Orphan { leftovers: pids.len(), session: entry, was_running });
        }
        Ok(report)
    }
}

impl Drop for Registry {
    /// A spawner that goes away with no live session leaves no file behind.
    fn drop(&mut self) {
        let slots = self.slots.get_mut();
        let live = slots.taken.values().any(|p| matches!(p, Place::Slot(_)));
        if slots.file.is_some() && !live {
            let _ = std::fs::remove_file(&slots.path);
        }
    }
}

/// The entry as a slot's line (space-padded JSON and a newline), if it fits one.
fn slot_line(entry: &LiveSession) -> Option<Vec<u8>> {
    let mut line = entry.to_json().to_string().into_bytes();
    if line.len() >= SLOT {
        return None;
    }
    line.resize(SLOT - 1, b' ');
    line.push(b'\n');
    Some(line)
}

/// An entry from a slot's line or a session's file (surrounding blanks allowed).
fn parse_entry(bytes: &[u8]) -> Option<LiveSession> {
    serde_json::from_slice::<Value>(bytes).ok().and_then(|v| LiveSession::from_json(&v))
}

/// The records a state file holds: a file of slots, its lines that are not blank;
/// a session's own file, all of it. `None` for other files.
fn records<'a>(path: &Path, bytes: &'a [u8]) -> Option<Vec<&'a [u8]>> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("live") => Some(bytes.chunks(SLOT).filter(|line| !line.iter().all(u8::is_ascii_whitespace)).collect()),
        Some("json") => Some(vec![bytes]),
        _ => None,
    }
}

/// The daemon that owns a file of slots, from its name.
fn slots_owner(path: &Path) -> Option<(u32, u64)> {
    let name = path.file_stem()?.to_str()?;
    let mut parts = name.strip_prefix("daemon-")?.split('-');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn daemon_alive(pid: u32, started: u64) -> bool {
    start_time(pid) == Some(started)
}

/// A file of slots: a live daemon's lines are counted; a dead one's are orphans, and
/// the file goes once they are dealt with.
fn read_slots(path: PathBuf, report: &mut ReapReport, found: &mut Vec<(LiveSession, Option<PathBuf>)>, spent: &mut Vec<PathBuf>) {
    let Some((pid, started)) = slots_owner(&path) else {
        return;
    };
    let Ok(bytes) = std::fs::read(&path) else {
        return;
    };
    let alive = daemon_alive(pid, started);
    for line in records(&path, &bytes).unwrap_or_default() {
        match (parse_entry(line), alive) {
            (Some(_), true) => report.owned_by_live_daemons += 1,
            (Some(entry), false) => found.push((entry, None)),
            // A live daemon may be writing it right now.
            (None, true) => {}
            (None, false) => report.invalid += 1,
        }
    }
    if !alive {
        spent.push(path);
    }
}

/// A session's own file (one too long for a slot).
fn read_own_file(path: PathBuf, report: &mut ReapReport, found: &mut Vec<(LiveSession, Option<PathBuf>)>) {
    let Some(entry) = std::fs::read(&path).ok().and_then(|bytes| parse_entry(&bytes)) else {
        // A young one may be a live daemon's, still being written.
        let young = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().map_or(true, |age| age < UNREADABLE_GRACE));
        if !young {
            report.invalid += 1;
            let _ = std::fs::remove_file(&path);
        }
        return;
    };
    if daemon_alive(entry.daemon_pid, entry.daemon_start_time) {
        report.owned_by_live_daemons += 1;
    } else {
        found.push((entry, Some(path)));
    }
}

/// The sessions recorded in the state directory `dir`, live daemons' and dead ones'.
pub fn recorded_sessions(dir: &Path) -> io::Result<Vec<LiveSession>> {
    let mut sessions = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let path = item?.path();
        if records(&path, &[]).is_none() {
            continue;
        }
        let bytes = std::fs::read(&path)?;
        sessions.extend(records(&path, &bytes).unwrap_or_default().into_iter().filter_map(parse_entry));
    }
    Ok(sessions)
}

#[cfg(test)]
mod tests;
