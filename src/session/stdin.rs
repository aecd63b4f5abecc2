//! The writer of a session's stdin. Writes are queued so callers never block, but the
//! queue is bounded by bytes: input that an agent does not read stays in the daemon's
//! memory, so past [`INPUT_BACKLOG_LIMIT`] a write is refused instead of queued. A
//! broken pipe (the agent closed stdin or exited) ends the writer quietly, and later
//! sends fail because the queue is closed.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;

/// Bytes of input a session may have waiting for its agent to read them. One write of
/// any size is accepted when nothing waits, so a single large prompt always goes in.
pub(crate) const INPUT_BACKLOG_LIMIT: usize = 8 << 20;

#[derive(Debug)]
pub(crate) enum StdinCommand {
    Write(Vec<u8>),
    /// Close stdin: the agent sees end of input.
    Close,
}

/// Why a write was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InputRefused {
    /// This many bytes are still waiting; the write would pass the limit.
    Backlog(usize),
    /// The writer has ended (the agent closed stdin or exited).
    Closed,
}

/// The sending side, held by the session's control.
pub(crate) struct InputSender {
    commands: mpsc::UnboundedSender<StdinCommand>,
    pending: Arc<AtomicUsize>,
}

/// The receiving side, consumed by [`write_stdin`].
pub(crate) struct InputReceiver {
    commands: mpsc::UnboundedReceiver<StdinCommand>,
    pending: Arc<AtomicUsize>,
}

pub(crate) fn input_channel() -> (InputSender, InputReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let pending = Arc::new(AtomicUsize::new(0));
    (
        InputSender { commands: tx, pending: Arc::clone(&pending) },
        InputReceiver { commands: rx, pending },
    )
}

impl InputSender {
    pub fn write(&self, bytes: Vec<u8>) -> Result<(), InputRefused> {
        let len = bytes.len();
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |waiting| {
                (waiting == 0 || waiting + len <= INPUT_BACKLOG_LIMIT).then_some(waiting + len)
            })
            .map_err(InputRefused::Backlog)?;
        self.commands.send(StdinCommand::Write(bytes)).map_err(|_| {
            self.pending.fetch_sub(len, Ordering::AcqRel);
            InputRefused::Closed
        })
    }

    /// The library's own protocol messages (a permission answer, an interrupt): small,
    /// and never refused, since the agent may be waiting for exactly this one.
    pub fn reply(&self, bytes: Vec<u8>) {
        let len = bytes.len();
        self.pending.fetch_add(len, Ordering::AcqRel);
        if self.commands.send(StdinCommand::Write(bytes)).is_err() {
            self.pending.fetch_sub(len, Ordering::AcqRel);
        }
    }

    pub fn close(&self) {
        let _ = self.commands.send(StdinCommand::Close);
    }
}

pub(crate) async fn write_stdin(fd: OwnedFd, input: InputReceiver) {
    let InputReceiver { mut commands, pending } = input;
    if let Err(e) = crate::process::set_nonblocking(fd.as_raw_fd()) {
        tracing::warn!(error = %e, "stdin pipe unusable");
        return;
    }
    let mut pipe = StdinPipe { watched: None, fd };
    while let Some(command) = commands.recv().await {
        match command {
            StdinCommand::Write(bytes) => {
                let written = pipe.write_all(&bytes).await;
                pending.fetch_sub(bytes.len(), Ordering::AcqRel);
                if let Err(e) = written {
                    tracing::debug!(error = %e, "stdin closed by the agent");
                    return;
                }
            }
            StdinCommand::Close => {
                tracing::debug!("stdin closed");
                return;
            }
        }
    }
}

/// Our end of the agent's stdin, non-blocking. Written at once while the pipe has room
/// (a prompt fits in its 64 KiB); only a write that finds it full has it registered
/// with the runtime, to wait until it drains. So most sessions never have it watched:
/// no registration, and no wake-up of the runtime's driver when the agent's exit
/// breaks the pipe.
struct StdinPipe {
    /// Declared first, so it is deregistered before `fd` closes.
    watched: Option<AsyncFd<RawFd>>,
    fd: OwnedFd,
}

impl StdinPipe {
    async fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let written = match &self.watched {
                None => match write_now(self.fd.as_raw_fd(), bytes) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // SAFETY: `fd` stays open, unchanged, while this registration
                        // lives (it is dropped first).
                        let watched = unsafe { AsyncFd::register_with_interest(self.fd.as_raw_fd(), Interest::WRITABLE) };
                        self.watched = Some(watched.map_err(|e| e.into_parts().1)?);
                        continue;
                    }
                    written => written,
                },
                Some(watched) => {
                    let mut ready = watched.writable().await?;
                    match ready.try_io(|fd| write_now(*fd.get_ref(), bytes)) {
                        Ok(written) => written,
                        // Full again: the readiness is cleared, so this waits anew.
                        Err(_full) => continue,
                    }
                }
            };
            match written {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn write_now(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: the kernel reads at most `bytes.len()` bytes from `bytes`.
    let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_but_takes_one_large_write_when_nothing_waits() {
        let (tx, _rx) = input_channel();
        assert_eq!(tx.write(vec![0; INPUT_BACKLOG_LIMIT + 1]), Ok(()));
        assert_eq!(tx.write(vec![0; 1]), Err(InputRefused::Backlog(INPUT_BACKLOG_LIMIT + 1)));
        let (tx, _rx) = input_channel();
        assert_eq!(tx.write(vec![0; INPUT_BACKLOG_LIMIT - 10]), Ok(()));
        assert_eq!(tx.write(vec![0; 10]), Ok(()));
        assert_eq!(tx.write(vec![0; 1]), Err(InputRefused::Backlog(INPUT_BACKLOG_LIMIT)));
    }

    #[test]
    fn a_closed_writer_refuses_and_counts_nothing() {
        let (tx, rx) = input_channel();
        drop(rx);
        assert_eq!(tx.write(vec![0; 100]), Err(InputRefused::Closed));
        assert_eq!(tx.pending.load(Ordering::Acquire), 0);
    }
}
