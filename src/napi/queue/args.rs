//! The queue's arguments, checked here too, so that a wrong one names itself whoever
//! calls: a `TypeError`-like error with `code` `ERR_INVALID_ARG` and the `field`.

use std::time::Duration;

use napi::bindgen_prelude::{FromNapiValue, Unknown};
use napi::{Env, JsValue, Result, ValueType};

use crate::config::Priority;
use crate::napi::{thrown, thrown_as};
use crate::pool::queue::QueueError;

pub(super) fn arg_error(env: &Env, name: &str, message: String) -> napi::Error {
    thrown_as(env, true, "ERR_INVALID_ARG", format!("{name} {message}"), &[("field", name)])
}

pub(super) fn describe(value: &Unknown<'_>) -> String {
    match value.get_type() {
        Ok(ValueType::Undefined) => "undefined".into(),
        Ok(ValueType::Null) => "null".into(),
        Ok(t) => format!("a value of type {t}"),
        Err(_) => "an unreadable value".into(),
    }
}

pub(super) fn string_arg(env: &Env, value: Unknown<'_>, name: &str) -> Result<String> {
    if value.get_type()? != ValueType::String {
        return Err(arg_error(env, name, format!("must be a string, got {}", describe(&value))));
    }
    // SAFETY: a string of this environment, on its thread.
    unsafe { String::from_napi_value(env.raw(), value.raw()) }
}

pub(super) fn id_arg(env: &Env, value: Unknown<'_>, name: &str) -> Result<String> {
    let text = string_arg(env, value, name)?;
    if text.is_empty() {
        return Err(arg_error(env, name, "must not be empty".into()));
    }
    Ok(text)
}

pub(super) fn number_arg(env: &Env, value: Unknown<'_>, name: &str) -> Result<f64> {
    if value.get_type()? != ValueType::Number {
        return Err(arg_error(env, name, format!("must be a number, got {}", describe(&value))));
    }
    // SAFETY: as in `string_arg`.
    let n = unsafe { f64::from_napi_value(env.raw(), value.raw())? };
    if !n.is_finite() {
        return Err(arg_error(env, name, format!("must be finite, got {n}")));
    }
    Ok(n)
}

/// A lease of `ms` milliseconds: positive, as a zero lease would be born lapsed.
pub(super) fn lease_arg(env: &Env, value: Unknown<'_>, name: &str) -> Result<Duration> {
    let ms = number_arg(env, value, name)?;
    if ms <= 0.0 || ms > u32::MAX as f64 {
        return Err(arg_error(env, name, format!("must be a positive number of milliseconds, got {ms}")));
    }
    Ok(Duration::from_secs_f64(ms / 1000.0))
}

/// A whole number from `min` to `u32::MAX`.
pub(super) fn whole_arg(env: &Env, value: Unknown<'_>, name: &str, min: u32) -> Result<u32> {
    let n = number_arg(env, value, name)?;
    if n.fract() != 0.0 || n < f64::from(min) || n > f64::from(u32::MAX) {
        return Err(arg_error(env, name, format!("must be a whole number from {min}, got {n}")));
    }
    Ok(n as u32)
}

pub(super) fn priority_arg(env: &Env, value: Unknown<'_>, name: &str) -> Result<Priority> {
    let text = string_arg(env, value, name)?;
    text.parse()
        .map_err(|()| arg_error(env, name, format!("must be one of 'critical', 'high', 'medium', 'low', got {text:?}")))
}

/// An optional argument: `None` when left out, `undefined` or `null`.
pub(super) fn given(value: Option<Unknown<'_>>) -> Result<Option<Unknown<'_>>> {
    match value {
        Some(v) if !matches!(v.get_type()?, ValueType::Undefined | ValueType::Null) => Ok(Some(v)),
        _ => Ok(None),
    }
}

pub(super) fn optional_string_arg(env: &Env, value: Option<Unknown<'_>>, name: &str) -> Result<Option<String>> {
    given(value)?.map(|v| string_arg(env, v, name)).transpose()
}

pub(super) fn queue_error(env: &Env, e: QueueError) -> napi::Error {
    thrown(env, e.code(), e.to_string(), &[])
}

#[cfg(feature = "redis")]
pub(super) fn redis_options(env: &Env, url: String, name: String, json: Option<String>) -> Result<crate::pool::queue::RedisQueueOptions> {
    let mut options = crate::pool::queue::RedisQueueOptions::new(url, name);
    let Some(json) = json else { return Ok(options) };
    let value: serde_json::Value = serde_json::from_str(&json)
        .map_err(|e| arg_error(env, "options", format!("is not valid JSON: {e}")))?;
    let Some(fields) = value.as_object() else {
        return Err(arg_error(env, "options", "must be an object".into()));
    };
    for (key, value) in fields {
        let field = format!("options.{key}");
        let target = match key.as_str() {
            "connectTimeoutMs" => &mut options.connect_timeout,
            "responseTimeoutMs" => &mut options.response_timeout,
            _ => return Err(arg_error(env, &field, "is not an option (connectTimeoutMs, responseTimeoutMs)".into())),
        };
        match value.as_f64() {
            Some(ms) if ms > 0.0 && ms <= u32::MAX as f64 => *target = Duration::from_secs_f64(ms / 1000.0),
            _ => return Err(arg_error(env, &field, format!("must be a positive number of milliseconds, got {value}"))),
        }
    }
    Ok(options)
}
