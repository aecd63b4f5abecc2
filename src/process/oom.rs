//! The kernel's count of OOM kills in a process's memory cgroup, so a SIGKILL that
//! nobody in the daemon sent can be told apart from the OOM killer's. Read at spawn
//! (the baseline) and again after a crash; cgroup v2 (`memory.events`) and v1
//! (`memory.oom_control`) both have an `oom_kill` line. Elsewhere (macOS, no cgroup
//! mounted) there is nothing to read and the count is unknown.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A memory cgroup's OOM-kill counter, with its value when the session started.
#[derive(Debug, Clone, PartialEq)]
pub struct OomCounter {
    pub path: PathBuf,
    pub at_start: u64,
}

impl OomCounter {
    /// The counter of a child just started by this process: children start in their
    /// parent's cgroup, so the file is found and opened once per process, and each
    /// session reads the count from the start of the open file (one system call, where
    /// opening the cgroup file anew took six).
    pub fn for_child() -> Option<Self> {
        static OWN: std::sync::OnceLock<Option<(PathBuf, File)>> = std::sync::OnceLock::new();
        let (path, file) = OWN
            .get_or_init(|| {
                let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
                let path = counter_path(&cgroups, Path::new("/sys/fs/cgroup"))?;
                let file = File::open(&path).ok()?;
                Some((path, file))
            })
            .as_ref()?;
        let at_start = read_count_from(file).or_else(|| read_count(path))?;
        Some(Self { path: path.clone(), at_start })
    }

    /// OOM kills in the cgroup since the baseline.
    pub fn kills_since_start(&self) -> Option<u64> {
        read_count(&self.path).map(|now| now.saturating_sub(self.at_start))
    }
}

/// The counter file for the cgroups listed in `/proc/<pid>/cgroup` text, under `root`.
fn counter_path(cgroups: &str, root: &Path) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let relative = path.trim_start_matches('/');
        if controllers.is_empty() {
            candidates.push(root.join(relative).join("memory.events"));
            candidates.push(root.join("unified").join(relative).join("memory.events"));
        } else if controllers.split(',').any(|c| c == "memory") {
            candidates.push(root.join("memory").join(relative).join("memory.oom_control"));
            // Inside a container the cgroup's own directory is often the mount's root.
            candidates.push(root.join("memory").join("memory.oom_control"));
        }
    }
    candidates.into_iter().find(|p| read_count(p).is_some())
}

fn read_count(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    parse_oom_kill(&text)
}

/// The count, read from the start of an open counter file (the kernel writes the text
/// anew for each read from offset 0); `None` if it does not fit one small read.
fn read_count_from(file: &File) -> Option<u64> {
    let mut buf = [0u8; 1024];
    let n = file.read_at(&mut buf, 0).ok()?;
    if n == buf.len() {
        return None;
    }
    parse_oom_kill(std::str::from_utf8(&buf[..n]).ok()?)
}

fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill ").and_then(|n| n.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_cgroup_versions() {
        assert_eq!(parse_oom_kill("low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n"), Some(2));
        assert_eq!(parse_oom_kill("oom_kill_disable 0\nunder_oom 0\noom_kill 7\n"), Some(7));
        assert_eq!(parse_oom_kill("max 1\n"), None);
    }

    #[test]
    fn finds_the_counter_of_a_cgroup() {
        let root = tempfile::tempdir().unwrap();
        let v2 = root.path().join("user.slice/app");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("memory.events"), "oom 1\noom_kill 1\n").unwrap();
        assert_eq!(counter_path("0::/user.slice/app\n", root.path()), Some(v2.join("memory.events")));
        let v1 = root.path().join("memory/docker/abc");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v1.join("memory.oom_control"), "oom_kill 0\n").unwrap();
        assert_eq!(
            counter_path("4:memory:/docker/abc\n0::/\n", root.path()),
            Some(v1.join("memory.oom_control"))
        );
        assert_eq!(counter_path("1:cpu:/x\n", root.path()), None);
    }

    #[test]
    fn counts_kills_since_the_baseline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("memory.events");
        std::fs::write(&file, "oom_kill 4\n").unwrap();
        let counter = OomCounter { path: file.clone(), at_start: 4 };
        assert_eq!(counter.kills_since_start(), Some(0));
        std::fs::write(&file, "oom_kill 5\n").unwrap();
        assert_eq!(counter.kills_since_start(), Some(1));
    }

    #[test]
    fn an_open_counter_file_reads_its_current_count_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.events");
        std::fs::write(&path, "oom 0\noom_kill 0\n").unwrap();
        let open = File::open(&path).unwrap();
        assert_eq!(read_count_from(&open), Some(0));
        std::fs::write(&path, "oom 3\noom_kill 3\n").unwrap();
        assert_eq!(read_count_from(&open), Some(3));
    }
}
