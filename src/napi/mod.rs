//! The Node-API binding (feature `napi`). It converts types and forwards events, and
//! nothing else: the behaviour lives in the core. The JavaScript classes in `lib/`
//! wrap [`spawner::NativeSpawner`] in an `EventEmitter`.

mod approvals;
mod convert;
mod events;
mod pipe;
mod promise;
mod pool;
mod queue;
mod recovery;
mod registry;
mod shared;
mod spawner;

use napi::bindgen_prelude::Unknown;
use napi::{Env, JsError, JsTypeError, Status};
use napi_derive::module_init;
use std::sync::OnceLock;

/// Environment variable that turns on the core's `tracing` output (to stderr), as an
/// `EnvFilter` directive: `info`, `debug`, `claude_session_spawner=trace`, ...
const LOG_ENV: &str = "CLAUDE_SESSION_SPAWNER_LOG";

/// Worker threads of the runtime that supervises sessions (default 1).
const THREADS_ENV: &str = "CLAUDE_SESSION_SPAWNER_THREADS";

/// The runtime that supervises sessions, the process's own: not napi-rs's, which is
/// shut down with the last Node environment (a `worker_thread` that ends), while the
/// supervisors must live on to reap the agents the environment's cleanup hook killed.
static RUNTIME: OnceLock<std::io::Result<tokio::runtime::Runtime>> = OnceLock::new();

/// A handle to the supervising runtime, or why it could not be built.
pub(crate) fn runtime(env: &Env) -> napi::Result<tokio::runtime::Handle> {
    match RUNTIME.get() {
        Some(Ok(runtime)) => Ok(runtime.handle().clone()),
        Some(Err(e)) => Err(native_error(env, format!("cannot start the session runtime: {e}"))),
        None => Err(native_error(env, "the session runtime was not started".into())),
    }
}

#[module_init]
fn init() {
    // Supervising sessions is waiting on pipes and pids, with a little copying in
    // between: one worker keeps up with hundreds of sessions, and more workers on a
    // small machine mostly wake each other up, competing with the agents for cores.
    let threads = std::env::var(THREADS_ENV)
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
        .filter(|&t| t > 0)
        .unwrap_or(1);
    let _ = RUNTIME.set(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("session-supervisor")
            .enable_all()
            .build(),
    );
    if let Ok(filter) = std::env::var(LOG_ENV) {
        if filter.is_empty() {
            return;
        }
        let filter = tracing_subscriber::EnvFilter::try_new(&filter)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // Another copy of the addon (a worker thread) may have installed one already.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .try_init();
    }
}

/// The value of an environment variable as this process's real environment has it
/// (which is not what JavaScript's `process.env` shows under a sandbox).
#[napi_derive::napi]
#[cfg_attr(test, allow(dead_code))]
pub fn real_env_var(name: String) -> Option<String> {
    std::env::var(name).ok()
}

/// `release` or `debug`: how this addon was compiled, so the benchmarks can refuse a
/// debug build (`npm run build:debug` makes one; `npm run build` and `build:bench` do not).
#[napi_derive::napi]
#[cfg_attr(test, allow(dead_code))]
pub fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// The error code that becomes `error.code` in JavaScript.
struct ErrorCode(&'static str);

impl AsRef<str> for ErrorCode {
    fn as_ref(&self) -> &str {
        self.0
    }
}

/// A JavaScript error object carrying `code` (and `field` or `sessionId` when known),
/// thrown as it is. Config errors are `TypeError`s.
pub(crate) fn thrown(env: &Env, code: &'static str, message: String, extra: &[(&str, &str)]) -> napi::Error {
    thrown_as(env, code == "ERR_INVALID_CONFIG", code, message, extra)
}

/// As [`thrown`], a `TypeError` when `type_error`.
pub(crate) fn thrown_as(
    env: &Env,
    type_error: bool,
    code: &'static str,
    message: String,
    extra: &[(&str, &str)],
) -> napi::Error {
    let raw = env.raw();
    let error = napi::Error::new(ErrorCode(code), message.clone());
    // SAFETY: called on the JavaScript thread with its environment.
    let value = unsafe {
        if type_error {
            JsTypeError::from(error).into_value(raw)
        } else {
            JsError::from(error).into_value(raw)
        }
    };
    if value.is_null() {
        return napi::Error::new(Status::GenericFailure, message);
    }
    for (key, val) in extra {
        let key = std::ffi::CString::new(*key).expect("static key");
        let mut js_val = std::ptr::null_mut();
        // SAFETY: as above; failures leave the property out.
        unsafe {
            if napi::sys::napi_create_string_utf8(raw, val.as_ptr().cast(), val.len() as isize, &mut js_val)
                == napi::sys::Status::napi_ok
            {
                napi::sys::napi_set_named_property(raw, value, key.as_ptr(), js_val);
            }
        }
    }
    // SAFETY: `value` is a live JavaScript value of this environment.
    napi::Error::from(unsafe { Unknown::from_raw_unchecked(raw, value) })
}

fn js_error(env: &Env, e: crate::SpawnError) -> napi::Error {
    let fields = ErrorFields::from(e);
    let extra: Vec<(&str, &str)> = [("sessionId", &fields.session_id), ("field", &fields.field)]
        .into_iter()
        .filter_map(|(key, value)| Some((key, value.as_deref()?)))
        .collect();
    thrown(env, fields.code, fields.message, &extra)
}

/// What JavaScript's error for a [`SpawnError`](crate::SpawnError) carries: one rule
/// for the errors thrown here and those `session-started` carries (which
/// `lib/convert.js` makes into errors).
pub(crate) struct ErrorFields {
    pub code: &'static str,
    pub message: String,
    pub session_id: Option<String>,
    pub field: Option<String>,
}

impl From<crate::SpawnError> for ErrorFields {
    fn from(e: crate::SpawnError) -> Self {
        let (code, session_id) = (e.code(), e.session_id().map(str::to_owned));
        match e {
            crate::SpawnError::InvalidConfig(c) => Self { code, message: c.message, session_id, field: Some(c.field) },
            other => Self { code, message: other.to_string(), session_id, field: None },
        }
    }
}

/// An error with `code`, and the `sessionId` it concerns when there is one.
pub(crate) fn thrown_for_session(env: &Env, code: &'static str, message: String, session_id: Option<&str>) -> napi::Error {
    let extra: Vec<(&str, &str)> = session_id.map(|s| ("sessionId", s)).into_iter().collect();
    thrown(env, code, message, &extra)
}

pub(crate) fn config_error(env: &Env, e: crate::ConfigError) -> napi::Error {
    thrown(env, "ERR_INVALID_CONFIG", e.message, &[("field", &e.field)])
}

fn native_error(env: &Env, message: String) -> napi::Error {
    thrown(env, "ERR_NATIVE", message, &[])
}
