//! The writer of a session's stdin. Writes are queued so callers never block; a
//! broken pipe (the agent closed stdin or exited) ends the writer quietly, and later
//! sends fail because the queue is closed.

use std::os::fd::OwnedFd;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

#[derive(Debug)]
pub(crate) enum StdinCommand {
    Write(Vec<u8>),
    /// Close stdin: the agent sees end of input.
    Close,
}

pub(crate) async fn write_stdin(fd: OwnedFd, mut commands: mpsc::UnboundedReceiver<StdinCommand>) {
    let mut pipe = match pipe::Sender::from_owned_fd(fd) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "stdin pipe unusable");
            return;
        }
    };
    while let Some(command) = commands.recv().await {
        match command {
            StdinCommand::Write(bytes) => {
                if let Err(e) = pipe.write_all(&bytes).await {
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
