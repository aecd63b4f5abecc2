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
use crate::protocol::{add_metrics, Findings, Observer};
use crate::session::Session;
use crate::spawner::Shared;

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
            {
                let mut record = session.record.lock();
                record.tail_mut(self.stream).push(bytes);
                if !found.is_empty() {
                    add_metrics(&mut record.metrics, &found.metrics);
                }
            }
            if session.config.verbose {
                tracing::info!(stream = self.stream.as_str(), bytes = n, "output");
            }
            let text = if n >= HAND_OVER {
                decoder.decode_owned(std::mem::replace(&mut buf, Vec::with_capacity(READ_SIZE)))
            } else {
                decoder.decode(&buf)
            };
            self.deliver(text, session, shared).await;
        }
        let mut found = Findings::default();
        if let Some(observer) = self.observer.as_mut() {
            observer.on_eof(&mut found);
            add_metrics(&mut session.record.lock().metrics, &found.metrics);
        }
        self.deliver(decoder.finish(), session, shared).await;
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
