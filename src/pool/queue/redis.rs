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

use std::sync::LazyLock;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError, Script, ScriptInvocation, Value};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

use super::*;

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

struct Scripts {
    push: Script,
    take: Script,
    renew: Script,
    started: Script,
    finish: Script,
    release: Script,
    requeue_expired: Script,
    cancel: Script,
    snapshot: Script,
    lookup: Script,
    announce: Script,
    leave: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let with_common = |body: &str| Script::new(&format!("{}\n{body}", include_str!("scripts/common.lua")));
    Scripts {
        push: with_common(include_str!("scripts/push.lua")),
        take: with_common(include_str!("scripts/take.lua")),
        renew: with_common(include_str!("scripts/renew.lua")),
        started: with_common(include_str!("scripts/started.lua")),
        finish: with_common(include_str!("scripts/finish.lua")),
        release: with_common(include_str!("scripts/release.lua")),
        requeue_expired: with_common(include_str!("scripts/requeue_expired.lua")),
        cancel: with_common(include_str!("scripts/cancel.lua")),
        snapshot: with_common(include_str!("scripts/snapshot.lua")),
        lookup: with_common(include_str!("scripts/lookup.lua")),
        announce: with_common(include_str!("scripts/announce.lua")),
        leave: with_common(include_str!("scripts/leave.lua")),
    }
});

/// The keys every script gets, in the order `scripts/common.lua` lists.
const KEY_NAMES: [&str; 16] = [
    "queue", "leases", "holder", "payload", "place", "attempt", "enqueued", "cancel", "counters", "durations", "events",
    "notes", "hosts", "capacity", "results", "ended",
];

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

/// Reads the events stream for as long as the handle lives and forwards each event
/// to the handle's subscribers.
struct EventsReader {
    client: Client,
    key: String,
    /// The id of the last entry seen: reading resumes after it.
    after: String,
    events: broadcast::Sender<QueueEvent>,
    url: String,
    connect_timeout: Duration,
    reconnect_delay: Duration,
}

impl EventsReader {
    async fn run(mut self, ready: oneshot::Sender<Result<(), QueueError>>) {
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
fn stream_entries(reply: &Value) -> Vec<(String, Option<String>)> {
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
fn newest_entry_id(reply: &Value) -> Option<String> {
    let Value::Array(entries) = reply else { return None };
    let Some(Value::Array(parts)) = entries.first() else { return None };
    parts.first().and_then(bulk_text)
}

fn bulk_text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

/// An event as the scripts publish it (`cjson`).
fn decode_event(text: &str) -> Result<QueueEvent, String> {
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
fn parse_int(text: &str) -> Option<u64> {
    text.parse::<u64>().ok().or_else(|| {
        let f = text.parse::<f64>().ok()?;
        (f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < 9_007_199_254_740_992.0).then_some(f as u64)
    })
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(redact("redis://:secret@10.0.0.1:6379/0"), "redis://***@10.0.0.1:6379/0");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn integers_in_either_notation() {
        assert_eq!(parse_int("35184372088833"), Some(35_184_372_088_833));
        assert_eq!(parse_int("1.8e+12"), Some(1_800_000_000_000));
        assert_eq!(parse_int("1.5"), None);
        assert_eq!(parse_int("-1"), None);
        assert_eq!(parse_int("x"), None);
    }

    #[test]
    fn malformed_events_are_errors() {
        assert_eq!(
            decode_event(r#"{"event":"allocated","id":"a","host":"h","attempt":2}"#),
            Ok(QueueEvent::Allocated { id: "a".into(), host: "h".into(), attempt: 2 })
        );
        assert_eq!(
            decode_event(r#"{"event":"failed","id":"a","detail":"gave up"}"#),
            Ok(QueueEvent::Failed { id: "a".into(), host: None, detail: "gave up".into() })
        );
        assert_eq!(
            decode_event(r#"{"event":"started","id":"a","host":"h","attempt":3,"detail":"{\"conversation\":\"c1\"}"}"#),
            Ok(QueueEvent::Started { id: "a".into(), host: "h".into(), attempt: 3, detail: r#"{"conversation":"c1"}"#.into() })
        );
        // The scripts name priorities as Priority::as_str does.
        for p in Priority::ALL {
            let text = format!(r#"{{"event":"queued","id":"a","priority":"{p}"}}"#);
            assert_eq!(decode_event(&text), Ok(QueueEvent::Queued { id: "a".into(), priority: p }));
        }
        assert!(include_str!("scripts/common.lua").contains("{'critical', 'high', 'medium', 'low'}"));
        assert!(decode_event(r#"{"event":"queued","id":"a","priority":"urgent"}"#).is_err());
        assert!(decode_event(r#"{"event":"started","id":"a","host":"h","attempt":1}"#).is_err());
        assert!(decode_event("not json").is_err());
        assert!(decode_event(r#"{"event":"allocated","id":"a"}"#).is_err());
        assert!(decode_event(r#"{"event":"exploded","id":"a"}"#).is_err());
    }

    #[test]
    fn stream_replies_are_read_defensively() {
        let bulk = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        let entry = |id: &str, fields: Vec<Value>| Value::Array(vec![bulk(id), Value::Array(fields)]);
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("css:{q}:events"),
            Value::Array(vec![
                entry("1-0", vec![bulk("e"), bulk("{}")]),
                // Someone else's entry without our field: its id still moves us on.
                entry("2-0", vec![bulk("other"), bulk("x")]),
                Value::Int(3),
            ]),
        ])]);
        assert_eq!(
            stream_entries(&reply),
            vec![("1-0".to_owned(), Some("{}".to_owned())), ("2-0".to_owned(), None)]
        );
        // A read that timed out.
        assert!(stream_entries(&Value::Nil).is_empty());
        assert_eq!(newest_entry_id(&Value::Array(vec![entry("7-1", vec![])])), Some("7-1".to_owned()));
        assert_eq!(newest_entry_id(&Value::Array(vec![])), None);
    }
}
