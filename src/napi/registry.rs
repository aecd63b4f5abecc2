//! `reapOrphans` for JavaScript: the registry's sweep runs on libuv's thread pool
//! (it waits up to the grace period), and resolves with what it did.

use napi::bindgen_prelude::AsyncTask;
use napi::{Env, Task};
use napi_derive::napi;

use super::spawner::NativeSpawner;
use crate::registry::ReapReport;
use crate::spawner::Spawner;

#[napi(object, js_name = "NativeOrphan", object_from_js = false)]
pub struct JsOrphan {
    pub session_id: String,
    pub pid: u32,
    pub daemon_pid: u32,
    pub working_directory: String,
    /// Its agent still ran, and its process group was stopped.
    pub was_running: bool,
    /// Processes the session had started that were stopped (found by its id).
    pub leftovers: u32,
}

#[napi(object, js_name = "NativeReapReport", object_from_js = false)]
pub struct JsReapReport {
    pub orphans: Vec<JsOrphan>,
    pub owned_by_live_daemons: u32,
    pub invalid: u32,
    pub state_dir: Option<String>,
}

pub struct Reap {
    spawner: Spawner,
}

impl Task for Reap {
    type Output = (ReapReport, Option<String>);
    type JsValue = JsReapReport;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        let dir = self.spawner.options().state_dir.as_ref().map(|d| d.to_string_lossy().into_owned());
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.spawner.reap_orphans()))
            .map_err(|_| napi::Error::from_reason("internal error (panic) while reaping orphans"))?
            .map(|report| (report, dir))
            .map_err(|e| napi::Error::from_reason(format!("cannot read the session state files: {e}")))
    }

    fn resolve(&mut self, _env: Env, (report, dir): Self::Output) -> napi::Result<Self::JsValue> {
        Ok(JsReapReport {
            orphans: report
                .orphans
                .into_iter()
                .map(|o| JsOrphan {
                    session_id: o.session.session_id,
                    pid: o.session.pid,
                    daemon_pid: o.session.daemon_pid,
                    working_directory: o.session.working_directory.to_string_lossy().into_owned(),
                    was_running: o.was_running,
                    leftovers: o.leftovers as u32,
                })
                .collect(),
            owned_by_live_daemons: report.owned_by_live_daemons as u32,
            invalid: report.invalid as u32,
            state_dir: dir,
        })
    }
}

#[napi]
impl NativeSpawner {
    /// Stops what is left of sessions whose daemon died (see `Spawner::reap_orphans`).
    #[napi(catch_unwind)]
    pub fn reap_orphans(&self) -> AsyncTask<Reap> {
        AsyncTask::new(Reap { spawner: self.inner.clone() })
    }
}
