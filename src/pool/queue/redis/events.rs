//! The reader of a queue's events stream: one per queue handle, on a connection of its
//! own, forwarding each event to the handle's subscribers and reading on from the last
//! one it saw after a reconnection; and the decoding of the stream's replies.

use super::*;

/// Reads the events stream for as long as the handle lives and forwards each event
/// to the handle's subscribers.
pub(super) struct EventsReader {
    pub(super) client: Client,
    pub(super) key: String,
    /// The id of the last entry seen: reading resumes after it.
    pub(super) after: String,
    pub(super) events: broadcast::Sender<QueueEvent>,
    pub(super) url: String,
    pub(super) connect_timeout: Duration,
    pub(super) reconnect_delay: Duration,
}

impl EventsReader {
    pub(super) async fn run(mut self, ready: oneshot::Sender<Result<(), QueueError>>) {
        let mut ready = Some(ready);
        let mut delay = self.reconnect_delay;
        loop {
            // A connection of its own: a blocking read would hold up the commands
            // multiplexed on a shared one.
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(self.connect_timeout)
                .set_response_timeout(EVENTS_BLOCK + self.connect_timeout);
            match self.client.get_multiplexed_async_connection_with_config(&config).await {
                Ok(mut conn) => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Ok(()));
                    }
                    let _: Result<(), _> =
                        ::redis::cmd("CLIENT").arg("SETNAME").arg("css-events").query_async(&mut conn).await;
                    delay = self.reconnect_delay;
                    let reason = self.read(&mut conn).await;
                    tracing::warn!(url = %self.url, key = %self.key, %reason, "lost the queue events connection; reading on after reconnecting");
                }
                Err(e) => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Err(QueueError::Unavailable { url: self.url.clone(), reason: e.to_string() }));
                        return;
                    }
                    tracing::warn!(url = %self.url, key = %self.key, error = %e, "cannot reach Redis for queue events; retrying");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RECONNECT_MAX_DELAY);
        }
    }

    /// Reads until the connection fails; returns why.
    async fn read(&mut self, conn: &mut ::redis::aio::MultiplexedConnection) -> String {
        loop {
            let reply: Value = match ::redis::cmd("XREAD")
                .arg("COUNT")
                .arg(100)
                .arg("BLOCK")
                .arg(EVENTS_BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.key)
                .arg(&self.after)
                .query_async(conn)
                .await
            {
                Ok(reply) => reply,
                Err(e) => return e.to_string(),
            };
            for (id, text) in stream_entries(&reply) {
                match text.as_deref().map_or(Err("an entry without its event".to_owned()), decode_event) {
                    Ok(event) => {
                        let _ = self.events.send(event);
                    }
                    Err(reason) => tracing::warn!(url = %self.url, key = %self.key, %reason, "ignoring a malformed queue event"),
                }
                self.after = id;
            }
        }
    }
}

/// The entries of an `XREAD` reply for one stream, as (id, field `e`); none when the
/// read timed out (nil) or the reply is not one.
pub(super) fn stream_entries(reply: &Value) -> Vec<(String, Option<String>)> {
    let Value::Array(streams) = reply else { return Vec::new() };
    let mut out = Vec::new();
    for stream in streams {
        let Value::Array(pair) = stream else { continue };
        let Some(Value::Array(entries)) = pair.get(1) else { continue };
        for entry in entries {
            let Value::Array(parts) = entry else { continue };
            let (Some(id), Some(Value::Array(fields))) = (parts.first().and_then(bulk_text), parts.get(1)) else {
                continue;
            };
            let event = fields.chunks(2).find(|kv| kv.first().and_then(bulk_text).as_deref() == Some("e"));
            out.push((id, event.and_then(|kv| kv.get(1)).and_then(bulk_text)));
        }
    }
    out
}

/// The id of the only entry of an `XREVRANGE ... COUNT 1` reply.
pub(super) fn newest_entry_id(reply: &Value) -> Option<String> {
    let Value::Array(entries) = reply else { return None };
    let Some(Value::Array(parts)) = entries.first() else { return None };
    parts.first().and_then(bulk_text)
}

pub(super) fn bulk_text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

/// An event as the scripts publish it (`cjson`).
pub(super) fn decode_event(text: &str) -> Result<QueueEvent, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("{e}: {text:?}"))?;
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    let need = |name: &str| field(name).ok_or_else(|| format!("no {name} in {text:?}"));
    let attempt = || {
        value
            .get("attempt")
            .and_then(|v| v.as_u64())
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("no attempt in {text:?}"))
    };
    let id = need("id")?;
    match need("event")?.as_str() {
        "queued" => {
            let name = need("priority")?;
            let priority = name.parse().map_err(|()| format!("unknown priority {name:?} in {text:?}"))?;
            Ok(QueueEvent::Queued { id, priority })
        }
        "allocated" => Ok(QueueEvent::Allocated { id, host: need("host")?, attempt: attempt()? }),
        "started" => {
            Ok(QueueEvent::Started { id, host: need("host")?, attempt: attempt()?, detail: need("detail")? })
        }
        "completed" => Ok(QueueEvent::Completed { id, host: need("host")?, detail: need("detail")? }),
        "failed" => Ok(QueueEvent::Failed { id, host: field("host"), detail: need("detail")? }),
        "cancelled" => Ok(QueueEvent::Cancelled { id }),
        "requeued" => Ok(QueueEvent::Requeued { id, attempt: attempt()? }),
        other => Err(format!("unknown event {other:?}")),
    }
}

/// Integers as Redis may format them: `123`, or `1.23e+2` when a script stored a
/// Lua number. Only exact integers below 2^53 are accepted.
pub(super) fn parse_int(text: &str) -> Option<u64> {
    text.parse::<u64>().ok().or_else(|| {
        let f = text.parse::<f64>().ok()?;
        (f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < 9_007_199_254_740_992.0).then_some(f as u64)
    })
}
