//! The spawner: starts sessions, answers queries about them, stops them. One
//! spawner owns its session table and reports through one [`EventHandler`]. The ways
//! to start a session are [`start`]'s; how its agent is started is [`launch`]'s.

mod launch;
mod start;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::SessionConfig;
use crate::error::SpawnError;
use crate::event::{EventHandler, SpawnerEvent};
use crate::notice::{Activity, Notice, Restarter, Watchers};
use crate::options::SpawnerOptions;
use crate::process;
use crate::recovery::CrashFacts;
use crate::registry::{ReapReport, Registry};
use crate::session::supervisor;
use crate::session::{Completion, InputRefused, Session, StopReason, StopRequest};
use crate::status::{CrashReport, MetricsSummary, SessionState, SessionStatus};
use crate::table::SessionTable;
pub use start::PendingSpawn;

/// An environment as name and value pairs.
type Environment = Vec<(String, String)>;

/// Environment variable naming the session an agent process belongs to. Inherited by
/// everything the agent starts, so the session's processes can be told apart.
pub const SESSION_ID_ENV: &str = "CLAUDE_SESSION_SPAWNER_SESSION_ID";

/// What `spawn_session` returns.
#[derive(Debug)]
pub struct SpawnResult {
    pub session_id: String,
    /// A snapshot taken when the agent had started.
    pub status: SessionStatus,
    /// Resolves with the final status after the session's `SessionEnded` event.
    pub completion: Completion,
}

pub(crate) struct Shared {
    pub options: SpawnerOptions,
    claude_path: PathBuf,
    handler: Box<dyn EventHandler>,
    pub(crate) runtime: Handle,
    pub table: Mutex<SessionTable>,
    credit: Arc<Semaphore>,
    credit_total: usize,
    seq: AtomicU64,
    /// State files of live sessions, for the next daemon if this one dies.
    /// Shared with the blocking pool, where its files are written.
    pub registry: Option<Arc<Registry>>,
    /// Pools and recovery managers working over this spawner.
    pub watchers: Watchers,
    /// Counts live sessions as work in flight (the Node binding's keep-alive).
    pub activity: Option<Arc<dyn Activity>>,
    /// The daemon's environment for sessions started without one, when it is not
    /// this process's (the Node binding sets `process.env` when they differ).
    base_env: parking_lot::RwLock<Option<Arc<Environment>>>,
}

impl Shared {
    /// Hands a notice to the pools and recovery managers over this spawner.
    pub fn notify(&self, notice: &Notice) {
        self.watchers.notify(notice);
    }

    pub fn emit(&self, event: SpawnerEvent) {
        crate::event::handle_guarded(&*self.handler, event, "spawner");
    }

    /// The daemon's environment set with [`Spawner::set_base_env`], as a list to pass on.
    fn default_env(&self) -> Option<Vec<(String, String)>> {
        self.base_env.read().as_ref().map(|vars| vars.as_ref().clone())
    }

    /// A share of the output credit for `bytes` of output, waited for when the
    /// handler is behind.
    pub async fn output_credit(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let want = bytes.clamp(1, self.credit_total) as u32;
        Arc::clone(&self.credit).acquire_many_owned(want).await.ok()
    }
}

/// Spawns and supervises agent sessions. Cheap to clone; clones share the sessions.
#[derive(Clone)]
pub struct Spawner {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Spawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawner")
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl Spawner {
    /// A spawner on the current Tokio runtime.
    pub fn new(options: SpawnerOptions, handler: impl EventHandler) -> Result<Self, SpawnError> {
        let runtime = Handle::try_current().map_err(|_| SpawnError::NoRuntime)?;
        Ok(Self::with_runtime(options, handler, runtime))
    }

    /// A spawner whose sessions run on `runtime`; its methods may then be called from
    /// any thread.
    pub fn with_runtime(options: SpawnerOptions, handler: impl EventHandler, runtime: Handle) -> Self {
        Self::with_activity(options, handler, runtime, None)
    }

    /// As [`Spawner::with_runtime`], counting each live session on `activity`.
    pub(crate) fn with_activity(
        options: SpawnerOptions,
        handler: impl EventHandler,
        runtime: Handle,
        activity: Option<Arc<dyn Activity>>,
    ) -> Self {
        let credit_total = options.output_credit_bytes.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        // Without a registry sessions still run; only a dead daemon's cleanup is lost.
        let registry = options.state_dir.as_deref().and_then(|dir| {
            Registry::open(dir)
                .map_err(|e| tracing::warn!(dir = %dir.display(), error = %e, "no session state files"))
                .ok()
                .map(Arc::new)
        });
        Self {
            shared: Arc::new(Shared {
                claude_path: options.resolved_claude_path(),
                table: Mutex::new(SessionTable::new(options.history_size)),
                options,
                handler: Box::new(handler),
                runtime,
                credit: Arc::new(Semaphore::new(credit_total)),
                credit_total,
                seq: AtomicU64::new(0),
                registry,
                watchers: Watchers::default(),
                activity,
                base_env: parking_lot::RwLock::new(None),
            }),
        }
    }

    /// The runtime its sessions are supervised on.
    pub(crate) fn runtime(&self) -> &Handle {
        &self.shared.runtime
    }

    /// Calls `watcher` with every notice from now on, until [`Spawner::unwatch`].
    pub(crate) fn watch(&self, watcher: impl Fn(&Notice) + Send + Sync + 'static) -> u64 {
        self.shared.watchers.add(Arc::new(watcher))
    }

    pub(crate) fn unwatch(&self, id: u64) {
        self.shared.watchers.remove(id);
    }

    /// Who restarts a known session, if someone claimed it when it started.
    pub(crate) fn restarter_of(&self, id: &str) -> Option<Restarter> {
        self.shared.table.lock().get(id).and_then(|s| s.restarter)
    }

    /// A variable of the environment sessions started without one inherit (for
    /// `HOME` and `CLAUDE_CONFIG_DIR` when a recovery looks for a transcript).
    pub(crate) fn inherited_var(&self, name: &str) -> Option<String> {
        match self.shared.base_env.read().as_ref() {
            Some(vars) => vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            None => std::env::var(name).ok(),
        }
    }

    /// The environment sessions started without one inherit: `vars`, or this
    /// process's own with `None` (the default).
    #[cfg_attr(not(feature = "napi"), allow(dead_code))]
    pub(crate) fn set_base_env(&self, vars: Option<Vec<(String, String)>>) {
        *self.shared.base_env.write() = vars.map(Arc::new);
    }

    /// A handle that does not keep the spawner alive.
    pub fn downgrade(&self) -> WeakSpawner {
        WeakSpawner(Arc::downgrade(&self.shared))
    }

    pub fn options(&self) -> &SpawnerOptions {
        &self.shared.options
    }

    /// The executable sessions start.
    pub fn claude_path(&self) -> &Path {
        &self.shared.claude_path
    }

    fn session(&self, id: &str) -> Result<Arc<Session>, SpawnError> {
        self.shared
            .table
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| SpawnError::UnknownSession(id.to_owned()))
    }

    /// The session's directory (CLAUDE.md, stdout.log, stderr.log), while it is known.
    pub fn session_directory(&self, id: &str) -> Option<PathBuf> {
        self.shared.table.lock().get(id).map(|s| s.dir.clone())
    }

    /// A snapshot of a session in the active set or the history.
    pub fn session_status(&self, id: &str) -> Option<SessionStatus> {
        self.shared.table.lock().get(id).cloned().map(|s| s.status())
    }

    /// Snapshots of the sessions in the active set, in spawn order.
    pub fn active_sessions(&self) -> Vec<SessionStatus> {
        let active = self.shared.table.lock().active();
        active.iter().map(|s| s.status()).collect()
    }

    /// Asks the supervisor to stop a session: graceful is SIGTERM to the group, then
    /// SIGKILL after the grace period; forced is SIGKILL now. The session ends
    /// `terminated` unless it had already timed out. Returns the completion to await;
    /// a session that already ended is left as it is.
    pub fn request_stop(&self, id: &str, graceful: bool) -> Result<Completion, SpawnError> {
        let session = self.session(id)?;
        if supervisor::mark_stop(&session, StopReason::Terminated) {
            tracing::info!(session = id, graceful, "terminating");
        }
        if let Some(control) = &session.control {
            // A closed channel means the supervisor is past the exit: nothing to stop.
            let _ = control.stop.send(StopRequest { graceful, after: None });
        }
        Ok(session.completion())
    }

    /// Stops a session (see [`Spawner::request_stop`]) and waits for its end.
    pub async fn terminate_session(&self, id: &str, graceful: bool) -> Result<SessionStatus, SpawnError> {
        Ok(self.request_stop(id, graceful)?.wait().await)
    }

    /// Writes `input` to the agent (as the protocol frames it).
    pub fn send_input(&self, id: &str, input: &str) -> Result<(), SpawnError> {
        let session = self.session(id)?;
        let mut record = session.record.lock();
        if !matches!(record.state, SessionState::Running | SessionState::WaitingInput) {
            return Err(SpawnError::NotRunning { id: id.to_owned(), state: record.state });
        }
        // Until the supervisor sets `exited` (under this lock) the pid is not reaped,
        // so asking the kernel about it is safe.
        let exited = record.exited
            || record
                .pid
                .is_some_and(|pid| process::exit_status_nowait(pid).map_or(true, |s| s.is_some()));
        if exited {
            return Err(SpawnError::AgentExited { id: id.to_owned() });
        }
        let control = session.control.as_ref().ok_or_else(|| SpawnError::AgentExited { id: id.to_owned() })?;
        control.stdin.write(session.protocol.encode_input(input)).map_err(|refused| match refused {
            InputRefused::Backlog(pending) => SpawnError::InputBacklog { id: id.to_owned(), pending },
            InputRefused::Closed => SpawnError::StdinClosed { id: id.to_owned() },
        })?;
        record.state = SessionState::Running;
        Ok(())
    }

    /// Closes the agent's stdin, its signal that no more input comes.
    pub fn end_session(&self, id: &str) -> Result<(), SpawnError> {
        let session = self.session(id)?;
        let state = session.state();
        if state.is_ended() {
            return Err(SpawnError::NotRunning { id: id.to_owned(), state });
        }
        if let Some(control) = &session.control {
            control.stdin.close();
        }
        Ok(())
    }

    /// Removes every ended session from the active set; returns how many.
    pub fn cleanup_completed_sessions(&self) -> usize {
        self.shared.table.lock().cleanup_ended()
    }

    /// The config a known session was started with (kept as long as the session is,
    /// so recovery can start it again).
    pub fn session_config(&self, id: &str) -> Option<Arc<SessionConfig>> {
        self.shared.table.lock().get(id).map(|s| Arc::clone(&s.config))
    }

    /// What is known about how an ended session died, for crash analysis: its state
    /// and exit status, the OOM kills its memory cgroup counted while it ran, and the
    /// newest output (up to 64 KiB of stdout, then of stderr). `None` for an unknown
    /// or still live session.
    pub fn crash_facts(&self, id: &str) -> Option<CrashFacts> {
        let session = self.shared.table.lock().get(id).cloned()?;
        let r = session.record.lock();
        if !r.state.is_ended() {
            return None;
        }
        let tail = |text: String| {
            let cut = text.len().saturating_sub(crate::recovery::DUMP_TAIL_BYTES as usize);
            let cut = (cut..=text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
            text[cut..].to_owned()
        };
        let mut output = tail(r.stdout.to_text());
        output.push('\n');
        output.push_str(&tail(r.stderr.to_text()));
        Some(CrashFacts {
            state: Some(r.state),
            signal: r.signal.clone(),
            exit_code: r.exit_code,
            oom_kills: r.oom.as_ref().and_then(|c| c.kills_since_start()),
            oom_source: r.oom.as_ref().map(|c| c.path.display().to_string()),
            output,
        })
    }

    /// A crash report for any ended session (the contract's reports are for
    /// `crashed` ones; recovery also handles `timeout`, and exits 128+N).
    pub fn crash_report_for(&self, id: &str) -> Option<CrashReport> {
        let session = self.shared.table.lock().get(id).cloned()?;
        session.report()
    }

    /// Stops the sessions of daemons that died without stopping them: every state
    /// file in this spawner's `state_dir` whose daemon is gone. An agent still
    /// running (its pid started when the agent did) gets SIGTERM to its process
    /// group, then SIGKILL after the grace period. Each such session is recorded in
    /// this spawner's history as `crashed`, saying what happened. Blocks for up to
    /// the grace period: call it off the runtime's threads.
    pub fn reap_orphans(&self) -> std::io::Result<ReapReport> {
        let Some(registry) = &self.shared.registry else {
            return Ok(ReapReport::default());
        };
        let report = registry.reap_orphans(self.shared.options.grace_period)?;
        for crate::registry::Orphan { session: orphan, was_running, leftovers } in &report.orphans {
            let what = match (*was_running, *leftovers) {
                (true, _) => "its process group was stopped by reapOrphans".to_owned(),
                (false, 0) => "its agent had already exited".to_owned(),
                (false, n) => format!(
                    "its agent had already exited; {n} process{} it started {} stopped by reapOrphans",
                    if n == 1 { "" } else { "es" },
                    if n == 1 { "was" } else { "were" }
                ),
            };
            let message = format!("orphaned: its daemon (pid {}) died while it ran; {what}", orphan.daemon_pid);
            let config = SessionConfig { working_directory: orphan.working_directory.clone(), ..SessionConfig::default() };
            let dir = orphan.working_directory.join(".vp-daemon").join("sessions").join(&orphan.session_id);
            let session = Arc::new(Session::new(
                orphan.session_id.as_str().into(),
                self.shared.seq.fetch_add(1, Ordering::Relaxed),
                Arc::new(config),
                dir,
                self.shared.options.protocol,
                0,
                None,
            ));
            session.record.lock().pid = Some(orphan.pid);
            self.shared.table.lock().insert(Arc::clone(&session));
            if session.finish(SessionState::Crashed, Some(message)).is_some() {
                self.shared.table.lock().on_ended(&session);
                session.notify_ended();
            }
        }
        Ok(report)
    }

    /// One report per crashed session in the history, oldest first.
    pub fn crash_reports(&self) -> Vec<CrashReport> {
        let sessions: Vec<_> = self.shared.table.lock().history().cloned().collect();
        sessions.iter().filter_map(|s| s.crash_report()).collect()
    }

    /// Counts over every known session, each once.
    pub fn metrics_summary(&self) -> MetricsSummary {
        let sessions: Vec<_> = self.shared.table.lock().all().cloned().collect();
        let mut m = MetricsSummary::default();
        let mut ended = 0u64;
        let mut ended_time = 0u64;
        for session in &sessions {
            let r = session.record.lock();
            m.total_sessions += 1;
            match r.state {
                SessionState::Completed => m.completed_sessions += 1,
                SessionState::Failed => m.failed_sessions += 1,
                SessionState::Crashed => m.crashed_sessions += 1,
                s if !s.is_ended() => m.active_sessions += 1,
                _ => {}
            }
            if let Some(ms) = r.execution_time_ms {
                ended += 1;
                ended_time += ms;
            }
            m.total_tokens_used += r.token_usage.map_or(0, |t| t.total);
        }
        m.avg_execution_time_ms = if ended == 0 { 0.0 } else { ended_time as f64 / ended as f64 };
        m
    }

    /// Kills every live session's process group at once (SIGKILL), and the processes
    /// that left those groups. For a daemon that is going away; the supervisors then
    /// record the sessions as `terminated`.
    pub fn kill_all(&self) {
        let sessions: Vec<_> = self.shared.table.lock().all().cloned().collect();
        let mut live: Vec<Arc<str>> = Vec::new();
        for session in sessions {
            // Signal under the lock: the supervisor marks `exited` under it before
            // reaping, so the group id cannot have been reused.
            let mut r = session.record.lock();
            if r.state.is_ended() {
                continue;
            }
            // One not started yet sees the reason and does not start.
            r.stop.get_or_insert(StopReason::Terminated);
            if let (Some(pid), false) = (r.pid, r.exited) {
                let _ = process::signal_group(pid, libc::SIGKILL);
                live.push(Arc::clone(&session.id));
                // The daemon may be gone before the supervisor records the end.
                if let Some(registry) = &self.shared.registry {
                    registry.remove(&session.id);
                }
            }
        }
        // Their processes outside the groups too: no sweep comes after the daemon.
        let ids: Vec<&str> = live.iter().map(|id| &**id).collect();
        crate::sweep::now(&ids);
    }
}

/// A [`Spawner`] reference that does not keep it alive.
#[derive(Clone, Debug)]
pub struct WeakSpawner(std::sync::Weak<Shared>);

impl WeakSpawner {
    pub fn upgrade(&self) -> Option<Spawner> {
        self.0.upgrade().map(|shared| Spawner { shared })
    }
}
