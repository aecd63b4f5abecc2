//! A session's log file (`stdout.log`, `stderr.log`), written off the runtime's worker
//! threads: a slow disk (an NFS working directory) must not hold up the worker that
//! supervises every session's timeout and stop. Each log has a small task, started with
//! its first chunk (a stream that stays empty, as stderr mostly does, costs none), that
//! takes the chunks in order and writes what has piled up with one vectored write on
//! the blocking pool; while it is in flight the next chunks gather. The bytes on their
//! way are bounded per log ([`LOG_BACKLOG`]): past it the reader waits, so a slow disk
//! slows its own agent down (its output stream fills) instead of the daemon's memory growing.
//! [`LogWritten`] resolves once every byte given has been written (or the log failed),
//! which the supervisor awaits before it reports the session's end.

use std::fs::File;
use std::io::{IoSlice, Write};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Bytes of one log on their way to the disk at most.
pub(crate) const LOG_BACKLOG: usize = 8 << 20;

/// One write joins at most this much.
const BATCH: usize = 1 << 20;

/// Test hook: `<text>:<ms>` makes every write to a log whose path contains `<text>` take
/// `<ms>` longer, a slow disk for the tests that show it holds up nothing else.
const TEST_SLOW_ENV: &str = "CLAUDE_SESSION_SPAWNER_TEST_SLOW_LOG";
static TEST_SLOW: LazyLock<Option<(String, Duration)>> = LazyLock::new(|| {
    let value = std::env::var(TEST_SLOW_ENV).ok()?;
    let (text, ms) = value.rsplit_once(':')?;
    Some((text.to_owned(), Duration::from_millis(ms.parse().ok()?)))
});

/// The writing end, held by the stream's reader.
pub(crate) struct LogSink {
    state: Sink,
    room: Arc<Semaphore>,
}

enum Sink {
    /// Until the first chunk: what its writer will need.
    Idle { path: PathBuf, file: Option<File>, written: oneshot::Sender<()> },
    /// The way to its writer.
    Writing(mpsc::UnboundedSender<Bytes>),
}

/// Resolves when everything given to the sink is on disk, or the log failed.
pub(crate) struct LogWritten(oneshot::Receiver<()>);

impl LogWritten {
    pub async fn wait(self) {
        let _ = self.0.await;
    }
}

/// Opens `path` on the calling thread (the one that starts the session, which does the
/// session's other file work too). Its writer starts with the first chunk.
pub(crate) fn open(path: PathBuf) -> (LogSink, LogWritten) {
    let file = crate::paths::private_log(&path)
        // The events and the tail still carry the output.
        .inspect_err(|e| tracing::error!(path = %path.display(), error = %e, "session log cannot be opened"))
        .ok();
    let (written, done) = oneshot::channel();
    let room = Arc::new(Semaphore::new(LOG_BACKLOG));
    // A sink dropped before any chunk drops `written`, which resolves `LogWritten` too.
    (LogSink { state: Sink::Idle { path, file, written }, room }, LogWritten(done))
}

impl LogSink {
    /// Queues `bytes` (shared, not copied), first waiting for room when the disk is
    /// behind. Called on the runtime (the stream's reader).
    pub async fn write(&mut self, bytes: Bytes) {
        if matches!(self.state, Sink::Idle { .. }) {
            let (chunks, receiver) = mpsc::unbounded_channel();
            if let Sink::Idle { path, file, written } = std::mem::replace(&mut self.state, Sink::Writing(chunks)) {
                tokio::spawn(write_all(path, file, receiver, Arc::clone(&self.room), written));
            }
        }
        let wanted = bytes.len().min(LOG_BACKLOG) as u32;
        match self.room.acquire_many(wanted).await {
            // Given back by the writer once written.
            Ok(permit) => permit.forget(),
            // Closed: the log failed, and nothing more is written.
            Err(_) => return,
        }
        if let Sink::Writing(chunks) = &self.state {
            let _ = chunks.send(bytes);
        }
    }
}

async fn write_all(
    path: PathBuf,
    mut file: Option<File>,
    mut chunks: mpsc::UnboundedReceiver<Bytes>,
    room: Arc<Semaphore>,
    written: oneshot::Sender<()>,
) {
    let slow = TEST_SLOW.as_ref().filter(|(text, _)| path.to_string_lossy().contains(text.as_str())).map(|(_, d)| *d);
    while let Some(first) = chunks.recv().await {
        // What piled up goes out in one vectored write, without joining it first.
        let mut size = first.len();
        let mut batch = vec![first];
        while size < BATCH {
            match chunks.try_recv() {
                Ok(more) => {
                    size += more.len();
                    batch.push(more);
                }
                Err(_) => break,
            }
        }
        // The room each chunk took (see `LogSink::write`), given back once written.
        let taken: usize = batch.iter().map(|c| c.len().min(LOG_BACKLOG)).sum();
        if let Some(open) = file.take() {
            let outcome = tokio::task::spawn_blocking(move || {
                if let Some(delay) = slow {
                    std::thread::sleep(delay);
                }
                let mut open = open;
                write_vectored_all(&mut open, &batch).map(|()| open)
            })
            .await;
            match outcome {
                Ok(Ok(open)) => file = Some(open),
                Ok(Err(e)) => tracing::error!(path = %path.display(), error = %e, "session log write failed"),
                Err(e) => tracing::error!(path = %path.display(), error = %e, "session log write panicked"),
            }
        }
        if file.is_none() {
            // Nothing more will be written: let no reader wait for room.
            room.close();
        }
        room.add_permits(taken);
    }
    let _ = written.send(());
}

/// Writes every chunk, in order, with as few `writev` calls as the file takes.
fn write_vectored_all(file: &mut File, chunks: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
