//! Starting a session: its working files prepared, the agent spawned with its
//! argument vector and environment (no shell), handed to its supervisor task, and
//! `SessionSpawned` reported; a failure, a panic included, is recorded on the session.

use std::ffi::OsString;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use tokio::sync::mpsc;

use super::{Shared, SpawnResult, SESSION_ID_ENV};
use crate::charter::{render_claude_md, render_task_prompt};
use crate::config::SessionConfig;
use crate::error::SpawnError;
use crate::event::{SpawnerEvent, Stream};
use crate::launcher;
use crate::options::InheritEnv;
use crate::paths;
use crate::process::{self, AgentCommand, AgentProcess};
use crate::protocol::LaunchInput;
use crate::session::pump::Pump;
use crate::session::supervisor::{self, Running};
use crate::session::{snapshot_of, InputReceiver, Session, StopRequest};
use crate::status::SessionState;

/// [`launch`], with any failure (a panic included) recorded on the session. `started`
/// sees the outcome after `SessionSpawned` was emitted and before the supervisor (whose
/// events come after) begins. With `together`, the event and what `started` delivers on
/// this thread may reach the handler's receiver as one ([`EventHandler::together`]):
/// only for a `started` that reports down the handler's own queue, since whatever it
/// set off on another thread could overtake the event held back.
///
/// [`EventHandler::together`]: crate::EventHandler::together
pub(super) fn launch_guarded<T>(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    base_env: Option<Vec<(String, String)>>,
    stops: mpsc::UnboundedReceiver<StopRequest>,
    stdin_commands: InputReceiver,
    together: bool,
    started: impl FnOnce(Result<SpawnResult, SpawnError>) -> T,
) -> T {
    let _span = tracing::info_span!("session", id = %session.id).entered();
    let launched = catch_unwind(AssertUnwindSafe(|| launch(shared, session, base_env, stops, stdin_commands)))
        .unwrap_or_else(|_| {
            Err(SpawnError::Spawn {
                session_id: session.id.to_string(),
                path: shared.claude_path.clone(),
                source: std::io::Error::other("internal error (panic) while starting the agent"),
            })
        })
        .map_err(|e| fail(shared, session, e));
    let (result, running, start_time) = match launched {
        Ok(launched) => launched,
        Err(e) => return started(Err(e)),
    };
    let spawned = SpawnerEvent::SessionSpawned {
        session_id: Arc::clone(&session.id),
        pid: running.pid,
        status: Box::new(result.status.clone()),
    };
    let mut output = None;
    {
        let mut report = Some((spawned, result, started));
        let mut run = || {
            if let Some((spawned, result, started)) = report.take() {
                shared.emit(spawned);
                output = Some(started(Ok(result)));
            }
        };
        // The agent runs: whatever the handler does, it gets its supervisor below.
        if together && catch_unwind(AssertUnwindSafe(|| shared.handler.together(&mut run))).is_err() {
            tracing::error!("the event handler's together panicked");
        }
        // A handler that did not run it (against `together`'s contract) still reports it.
        run();
    }
    let pid = running.pid;
    shared
        .runtime
        .spawn(supervisor::supervise(Arc::clone(shared), Arc::clone(session), running));
    // Off the way to the start's report, on this thread (which may block on the disk),
    // with the start time the spawn learnt.
    supervisor::record_entry(shared, session, pid, start_time);
    output.expect("the start was reported")
}

/// Test hook: `launch` panics when this variable is `launch`, so tests can show a
/// panic in the core reaching the caller as an error (not an abort). Read once per
/// process, so a spawn pays one load for it.
const TEST_PANIC_ENV: &str = "CLAUDE_SESSION_SPAWNER_TEST_PANIC";
static TEST_PANIC_IN_LAUNCH: LazyLock<bool> =
    LazyLock::new(|| std::env::var_os(TEST_PANIC_ENV).is_some_and(|v| v == "launch"));

/// Starting a session: prepare, spawn; the agent, ready for its supervisor task (and
/// its `SessionSpawned`), and its start time when the spawn learnt it.
fn launch(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    base_env: Option<Vec<(String, String)>>,
    stops: mpsc::UnboundedReceiver<StopRequest>,
    stdin_commands: InputReceiver,
) -> Result<(SpawnResult, Running, Option<u64>), SpawnError> {
    let id = &session.id;
    if *TEST_PANIC_IN_LAUNCH {
        panic!("{TEST_PANIC_ENV}=launch: panicking in launch() on purpose");
    }
    let prepared = prepare(shared, id, &session.config, &session.dir, base_env)?;
    if session.record.lock().stop.is_some() {
        return Err(SpawnError::Stopped { session_id: id.to_string() });
    }
    let agent = AgentProcess::spawn(&prepared.command).map_err(|source| SpawnError::Spawn {
        session_id: id.to_string(),
        path: prepared.command.program.clone(),
        source,
    })?;
    let pid = agent.pid;
    tracing::info!(pid, "spawned");
    if let Some(control) = &session.control {
        // Queued first, so the prompt precedes any input sent later.
        let _ = control.stdin.write(prepared.first_input);
    }
    let _runtime = shared.runtime.enter();
    let observer = session.protocol.observer(&session.config, Arc::clone(&session.denied));
    let pumps = Pump::new(Stream::Stdout, agent.stdout, prepared.stdout_log, Some(observer))
        .and_then(|out| Ok((out, Pump::new(Stream::Stderr, agent.stderr, prepared.stderr_log, None)?)));
    let (stdout, stderr) = match pumps {
        Ok(p) => p,
        Err(source) => {
            // Cannot watch it, so it must not run.
            let _ = process::signal_group(pid, libc::SIGKILL);
            let _ = process::reap(pid);
            return Err(SpawnError::Spawn { session_id: id.to_string(), path: prepared.command.program, source });
        }
    };
    let status = {
        let mut r = session.record.lock();
        r.pid = Some(pid);
        r.state = SessionState::Running;
        r.claude_session_id = prepared.conversation_id.clone();
        snapshot_of(session, &r)
    };

    let running = Running {
        pid,
        pidfd: agent.pidfd,
        output_ends: agent.output_ends,
        stops,
        stdout,
        stderr,
        stdin: agent.stdin,
        stdin_commands,
    };
    let result = SpawnResult { session_id: id.to_string(), status, completion: session.completion() };
    Ok((result, running, agent.start_time))
}

/// Records a session that never ran as `failed` (or `terminated`, when it was stopped
/// before its agent started) and reports its end.
fn fail(shared: &Shared, session: &Arc<Session>, error: SpawnError) -> SpawnError {
    tracing::warn!(error = %error, "spawn failed");
    shared.emit(SpawnerEvent::SpawnFailed {
        session_id: Arc::clone(&session.id),
        code: error.code(),
        message: error.to_string(),
    });
    let state = match error {
        SpawnError::Stopped { .. } => SessionState::Terminated,
        _ => SessionState::Failed,
    };
    supervisor::end(shared, session, state, Some(error.to_string()));
    error
}

/// Everything before the process starts: checks, the session directory, CLAUDE.md,
/// the command.
fn prepare(
    shared: &Shared,
    id: &str,
    config: &SessionConfig,
    dir: &Path,
    base_env: Option<Vec<(String, String)>>,
) -> Result<Prepared, SpawnError> {
    let wd = &config.working_directory;
    let wd_error = |source| SpawnError::WorkingDirectory {
        session_id: id.to_owned(),
        path: wd.clone(),
        source,
    };
    match std::fs::metadata(wd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(wd_error(std::io::Error::other("not a directory"))),
        Err(e) => return Err(wd_error(e)),
    }
    let base = match &config.claude_config_path {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|source| SpawnError::ClaudeConfig {
            session_id: id.to_owned(),
            path: path.clone(),
            source,
        })?),
        None => None,
    };
    let dir_error = |source| SpawnError::SessionDirectory {
        session_id: id.to_owned(),
        path: dir.to_owned(),
        source,
    };
    let made = paths::session_dir(wd, id).map_err(dir_error)?;
    debug_assert_eq!(made, dir);
    let claude_md = render_claude_md(id, config, base.as_deref());
    let md_path = dir.join("CLAUDE.md");
    paths::new_private_file(&md_path)
        .and_then(|mut f| f.write_all(claude_md.as_bytes()))
        .map_err(dir_error)?;
    let stdout_log = dir.join("stdout.log");
    let stderr_log = dir.join("stderr.log");

    let prompt = config.prompt.clone().unwrap_or_else(|| render_task_prompt(config));
    let stream_json = shared.options.protocol == crate::protocol::Protocol::StreamJson;
    // Only Claude Code's protocol names the conversation (the text one has none to draw).
    let conversation_id = match &config.resume_session_id {
        Some(resumed) => resumed.clone(),
        None if stream_json => uuid::Uuid::new_v4().to_string(),
        None => String::new(),
    };
    let launch = shared.options.protocol.launch(&LaunchInput {
        config,
        claude_md: &claude_md,
        prompt: &prompt,
        conversation_id: &conversation_id,
    });
    let mut args = launch.args;
    args.extend(shared.options.extra_args.iter().map(OsString::from));
    let mut env: Vec<(OsString, OsString)> = vec![
        ("CI".into(), "true".into()),
        ("CLAUDE_NON_INTERACTIVE".into(), "true".into()),
        ("CLAUDE_CONFIG_PATH".into(), md_path.into_os_string()),
        (SESSION_ID_ENV.into(), id.into()),
    ];
    env.extend(config.environment_variables.iter().map(|(k, v)| (k.into(), v.into())));
    Ok(Prepared {
        command: AgentCommand {
            program: shared.claude_path.clone(),
            args,
            cwd: wd.clone(),
            base_env: inherited(&shared.options.inherit_env, base_env.or_else(|| shared.default_env())),
            env,
            parent_death_signal: launcher::thread_outlives_sessions(),
        },
        first_input: launch.first_input,
        conversation_id: stream_json.then_some(conversation_id),
        stdout_log,
        stderr_log,
    })
}


/// The environment an agent starts from: the daemon's (`given`, else this process's),
/// filtered by the spawner's `inherit_env`. `None`: this process's, whole.
fn inherited(inherit: &InheritEnv, given: Option<Vec<(String, String)>>) -> Option<Vec<(OsString, OsString)>> {
    let vars: Vec<(OsString, OsString)> = match (inherit, given) {
        (InheritEnv::All, None) => return None,
        (_, Some(vars)) => vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        (_, None) => std::env::vars_os().collect(),
    };
    Some(vars.into_iter().filter(|(name, _)| name.to_str().is_some_and(|n| inherit.passes(n))).collect())
}

/// A session registered and not started yet (see [`Spawner::register_session`]).
pub(crate) struct Registered {
    pub(super) session: Arc<Session>,
    pub(super) stops: mpsc::UnboundedReceiver<StopRequest>,
    pub(super) stdin_commands: InputReceiver,
}

impl Registered {
    pub fn id(&self) -> &Arc<str> {
        &self.session.id
    }
}

struct Prepared {
    command: AgentCommand,
    first_input: Vec<u8>,
    /// The Claude Code conversation id, with the stream-json protocol.
    conversation_id: Option<String>,
    stdout_log: PathBuf,
    stderr_log: PathBuf,
}

