//! Core values as JavaScript objects in the contract's shapes (dates as epoch milliseconds).

use std::time::{SystemTime, UNIX_EPOCH};

use napi::bindgen_prelude::ToNapiValue;
use napi::sys;
use napi_derive::napi;

use crate::status::{CrashReport, MetricsSummary, SessionMetrics, SessionStatus, TokenUsage};

/// Milliseconds since the epoch; the JavaScript side makes the `Date` (in the caller's
/// realm, which a native `Date` would not be under a `vm` sandbox such as Jest's).
pub(crate) fn millis(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as f64,
        Err(e) => -(e.duration().as_millis() as f64),
    }
}

/// A count for JavaScript (saturating at `u32::MAX`).
pub(crate) fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A time JavaScript gave as epoch milliseconds; now when it is not a time.
pub(crate) fn time_from_millis(ms: f64) -> SystemTime {
    if ms.is_finite() && ms >= 0.0 {
        UNIX_EPOCH + std::time::Duration::from_millis(ms as u64)
    } else {
        SystemTime::now()
    }
}

/// Text for JavaScript (a `String`, or output's shared [`Text`](crate::output::Text)).
/// Pure ASCII (the usual output) is handed over as Latin-1, which V8 copies without
/// decoding.
pub struct JsText<T = String>(pub T);

impl<T> napi::bindgen_prelude::TypeName for JsText<T> {
    fn type_name() -> &'static str {
        "string"
    }
    fn value_type() -> napi::ValueType {
        napi::ValueType::String
    }
}

impl<T: AsRef<str>> ToNapiValue for JsText<T> {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        let text = val.0.as_ref();
        let mut out = std::ptr::null_mut();
        // SAFETY: a live environment (the caller's) and a pointer and length of `text`.
        let status = unsafe {
            if text.is_ascii() {
                sys::napi_create_string_latin1(env, text.as_ptr().cast(), text.len() as isize, &mut out)
            } else {
                sys::napi_create_string_utf8(env, text.as_ptr().cast(), text.len() as isize, &mut out)
            }
        };
        napi::check_status!(status, "creating a string failed")?;
        Ok(out)
    }
}

/// A value already created in the current scope.
pub struct RawValue(pub sys::napi_value);

impl ToNapiValue for RawValue {
    unsafe fn to_napi_value(_env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        Ok(val.0)
    }
}

#[napi(object, js_name = "NativeSessionMetrics", object_from_js = false)]
pub struct JsSessionMetrics {
    pub commands_executed: f64,
    pub files_modified: f64,
    pub approval_prompts: f64,
    pub escalations: f64,
    pub errors: f64,
}

impl From<SessionMetrics> for JsSessionMetrics {
    fn from(m: SessionMetrics) -> Self {
        Self {
            commands_executed: m.commands_executed as f64,
            files_modified: m.files_modified as f64,
            approval_prompts: m.approval_prompts as f64,
            escalations: m.escalations as f64,
            errors: m.errors as f64,
        }
    }
}

#[napi(object, js_name = "NativeTokenUsage", object_from_js = false)]
pub struct JsTokenUsage {
    pub input: f64,
    pub output: f64,
    pub total: f64,
}

impl From<TokenUsage> for JsTokenUsage {
    fn from(t: TokenUsage) -> Self {
        Self {
            input: t.input as f64,
            output: t.output as f64,
            total: t.total as f64,
        }
    }
}

#[napi(object, js_name = "NativeSessionStatus", object_from_js = false)]
pub struct JsSessionStatus {
    pub session_id: String,
    pub state: String,
    pub pid: Option<u32>,
    pub start_time: f64,
    pub end_time: Option<f64>,
    pub execution_time: Option<f64>,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    pub error_message: Option<String>,
    pub stdout: String,
    pub stderr: String,
    pub token_usage: Option<JsTokenUsage>,
    pub metrics: JsSessionMetrics,
    pub claude_session_id: Option<String>,
    pub cost_usd: Option<f64>,
    pub modified_files: Vec<String>,
    pub violations: Vec<JsViolation>,
    /// With a shared queue: the host that ran it; the tails cut to travel.
    pub host: Option<String>,
    pub stdout_truncated: Option<bool>,
    pub stderr_truncated: Option<bool>,
    pub stopped_escapees: Option<Vec<u32>>,
}

/// A status's policy violation; `input` travels as JSON text.
#[napi(object, js_name = "NativeViolation", object_from_js = false)]
pub struct JsViolation {
    pub timestamp: f64,
    pub tool_name: String,
    pub input_json: String,
    pub rule: String,
    pub detail: String,
}

impl From<crate::status::PolicyViolation> for JsViolation {
    fn from(v: crate::status::PolicyViolation) -> Self {
        Self {
            timestamp: millis(v.timestamp),
            tool_name: v.tool_name,
            input_json: v.input.to_string(),
            rule: v.rule,
            detail: v.detail,
        }
    }
}

impl From<SessionStatus> for JsSessionStatus {
    fn from(s: SessionStatus) -> Self {
        Self {
            session_id: s.session_id,
            state: s.state.as_str().to_owned(),
            pid: s.pid,
            start_time: millis(s.start_time),
            end_time: s.end_time.map(millis),
            execution_time: s.execution_time_ms.map(|ms| ms as f64),
            exit_code: s.exit_code,
            signal: s.signal,
            error_message: s.error_message,
            stdout: s.stdout,
            stderr: s.stderr,
            token_usage: s.token_usage.map(Into::into),
            metrics: s.metrics.into(),
            claude_session_id: s.claude_session_id,
            cost_usd: s.cost_usd,
            modified_files: s.modified_files,
            violations: s.violations.into_iter().map(Into::into).collect(),
            host: s.host,
            stdout_truncated: s.stdout_truncated.then_some(true),
            stderr_truncated: s.stderr_truncated.then_some(true),
            stopped_escapees: (!s.stopped_escapees.is_empty()).then_some(s.stopped_escapees),
        }
    }
}

#[napi(object, js_name = "NativeCrashReport", object_from_js = false)]
pub struct JsCrashReport {
    pub session_id: String,
    pub timestamp: f64,
    pub signal: Option<String>,
    pub exit_code: Option<i32>,
    pub last_state: String,
    pub last_output: String,
    pub stack_trace: Option<String>,
}

impl From<CrashReport> for JsCrashReport {
    fn from(c: CrashReport) -> Self {
        Self {
            session_id: c.session_id,
            timestamp: millis(c.timestamp),
            signal: c.signal,
            exit_code: c.exit_code,
            last_state: c.last_state,
            last_output: c.last_output,
            stack_trace: c.stack_trace,
        }
    }
}

#[napi(object, js_name = "NativeMetricsSummary", object_from_js = false)]
pub struct JsMetricsSummary {
    pub total_sessions: f64,
    pub active_sessions: f64,
    pub completed_sessions: f64,
    pub failed_sessions: f64,
    pub crashed_sessions: f64,
    pub avg_execution_time: f64,
    pub total_tokens_used: f64,
}

impl From<MetricsSummary> for JsMetricsSummary {
    fn from(m: MetricsSummary) -> Self {
        Self {
            total_sessions: m.total_sessions as f64,
            active_sessions: m.active_sessions as f64,
            completed_sessions: m.completed_sessions as f64,
            failed_sessions: m.failed_sessions as f64,
            crashed_sessions: m.crashed_sessions as f64,
            avg_execution_time: m.avg_execution_time_ms,
            total_tokens_used: m.total_tokens_used as f64,
        }
    }
}
