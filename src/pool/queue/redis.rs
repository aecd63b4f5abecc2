//! The [`RequestQueue`] in Redis, shared by every host that opens the same URL and
//! queue name.
//!
//! Each operation is one Lua script (`scripts/`, sent as EVALSHA), so Redis runs it
//! whole or not at all and no two hosts interleave inside one: two hosts cannot both
//! take a request, and the lease check and the change it guards cannot be split.
//! Lease expiry reads Redis's `TIME`. Every key of a queue carries the hash tag
//! `{<name>}`, so a queue lives in one cluster slot. Events are appended by the
//! scripts to the stream `css:{<name>}:events` (the newest [`EVENTS_KEPT`] or so are
//! kept) and read here by one blocking reader per queue handle, on a connection of
//! its own. When that connection drops, the reader connects again and reads on from
//! the last event it saw, so a host misses nothing published while it was cut off
//! (unless more than the kept events went by). The scripts that end a request also
//! keep its terminal event (hash `css:{<name>}:results`, ordered by the time it ended
//! in the sorted set `css:{<name>}:ended`) for [`RequestQueue::lookup`], forgetting
//! outdated ones a bounded number at a time.
//!
//! Commands go through the crate's `ConnectionManager`: a lost connection fails the
//! commands in flight (with [`QueueError::Unavailable`], within the response
//! timeout) and is re-established, with backoff, by the next command.
//!
//! The events reader is in `events`, the scripts' loading in `lua`.

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError, Script, ScriptInvocation, Value};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

use super::*;

mod events;
mod lua;
use events::{decode_event, newest_entry_id, parse_int, EventsReader};
use lua::{KEY_NAMES, SCRIPTS};

/// How to reach a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisQueueOptions {
    /// `redis://host:port/db` (credentials in it are never shown in errors).
    pub url: String,
    /// The queue's name; hosts with the same name share the queue.
    pub name: String,
    /// For each connection attempt.
    pub connect_timeout: Duration,
    /// For each command.
    pub response_timeout: Duration,
    /// How long the events reader waits before connecting again after it lost its
    /// connection (doubling up to 5 s while it keeps failing).
    pub reconnect_delay: Duration,
    /// How long, by Redis's clock, this handle's operations keep how a request ended for
    /// [`RequestQueue::lookup`] ([`RESULTS_KEPT_MS`] by default; at least 1 ms). Hosts of
    /// one queue should agree: each prunes by its own setting.
    pub results_kept: Duration,
    /// How many ended requests' results are kept at most, the newest ([`RESULTS_LIMIT`]
    /// by default).
    pub results_limit: usize,
}

impl RedisQueueOptions {
    pub fn new(url: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            name: name.into(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            reconnect_delay: Duration::from_millis(100),
            results_kept: Duration::from_millis(RESULTS_KEPT_MS),
            results_limit: RESULTS_LIMIT,
        }
    }
}

/// Attempts after the first, per reconnection, before the commands waiting on it fail:
/// few, so that requests made while Redis is down reject within seconds.
const RECONNECT_RETRIES: usize = 1;
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(5);

/// About how many events the stream keeps for hosts that were cut off.
pub const EVENTS_KEPT: u32 = 10_000;

/// How long one blocking read of the events stream waits for something new.
const EVENTS_BLOCK: Duration = Duration::from_secs(1);

/// One host's handle on a shared queue.
pub struct RedisQueue {
    /// Without credentials, for errors.
    url: String,
    keys: Vec<String>,
    /// The retention of results, as the scripts' second and third arguments.
    results_kept_ms: u64,
    results_limit: usize,
    conn: ConnectionManager,
    events: broadcast::Sender<QueueEvent>,
    listener: JoinHandle<()>,
}

impl Drop for RedisQueue {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl RedisQueue {
    /// Connects, and starts reading the queue's events from the newest one there is,
    /// so that [`RequestQueue::subscribe`] misses nothing published after this.
    pub async fn connect(options: RedisQueueOptions) -> Result<Self, QueueError> {
        let url = redact(&options.url);
        if options.name.is_empty() || options.name.contains(['{', '}']) {
            return Err(QueueError::Invalid(format!("queue name {:?} must be non-empty, without braces", options.name)));
        }
        let client = Client::open(options.url.as_str())
            .map_err(|e| QueueError::Invalid(format!("redis URL {url}: {e}")))?;
        let unavailable = |reason: String| QueueError::Unavailable { url: url.clone(), reason };
        // One plain attempt first: its error is the real one (refused, timed out), and
        // it comes without the manager's retries.
        let probe = AsyncConnectionConfig::new()
            .set_connection_timeout(options.connect_timeout)
            .set_response_timeout(options.response_timeout);
        let mut first = client
            .get_multiplexed_async_connection_with_config(&probe)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        // A server that accepts connections but does not answer is unavailable too.
        ::redis::cmd("PING").query_async::<String>(&mut first).await.map_err(|e| unavailable(e.to_string()))?;
        let prefix = format!("css:{{{}}}:", options.name);
        let events_key = format!("{prefix}events");
        let newest: Value = ::redis::cmd("XREVRANGE")
            .arg(&events_key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut first)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let after = newest_entry_id(&newest).unwrap_or_else(|| "0-0".to_owned());
        drop(first);

        // redis 0.32 multiplies the delay between reconnection attempts (from 1 s) by
        // the "factor", up to the maximum delay.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(options.connect_timeout)
            .set_response_timeout(options.response_timeout)
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_factor(2)
            .set_max_delay(2000);
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| unavailable(e.to_string()))?;

        let keys = KEY_NAMES.iter().map(|k| format!("{prefix}{k}")).collect();
        let (events, _) = broadcast::channel(1024);
        let (ready, started) = oneshot::channel();
        let reader = EventsReader {
            client,
            key: events_key,
            after,
            events: events.clone(),
            url: url.clone(),
            connect_timeout: options.connect_timeout,
            reconnect_delay: options.reconnect_delay,
        };
        let listener = tokio::spawn(reader.run(ready));
        match started.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(unavailable("the events reader ended".into())),
        }
        let (results_kept_ms, results_limit) = (lease_ms(options.results_kept), options.results_limit);
        Ok(Self { url, keys, results_kept_ms, results_limit, conn, events, listener })
    }

    /// The invocation of `script` with the queue's keys and the three arguments every
    /// script gets (`scripts/common.lua`); the caller adds the script's own.
    fn invocation<'s>(&self, script: &'s Script) -> ScriptInvocation<'s> {
        let mut invocation = script.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        invocation.arg(EVENTS_KEPT).arg(self.results_kept_ms).arg(self.results_limit);
        invocation
    }

    async fn run(&self, invocation: &ScriptInvocation<'_>) -> Result<Value, QueueError> {
        let mut conn = self.conn.clone();
        invocation.invoke_async(&mut conn).await.map_err(|e| self.error(e))
    }

    fn error(&self, e: RedisError) -> QueueError {
        let unreachable = e.is_io_error()
            || e.is_timeout()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.kind() == ErrorKind::BusyLoadingError;
        let reason = e.to_string();
        if unreachable {
            QueueError::Unavailable { url: self.url.clone(), reason }
        } else {
            QueueError::Refused { url: self.url.clone(), reason }
        }
    }

    fn malformed(&self, reason: impl Into<String>) -> QueueError {
        QueueError::Malformed { url: self.url.clone(), reason: reason.into() }
    }

    fn array(&self, value: Value, what: &str) -> Result<Vec<Value>, QueueError> {
        match value {
            Value::Array(items) => Ok(items),
            other => Err(self.malformed(format!("{what}: expected an array, got {other:?}"))),
        }
    }

    /// Exactly `N` items.
    fn tuple<const N: usize>(&self, value: Value, what: &str) -> Result<[Value; N], QueueError> {
        let items = self.array(value, what)?;
        let n = items.len();
        items.try_into().map_err(|_| self.malformed(format!("{what}: expected {N} items, got {n}")))
    }

    fn text(&self, value: &Value, what: &str) -> Result<String, QueueError> {
        match value {
            Value::BulkString(bytes) => {
                String::from_utf8(bytes.clone()).map_err(|_| self.malformed(format!("{what}: not UTF-8")))
            }
            Value::SimpleString(s) => Ok(s.clone()),
            other => Err(self.malformed(format!("{what}: expected a string, got {other:?}"))),
        }
    }

    fn int(&self, value: &Value, what: &str) -> Result<u64, QueueError> {
        let bad = || self.malformed(format!("{what}: expected a non-negative integer, got {value:?}"));
        match value {
            Value::Int(n) => u64::try_from(*n).map_err(|_| bad()),
            Value::BulkString(_) | Value::SimpleString(_) => parse_int(&self.text(value, what)?).ok_or_else(bad),
            _ => Err(bad()),
        }
    }

    fn attempt(&self, value: &Value, what: &str) -> Result<u32, QueueError> {
        let n = self.int(value, what)?;
        u32::try_from(n).ok().filter(|&a| a > 0).ok_or_else(|| self.malformed(format!("{what}: attempt {n}")))
    }

    fn priority(&self, value: &Value, what: &str) -> Result<Priority, QueueError> {
        let at = self.int(value, what)?;
        score::priority_of(at).ok_or_else(|| self.malformed(format!("{what}: score {at} is in no priority class")))
    }

    fn not_holder(host: &str, id: &str) -> QueueError {
        QueueError::NotHolder { host: host.to_owned(), id: id.to_owned() }
    }

    async fn push_request(&self, request: QueuedRequest, limit: Option<usize>) -> Result<Pushed, QueueError> {
        check_request(&request)?;
        let mut invocation = self.invocation(&SCRIPTS.push);
        invocation.arg(&request.id).arg(&request.payload).arg(score::class(request.priority)).arg(request.attempt);
        // -1: no limit.
        invocation.arg(limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX)));
        let reply = self.array(self.run(&invocation).await?, "push")?;
        match reply.as_slice() {
            [Value::Int(0)] => Err(QueueError::Duplicate(request.id)),
            [Value::Int(2), queued] => Err(QueueError::Full { queued: self.int(queued, "push queued")? as usize }),
            [Value::Int(1), position, length] => Ok(Pushed {
                position: self.int(position, "push position")? as usize,
                queue_length: self.int(length, "push length")? as usize,
            }),
            other => Err(self.malformed(format!("push: {other:?}"))),
        }
    }

    async fn take_request(&self, host: &str, lease: Duration) -> Result<Option<Taken>, QueueError> {
        let mut invocation = self.invocation(&SCRIPTS.take);
        invocation.arg(host).arg(lease_ms(lease));
        let reply = self.array(self.run(&invocation).await?, "take")?;
        if reply.is_empty() {
            return Ok(None);
        }
        let mut reply = reply;
        // A seventh item is the note of an earlier attempt.
        let note = match reply.len() {
            7 => reply.pop().map(|n| self.text(&n, "take note")).transpose()?,
            _ => None,
        };
        let [id, payload, place, attempt, enqueued, expires] =
            self.tuple(Value::Array(reply), "take")?;
        Ok(Some(Taken {
            request: QueuedRequest {
                id: self.text(&id, "take id")?,
                priority: self.priority(&place, "take place")?,
                payload: self.text(&payload, "take payload")?,
                attempt: self.attempt(&attempt, "take attempt")?,
            },
            enqueued_at: time_from_ms(self.int(&enqueued, "take enqueued")?),
            lease_expires_at: time_from_ms(self.int(&expires, "take expiry")?),
            note,
        }))
    }

    async fn renew_lease(&self, host: &str, id: &str, lease: Duration) -> Result<Renewal, QueueError> {
        let mut invocation = self.invocation(&SCRIPTS.renew);
        invocation.arg(host).arg(id).arg(lease_ms(lease));
        let [held, cancel] = self.tuple(self.run(&invocation).await?, "renew")?;
        Ok(Renewal { held: self.int(&held, "renew held")? == 1, cancel_requested: self.int(&cancel, "renew cancel")? == 1 })
    }

    async fn mark_started(&self, host: &str, id: &str, detail: &str) -> Result<(), QueueError> {
        let mut invocation = self.invocation(&SCRIPTS.started);
        invocation.arg(host).arg(id).arg(detail);
        match self.int(&self.run(&invocation).await?, "started")? {
            1 => Ok(()),
            _ => Err(Self::not_holder(host, id)),
        }
    }

    async fn announce_host(&self, host: &str, capacity: u32, ttl: Duration) -> Result<(), QueueError> {
        check_host(host)?;
        let mut invocation = self.invocation(&SCRIPTS.announce);
        invocation.arg(host).arg(capacity).arg(lease_ms(ttl));
        self.run(&invocation).await.map(drop)
    }

    async fn leave_host(&self, host: &str) -> Result<(), QueueError> {
        let mut invocation = self.invocation(&SCRIPTS.leave);
        invocation.arg(host);
        self.run(&invocation).await.map(drop)
    }

    async fn finish_request(&self, host: &str, id: &str, outcome: FinishOutcome, execution_ms: u64) -> Result<(), QueueError> {
        let (kind, detail) = match outcome {
            FinishOutcome::Completed(detail) => ("completed", detail),
            FinishOutcome::Failed(detail) => ("failed", detail),
            FinishOutcome::Cancelled => ("cancelled", String::new()),
        };
        let mut invocation = self.invocation(&SCRIPTS.finish);
        invocation.arg(host).arg(id).arg(kind).arg(detail).arg(execution_ms).arg(EXECUTION_SAMPLES);
        match self.int(&self.run(&invocation).await?, "finish")? {
            1 => Ok(()),
            _ => Err(Self::not_holder(host, id)),
        }
    }

    async fn release_request(&self, host: &str, id: &str, note: Option<&str>) -> Result<(), QueueError> {
        let mut invocation = self.invocation(&SCRIPTS.release);
        // An empty note: keep the one there is.
        invocation.arg(host).arg(id).arg(note.unwrap_or(""));
        match self.int(&self.run(&invocation).await?, "release")? {
            1 => Ok(()),
            _ => Err(Self::not_holder(host, id)),
        }
    }

    async fn requeue(&self, max_attempts: u32) -> Result<Vec<Expired>, QueueError> {
        let mut invocation = self.invocation(&SCRIPTS.requeue_expired);
        invocation.arg(max_attempts);
        let reply = self.array(self.run(&invocation).await?, "requeue_expired")?;
        reply
            .into_iter()
            .map(|item| {
                let [id, host, fate, attempt] = self.tuple(item, "requeue_expired item")?;
                let n = self.attempt(&attempt, "requeue_expired attempt");
                let fate = match self.text(&fate, "requeue_expired fate")?.as_str() {
                    "requeued" => ExpiredFate::Requeued { attempt: n? },
                    "failed" => ExpiredFate::Failed { attempts: n? },
                    "cancelled" => ExpiredFate::Cancelled,
                    other => return Err(self.malformed(format!("requeue_expired fate {other:?}"))),
                };
                Ok(Expired { id: self.text(&id, "requeue_expired id")?, host: self.text(&host, "requeue_expired host")?, fate })
            })
            .collect()
    }

    async fn cancel_request(&self, id: &str) -> Result<CancelResult, QueueError> {
        let mut invocation = self.invocation(&SCRIPTS.cancel);
        invocation.arg(id);
        match self.int(&self.run(&invocation).await?, "cancel")? {
            0 => Ok(CancelResult::Unknown),
            1 => Ok(CancelResult::Removed),
            2 => Ok(CancelResult::Flagged),
            n => Err(self.malformed(format!("cancel: {n}"))),
        }
    }

    async fn look_up(&self, id: &str) -> Result<RequestState, QueueError> {
        let mut invocation = self.invocation(&SCRIPTS.lookup);
        invocation.arg(id);
        let reply = self.array(self.run(&invocation).await?, "lookup")?;
        let Some(state) = reply.first() else { return Err(self.malformed("lookup: an empty reply")) };
        match (self.text(state, "lookup state")?.as_str(), &reply[1..]) {
            ("queued", [position, attempt]) => Ok(RequestState::Queued {
                position: self.int(position, "lookup position")? as usize,
                attempt: self.attempt(attempt, "lookup attempt")?,
            }),
            ("leased", [host, attempt]) => Ok(RequestState::Leased {
                host: self.text(host, "lookup host")?,
                attempt: self.attempt(attempt, "lookup attempt")?,
            }),
            ("finished", [event]) => {
                let text = self.text(event, "lookup event")?;
                let event = decode_event(&text).map_err(|e| self.malformed(format!("lookup: {e}")))?;
                Ok(RequestState::Finished { event })
            }
            ("unknown", []) => Ok(RequestState::Unknown),
            (state, rest) => Err(self.malformed(format!("lookup: {state:?} with {rest:?}"))),
        }
    }

    async fn take_snapshot(&self) -> Result<QueueSnapshot, QueueError> {
        let invocation = self.invocation(&SCRIPTS.snapshot);
        let [queued, leased, durations, hosts, capacity] = self.tuple(self.run(&invocation).await?, "snapshot")?;
        let queued = self
            .array(queued, "snapshot queue")?
            .into_iter()
            .map(|item| {
                let [id, at, attempt, enqueued] = self.tuple(item, "snapshot entry")?;
                Ok(QueueEntry {
                    id: self.text(&id, "snapshot id")?,
                    priority: self.priority(&at, "snapshot score")?,
                    attempt: self.attempt(&attempt, "snapshot attempt")?,
                    enqueued_at: time_from_ms(self.int(&enqueued, "snapshot enqueued")?),
                })
            })
            .collect::<Result<Vec<_>, QueueError>>()?;
        let durations = self
            .array(durations, "snapshot durations")?
            .iter()
            .map(|d| self.int(d, "snapshot duration"))
            .collect::<Result<Vec<_>, QueueError>>()?;
        let mean_execution_ms =
            (!durations.is_empty()).then(|| durations.iter().map(|&ms| ms as f64).sum::<f64>() / durations.len() as f64);
        Ok(QueueSnapshot {
            queued,
            leased: self.int(&leased, "snapshot leases")? as usize,
            mean_execution_ms,
            hosts: self.int(&hosts, "snapshot hosts")? as usize,
            capacity: self.int(&capacity, "snapshot capacity")? as usize,
        })
    }
}

impl RequestQueue for RedisQueue {
    fn push_within(&self, request: QueuedRequest, limit: Option<usize>) -> QueueFuture<'_, Pushed> {
        Box::pin(self.push_request(request, limit))
    }

    fn take<'a>(&'a self, host: &'a str, lease: Duration) -> QueueFuture<'a, Option<Taken>> {
        Box::pin(self.take_request(host, lease))
    }

    fn renew<'a>(&'a self, host: &'a str, id: &'a str, lease: Duration) -> QueueFuture<'a, Renewal> {
        Box::pin(self.renew_lease(host, id, lease))
    }

    fn started<'a>(&'a self, host: &'a str, id: &'a str, detail: &'a str) -> QueueFuture<'a, ()> {
        Box::pin(self.mark_started(host, id, detail))
    }

    fn finish<'a>(&'a self, host: &'a str, id: &'a str, outcome: FinishOutcome, execution_ms: u64) -> QueueFuture<'a, ()> {
        Box::pin(self.finish_request(host, id, outcome, execution_ms))
    }

    fn release_with_note<'a>(&'a self, host: &'a str, id: &'a str, note: Option<&'a str>) -> QueueFuture<'a, ()> {
        Box::pin(self.release_request(host, id, note))
    }

    fn requeue_expired(&self, max_attempts: u32) -> QueueFuture<'_, Vec<Expired>> {
        Box::pin(self.requeue(max_attempts))
    }

    fn cancel<'a>(&'a self, id: &'a str) -> QueueFuture<'a, CancelResult> {
        Box::pin(self.cancel_request(id))
    }

    fn snapshot(&self) -> QueueFuture<'_, QueueSnapshot> {
        Box::pin(self.take_snapshot())
    }

    fn lookup<'a>(&'a self, id: &'a str) -> QueueFuture<'a, RequestState> {
        Box::pin(self.look_up(id))
    }

    fn announce<'a>(&'a self, host: &'a str, capacity: u32, ttl: Duration) -> QueueFuture<'a, ()> {
        Box::pin(self.announce_host(host, capacity, ttl))
    }

    fn leave<'a>(&'a self, host: &'a str) -> QueueFuture<'a, ()> {
        Box::pin(self.leave_host(host))
    }

    fn subscribe(&self) -> broadcast::Receiver<QueueEvent> {
        self.events.subscribe()
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests;
