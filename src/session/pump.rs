//! The reader of one output stream. Each chunk goes, in this order, to the log file
//! on disk, to the session's bounded tail, to the event handler (as text), and to
//! the protocol observer. Both streams are read concurrently, so a flood on one
//! never stalls the other.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use crate::event::{OutputChunk, SpawnerEvent, Stream};
use crate::output::Utf8Decoder;
use crate::protocol::{Findings, Observer, Report};
use crate::session::{Session, StdinCommand};
use crate::spawner::Shared;
use crate::status::SessionState;

/// A pipe holds 64 KiB on Linux; reading more at once gains nothing.
const READ_SIZE: usize = 64 * 1024;

/// A read at least this big hands its buffer to the event as is; a smaller one is
/// copied out, so a short line never pins a whole read buffer while it waits.
const HAND_OVER: usize = READ_SIZE / 2;

pub(crate) struct Pump {
    pub stream: Stream,
    pub pipe: pipe::Receiver,
    /// Opened by the reader, off the spawn's critical path.
    pub log: PathBuf,
    pub observer: Option<Observer>,
}

impl Pump {
    pub fn new(stream: Stream, fd: OwnedFd, log: PathBuf, observer: Option<Observer>) -> std::io::Result<Self> {
        Ok(Self {
            stream,
            pipe: pipe::Receiver::from_owned_fd(fd)?,
            log,
            observer,
        })
    }

    pub async fn run(mut self, session: &Session, shared: &Shared) {
        let mut buf = Vec::with_capacity(READ_SIZE);
        let mut decoder = Utf8Decoder::default();
        let mut log: Option<File> = match crate::spawner::private_file(&self.log) {
            Ok(file) => Some(file),
            Err(e) => {
                // Keep going: the events and the tail still carry the output.
                tracing::error!(path = %self.log.display(), error = %e, "session log cannot be opened");
                None
            }
        };
        loop {
            buf.clear();
            let n = match self.pipe.read_buf(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(stream = self.stream.as_str(), error = %e, "read failed");
                    break;
                }
            };
            let bytes = &buf[..];
            if let Some(file) = log.as_mut() {
                if let Err(e) = file.write_all(bytes) {
                    tracing::error!(stream = self.stream.as_str(), error = %e, "session log write failed");
                    log = None;
                }
            }
            let mut found = Findings::default();
            if let Some(observer) = self.observer.as_mut() {
                observer.on_stdout(bytes, &mut found);
            }
            session.record.lock().tail_mut(self.stream).push(bytes);
            if session.config.verbose {
                tracing::info!(stream = self.stream.as_str(), bytes = n, "output");
            }
            let text = if n >= HAND_OVER {
                decoder.decode_owned(std::mem::replace(&mut buf, Vec::with_capacity(READ_SIZE)))
            } else {
                decoder.decode(&buf)
            };
            self.deliver(text, session, shared).await;
            if !found.is_empty() {
                apply(found, session, shared);
            }
        }
        let mut found = Findings::default();
        if let Some(observer) = self.observer.as_mut() {
            observer.on_eof(&mut found);
        }
        self.deliver(decoder.finish(), session, shared).await;
        if !found.is_empty() {
            apply(found, session, shared);
        }
    }

    async fn deliver(&self, data: String, session: &Session, shared: &Shared) {
        if data.is_empty() {
            return;
        }
        let credit = shared.output_credit(data.len()).await;
        shared.emit(SpawnerEvent::SessionOutput(OutputChunk {
            session_id: Arc::clone(&session.id),
            stream: self.stream,
            data,
            _credit: credit,
        }));
    }
}

/// What the protocol learnt from a chunk: into the record, onto stdin, out as events
/// (after the chunk's own output event).
fn apply(found: Findings, session: &Session, shared: &Shared) {
    let mut close_stdin = false;
    {
        let mut r = session.record.lock();
        if let Some(metrics) = found.metrics {
            r.metrics = metrics;
        }
        if let Some(usage) = found.usage {
            r.token_usage = Some(usage);
        }
        if let Some(cost) = found.cost_usd {
            r.cost_usd = Some(cost);
        }
        r.modified_files.extend(found.modified_files);
        if let Some(error) = found.turn_ended {
            r.turn_error = error;
            if session.config.keep_alive {
                if r.state == SessionState::Running {
                    r.state = SessionState::WaitingInput;
                }
            } else {
                // One task, one turn: closing stdin lets Claude Code exit.
                close_stdin = true;
            }
        }
    }
    if let Some(control) = &session.control {
        for reply in found.replies {
            let _ = control.stdin.send(StdinCommand::Write(reply));
        }
        if close_stdin {
            let _ = control.stdin.send(StdinCommand::Close);
        }
    }
    for report in found.reports {
        let session_id = Arc::clone(&session.id);
        shared.emit(match report {
            Report::Message(message) => SpawnerEvent::SessionMessage { session_id, message },
            Report::Retry { attempt, max_retries, retry_delay_ms, error } => SpawnerEvent::SessionRetry {
                session_id,
                attempt,
                max_retries,
                retry_delay_ms,
                error,
            },
        });
    }
}
