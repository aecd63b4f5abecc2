//! What hosts tell each other through a shared queue, as JSON: a request's payload (a
//! header line, then the session config as the requester encoded it), what the holder
//! says when its session starts (which is also the note the next holder reads), and
//! how the request ended.

use std::time::SystemTime;

use serde_json::{json, Value};

use crate::config::Priority;
use crate::status::SessionStatus;

/// Characters of stdout and stderr a status keeps when it travels to the requesting
/// host: every end goes through the queue's event stream, which keeps thousands. The
/// whole output is in the session directory on the host that ran it.
pub const PORTABLE_OUTPUT: usize = 16 * 1024;

/// A request's payload: `{"v":1,...}` then a newline, then the config's JSON, which
/// the taking host hands to its spawner as it is.
pub fn payload(request_id: &str, priority: Priority, queued_at: SystemTime, origin: &str, config_json: &str) -> String {
    let header = json!({
        "v": 1,
        "requestId": request_id,
        "priority": priority.as_str(),
        "queuedAt": humantime::format_rfc3339_millis(queued_at).to_string(),
        "origin": origin,
    });
    format!("{header}\n{config_json}")
}

/// The config JSON of a payload.
pub fn config_of(payload: &str) -> Result<&str, String> {
    let (header, config) = payload.split_once('\n').ok_or("payload has no header line")?;
    serde_json::from_str::<Value>(header).map_err(|e| format!("payload header is not JSON: {e}"))?;
    Ok(config)
}

/// What the holder says when a session of the request starts (`started`'s detail).
/// The queue keeps it as the request's note, for the host of the next attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    pub session_id: String,
    pub host: String,
    pub attempt: u32,
    pub claude_session_id: Option<String>,
    pub status: Option<SessionStatus>,
    pub resumed: bool,
    pub note: Option<String>,
    /// The session before it on this host (an in-place retry), and how it ended.
    pub previous: Option<(String, SessionStatus)>,
    /// A note left by a host that handed the request over unfinished (draining): the
    /// next host's attempt is this one again.
    pub handed_over: bool,
}

impl Started {
    pub fn to_json(&self) -> String {
        let mut v = json!({
            "sessionId": self.session_id,
            "host": self.host,
            "attempt": self.attempt,
            "claudeSessionId": self.claude_session_id,
            "status": self.status.as_ref().map(SessionStatus::to_json),
            "resumed": self.resumed,
            "note": self.note,
            "previous": self.previous.as_ref().map(|(id, s)| json!({"sessionId": id, "status": s.to_json()})),
        });
        if self.handed_over {
            v["handedOver"] = json!(true);
        }
        v.to_string()
    }

    /// A detail or note another host wrote; `None` when it is not this package's.
    pub fn from_json(text: &str) -> Option<Self> {
        let v: Value = serde_json::from_str(text).ok()?;
        let text = |v: &Value, k: &str| v[k].as_str().map(str::to_owned);
        Some(Self {
            session_id: text(&v, "sessionId").unwrap_or_default(),
            host: text(&v, "host")?,
            attempt: u32::try_from(v["attempt"].as_u64()?).ok()?,
            claude_session_id: text(&v, "claudeSessionId"),
            status: SessionStatus::from_json(&v["status"]),
            resumed: v["resumed"].as_bool().unwrap_or(false),
            note: text(&v, "note"),
            previous: v["previous"].is_object().then(|| {
                let p = &v["previous"];
                Some((text(p, "sessionId")?, SessionStatus::from_json(&p["status"])?))
            }).flatten(),
            handed_over: v["handedOver"].as_bool().unwrap_or(false),
        })
    }
}

/// How a request ended, as its holder reports it (`completed`'s and `failed`'s detail).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ended {
    pub session_id: Option<String>,
    pub status: Option<SessionStatus>,
    pub host: Option<String>,
    pub message: Option<String>,
    pub code: Option<String>,
}

impl Ended {
    pub fn to_json(&self) -> String {
        let mut v = json!({});
        let mut set = |k: &str, x: Value| {
            if !x.is_null() {
                v[k] = x;
            }
        };
        set("sessionId", json!(self.session_id));
        set("status", json!(self.status.as_ref().map(SessionStatus::to_json)));
        set("host", json!(self.host));
        set("message", json!(self.message));
        set("code", json!(self.code));
        v.to_string()
    }

    /// A detail another host wrote: text that is not JSON is the failure's message.
    pub fn from_json(text: &str) -> Option<Self> {
        let v: Value = match serde_json::from_str(text) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return None,
            Err(_) => return Some(Self { message: Some(text.to_owned()), ..Self::default() }),
        };
        let text = |k: &str| v[k].as_str().map(str::to_owned);
        Some(Self {
            session_id: text("sessionId"),
            status: SessionStatus::from_json(&v["status"]),
            host: text("host"),
            message: text("message"),
            code: text("code"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_carries_the_config_as_given() {
        let p = payload("r1", Priority::High, SystemTime::UNIX_EPOCH, "h1", r#"{"a":1}"#);
        assert_eq!(config_of(&p), Ok(r#"{"a":1}"#));
        assert!(p.starts_with(r#"{"v":1,"requestId":"r1","priority":"high","#));
        assert!(config_of("no header").is_err());
    }

    #[test]
    fn details_round_trip_and_foreign_text_is_recognised() {
        let started = Started {
            session_id: "s".into(),
            host: "h".into(),
            attempt: 2,
            claude_session_id: Some("c".into()),
            status: None,
            resumed: true,
            note: Some("resumed".into()),
            previous: None,
            handed_over: true,
        };
        assert_eq!(Started::from_json(&started.to_json()), Some(started));
        assert_eq!(Started::from_json("{}"), None);
        let ended = Ended { message: Some("boom".into()), code: Some("ERR_X".into()), ..Ended::default() };
        assert_eq!(Ended::from_json(&ended.to_json()), Some(ended));
        assert_eq!(Ended::from_json("plain words").unwrap().message.as_deref(), Some("plain words"));
        assert_eq!(Ended::from_json("[1]"), None);
    }
}
