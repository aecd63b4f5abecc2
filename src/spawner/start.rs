//! The ways to start a session: awaited ([`Spawner::spawn_session`]), pending
//! ([`Spawner::start_session`]), with a callback on the launcher for a binding
//! ([`Spawner::start_session_then`]), or blocking on the caller's thread
//! ([`Spawner::spawn_session_now`]); and registering a session before it starts, for a
//! caller that must know its id first. All but the last start it on the launcher
//! thread ([`launch_guarded`]).

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::launch::{launch_guarded, Registered};
use super::{SpawnResult, Spawner};
use crate::config::SessionConfig;
use crate::error::SpawnError;
use crate::launcher;
use crate::notice::{Busy, Restarter};
use crate::session::{input_channel, Control, InputReceiver, Session, StopRequest};

/// A session being started; await it for the [`SpawnResult`].
#[derive(Debug)]
pub struct PendingSpawn {
    pub session_id: String,
    result: oneshot::Receiver<Result<SpawnResult, SpawnError>>,
}

impl IntoFuture for PendingSpawn {
    type Output = Result<SpawnResult, SpawnError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            // The launcher always answers; a missing answer means it could not run.
            self.result.await.unwrap_or(Err(SpawnError::Stopped { session_id: self.session_id }))
        })
    }
}

impl Spawner {
    /// Writes the session directory, starts the agent and sends it the task prompt;
    /// resolves once the agent runs. The slow part happens on the launcher thread,
    /// never on the caller's. Errors after the session got its id record it as
    /// `failed` (with `SpawnFailed` and `SessionEnded` events). The agent's
    /// environment is this process's, with the config's variables on top.
    pub async fn spawn_session(&self, config: SessionConfig) -> Result<SpawnResult, SpawnError> {
        self.start_session(config, None).await
    }

    /// Starts a session without waiting: the session exists at once (state
    /// `initializing`) under the returned id, and its `SessionSpawned` or
    /// `SpawnFailed` event follows. `base_env`, when given, is the daemon's
    /// environment to inherit instead of this process's (the Node binding passes
    /// `process.env`, as `child_process` does).
    pub fn start_session(&self, config: SessionConfig, base_env: Option<Vec<(String, String)>>) -> PendingSpawn {
        self.start_claimed(config, base_env, None)
    }

    /// [`Spawner::start_session`], with `restarter` recorded as who starts the session
    /// again when it ends in one of its states.
    pub(crate) fn start_claimed(
        &self,
        config: SessionConfig,
        base_env: Option<Vec<(String, String)>>,
        restarter: Option<Restarter>,
    ) -> PendingSpawn {
        self.start_registered(self.register_session(config, restarter), base_env)
    }

    /// Starts a session [`Spawner::register_session`] made, off the calling thread, as
    /// [`Spawner::start_session`] does.
    pub(crate) fn start_registered(&self, r: Registered, base_env: Option<Vec<(String, String)>>) -> PendingSpawn {
        let (done, result) = oneshot::channel();
        // Not together: the outcome wakes a task elsewhere, whose events must follow.
        let session_id = self.launch_off_thread(r, base_env, false, move |outcome| {
            let _ = done.send(outcome);
        });
        PendingSpawn { session_id, result }
    }

    /// Starts a session off the calling thread, as [`Spawner::start_session`] does, and
    /// hands the outcome to `done` on the launcher thread right after the session's
    /// `SessionSpawned` (or, when it failed, `SessionEnded`) was emitted there, and
    /// before its supervisor starts, so before any later event of the session: a binding
    /// that passes events and outcome down one ordered queue keeps that order. The event
    /// and what `done` reports through the handler's queue on that thread may go as one
    /// ([`EventHandler::together`](crate::EventHandler::together)). Returns the session's id.
    pub fn start_session_then(
        &self,
        config: SessionConfig,
        base_env: Option<Vec<(String, String)>>,
        done: impl FnOnce(Result<SpawnResult, SpawnError>) + Send + 'static,
    ) -> String {
        self.launch_off_thread(self.register_session(config, None), base_env, true, done)
    }

    fn launch_off_thread(
        &self,
        r: Registered,
        base_env: Option<Vec<(String, String)>>,
        together: bool,
        done: impl FnOnce(Result<SpawnResult, SpawnError>) + Send + 'static,
    ) -> String {
        let Registered { session, stops, stdin_commands } = r;
        let shared = Arc::clone(&self.shared);
        let id = session.id.to_string();
        launcher::launch(move || launch_guarded(&shared, &session, base_env, stops, stdin_commands, together, done));
        id
    }

    /// Starts a session on the calling thread and returns once its agent runs (or
    /// failed to start): for a caller that may block on the disk (not a Tokio worker:
    /// use [`Spawner::spawn_session`] there).
    pub fn spawn_session_now(
        &self,
        config: SessionConfig,
        base_env: Option<Vec<(String, String)>>,
    ) -> Result<SpawnResult, SpawnError> {
        let (session, stops, stdin_commands) = self.register(config, None);
        launch_guarded(&self.shared, &session, base_env, stops, stdin_commands, false, |outcome| outcome)
    }

    /// A session in the table under its id, not started yet: start it with
    /// [`Spawner::start_registered`]. For a caller that must know the id before the
    /// session can end (a recovery books it by that id).
    pub(crate) fn register_session(&self, config: SessionConfig, restarter: Option<Restarter>) -> Registered {
        let (session, stops, stdin_commands) = self.register(config, restarter);
        Registered { session, stops, stdin_commands }
    }

    /// A new session in the table, `initializing`, with the receiving ends of its
    /// channels.
    fn register(
        &self,
        config: SessionConfig,
        restarter: Option<Restarter>,
    ) -> (
        Arc<Session>,
        mpsc::UnboundedReceiver<StopRequest>,
        InputReceiver,
    ) {
        let shared = Arc::clone(&self.shared);
        let id: Arc<str> = format!("claude-session-{}", uuid::Uuid::new_v4()).into();
        let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
        let config = Arc::new(config);
        let dir = config.working_directory.join(".vp-daemon").join("sessions").join(&*id);
        let (stop_tx, stops) = mpsc::unbounded_channel();
        let (stdin_tx, stdin_commands) = input_channel();
        let mut session = Session::new(
            Arc::clone(&id),
            seq,
            config,
            dir,
            shared.options.protocol,
            shared.options.output_buffer_bytes,
            Some(Control { stop: stop_tx, stdin: stdin_tx }),
        );
        session.restarter = restarter;
        // Counted from now: whoever asked for it is still holding its own work.
        session.busy = parking_lot::Mutex::new(Some(Busy::new(&shared.activity)));
        let session = Arc::new(session);
        shared.table.lock().insert(Arc::clone(&session));
        (session, stops, stdin_commands)
    }
}
