//! A real `redis-server` for one test: 127.0.0.1, a free port, its own directory,
//! append-only persistence with an fsync per write (`everysec` may hold writes back
//! for up to 2 s while an fsync is slow, and a SIGKILL then loses them); killed by
//! pid when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    // Held for its lifetime: the server's data and log live there.
    dir: tempfile::TempDir,
}

/// How long a server may take to answer PING after it was started.
const READY_WITHIN: Duration = Duration::from_secs(15);

impl RedisServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        let mut server = Self { port: free_port(), child: None, dir };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn log(&self) -> PathBuf {
        self.dir().join("redis.log")
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let log = self.log();
        let args = [
            "--port", &port, "--bind", "127.0.0.1", "--dir", &self.dir.path().to_string_lossy(),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no", "--logfile", &log.to_string_lossy(),
        ];
        let child = match Command::new("redis-server").args(args).stdin(Stdio::null()).stdout(Stdio::null()).spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not on PATH: the queue tests need a real Redis. Install it \
                 (Debian: apt-get install redis-server; .ci/run does this) and run the tests again"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        self.wait_ready();
    }

    /// Polls PING until the server answers PONG (not LOADING), or fails the test.
    fn wait_ready(&mut self) {
        let started = Instant::now();
        while started.elapsed() < READY_WITHIN {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("redis-server exited with {status} on port {}; its log:\n{}", self.port, self.log_text());
            }
            if ping(self.port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server on port {} did not answer PING within {READY_WITHIN:?}; its log:\n{}", self.port, self.log_text());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// SIGKILL: no shutdown hook, only what it already wrote survives.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Its own pid, the child we started.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
