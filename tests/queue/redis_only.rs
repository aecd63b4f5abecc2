//! What only the Redis queue has: a server that dies and comes back, servers that
//! cannot be reached, and data in Redis that this code did not write.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use claude_session_spawner::pool::queue::*;
use claude_session_spawner::Priority;

use crate::behaviour::request;
use crate::redis_server::RedisServer;

fn options(url: &str) -> RedisQueueOptions {
    RedisQueueOptions {
        connect_timeout: Duration::from_millis(500),
        response_timeout: Duration::from_millis(500),
        ..RedisQueueOptions::new(url, "only")
    }
}

/// Retries `op` until it succeeds, failing the test after `within`.
async fn eventually<T, F, Fut>(within: Duration, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, QueueError>>,
{
    let started = Instant::now();
    loop {
        match op().await {
            Ok(value) => return value,
            Err(e) if started.elapsed() < within => {
                assert!(matches!(e, QueueError::Unavailable { .. }), "{e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("still failing after {within:?}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_and_restarted_server_keeps_every_queued_request() {
    let mut server = RedisServer::start();
    let q = RedisQueue::connect(options(&server.url())).await.unwrap();
    for i in 0..40 {
        q.push(request(&format!("r{i:02}"), Priority::ALL[i % 4])).await.unwrap();
    }
    let taken = q.take("h1", Duration::from_secs(60)).await.unwrap().unwrap();
    let before = q.snapshot().await.unwrap();
    assert_eq!((before.queued.len(), before.leased), (39, 1));
    let pid = server.pid();

    server.kill();
    // Each request made while it is down rejects, the later ones too (they wait on
    // the reconnection in progress, then fail).
    for i in 0..3 {
        let started = Instant::now();
        let error = q.push(request(&format!("while-down{i}"), Priority::High)).await.unwrap_err();
        let took = started.elapsed();
        eprintln!("push {i} while Redis is down rejected in {took:?}");
        assert!(took < Duration::from_secs(5), "took {took:?}");
        assert!(matches!(error, QueueError::Unavailable { .. }), "{error:?}");
        assert!(error.to_string().contains(&server.url()), "names the URL: {error}");
    }

    server.restart();
    assert_ne!(server.pid(), pid);
    // The same handle reconnects by itself.
    let after = eventually(Duration::from_secs(10), || q.snapshot()).await;
    assert_eq!(after, before, "queue, attempts, times and the lease all survive");
    assert!(q.renew("h1", &taken.request.id, Duration::from_secs(60)).await.unwrap().held);
    let next = q.take("h2", Duration::from_secs(60)).await.unwrap().unwrap();
    assert_eq!(next.request.id, before.queued[0].id);
    assert_eq!(next.request.payload, request(&next.request.id, next.request.priority).payload);
    assert_eq!(q.push(request("after", Priority::Low)).await.unwrap().queue_length, 39);
}

#[tokio::test]
async fn events_resume_after_a_restart() {
    let mut server = RedisServer::start();
    let q = RedisQueue::connect(options(&server.url())).await.unwrap();
    let mut events = q.subscribe();
    server.restart();
    // Until Redis is back, pushes fail; the first that succeeds publishes an event
    // (queued; its cancel, a second).
    let started = Instant::now();
    for i in 0.. {
        assert!(started.elapsed() < Duration::from_secs(15), "no event after the restart");
        let id = format!("r{i}");
        if q.push(request(&id, Priority::Low)).await.is_err() || q.cancel(&id).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        if let Ok(Ok(event)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
            assert!(matches!(event, QueueEvent::Queued { .. }), "{event:?}");
            break;
        }
    }
}

/// Ids of the clients named `css-events` (the queue handles' event readers).
async fn event_readers(raw: &mut ::redis::aio::MultiplexedConnection) -> Vec<String> {
    let list: String = ::redis::cmd("CLIENT").arg("LIST").query_async(raw).await.unwrap();
    list.lines()
        .filter(|l| l.split(' ').any(|f| f == "name=css-events"))
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")).map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn events_published_while_a_host_is_cut_off_reach_it_when_it_is_back() {
    let server = RedisServer::start();
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    // It stays cut off for 2 s after losing its connection, long enough to publish.
    let watcher_options = RedisQueueOptions { reconnect_delay: Duration::from_secs(2), ..options(&server.url()) };
    let watcher = RedisQueue::connect(watcher_options).await.unwrap();
    let mut events = watcher.subscribe();
    let started = Instant::now();
    let readers = loop {
        let readers = event_readers(&mut raw).await;
        if readers.len() == 1 {
            break readers;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the watcher's reader never connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let other = RedisQueue::connect(options(&server.url())).await.unwrap();

    let _: u64 = ::redis::cmd("CLIENT").arg("KILL").arg("ID").arg(&readers[0]).query_async(&mut raw).await.unwrap();
    assert!(!event_readers(&mut raw).await.contains(&readers[0]), "the watcher is cut off");
    other.push(request("while-away", Priority::High)).await.unwrap();
    assert_eq!(other.cancel("while-away").await.unwrap(), CancelResult::Removed);

    for expected in [
        QueueEvent::Queued { id: "while-away".into(), priority: Priority::High },
        QueueEvent::Cancelled { id: "while-away".into() },
    ] {
        let event = tokio::time::timeout(Duration::from_secs(15), events.recv())
            .await
            .expect("the events published while the watcher was cut off arrive when it is back")
            .unwrap();
        assert_eq!(event, expected);
    }
    assert!(!event_readers(&mut raw).await.contains(&readers[0]), "read on a new connection");
}

#[tokio::test]
async fn a_port_with_no_server_errors_quickly_naming_the_url() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("redis://127.0.0.1:{port}/");
    let started = Instant::now();
    let Err(error) = RedisQueue::connect(options(&url)).await else { panic!("connected to nothing") };
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(matches!(error, QueueError::Unavailable { .. }), "{error:?}");
    assert!(error.to_string().contains(&url), "{error}");
    assert_eq!(error.code(), "ERR_QUEUE_UNAVAILABLE");
}

#[tokio::test]
async fn a_server_that_never_answers_errors_within_the_timeouts() {
    // Accepts connections (the kernel does, from its backlog) and never replies.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://:hunter2@127.0.0.1:{}/", silent.local_addr().unwrap().port());
    let started = Instant::now();
    let Err(error) = RedisQueue::connect(options(&url)).await else { panic!("connected to a silent port") };
    assert!(started.elapsed() < Duration::from_secs(6), "took {:?}", started.elapsed());
    assert!(matches!(error, QueueError::Unavailable { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("127.0.0.1") && !text.contains("hunter2"), "names the URL without its password: {text}");
}

#[tokio::test]
async fn data_in_redis_that_is_not_ours_is_an_error_not_a_panic() {
    let server = RedisServer::start();
    let q = RedisQueue::connect(options(&server.url())).await.unwrap();
    q.push(request("a", Priority::High)).await.unwrap();
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = ::redis::cmd("HSET").arg("css:{only}:attempt").arg("a").arg("many").query_async(&mut raw).await.unwrap();
    let error = q.snapshot().await.unwrap_err();
    assert!(matches!(error, QueueError::Malformed { .. }), "{error:?}");
    assert!(error.to_string().contains("attempt"), "{error}");
    let error = q.take("h1", Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(error, QueueError::Malformed { .. }), "{error:?}");

    let _: () = ::redis::cmd("SET").arg("css:{only}:queue").arg("a string").query_async(&mut raw).await.unwrap();
    let error = q.push(request("b", Priority::High)).await.unwrap_err();
    assert!(matches!(error, QueueError::Refused { .. }), "a wrong type is refused by Redis: {error:?}");
}

/// Redis's clock, in milliseconds.
async fn redis_now_ms(raw: &mut ::redis::aio::MultiplexedConnection) -> u64 {
    let (secs, micros): (u64, u64) = ::redis::cmd("TIME").query_async(raw).await.unwrap();
    secs * 1000 + micros / 1000
}

async fn count(raw: &mut ::redis::aio::MultiplexedConnection, command: &str, key: &str) -> usize {
    ::redis::cmd(command).arg(key).query_async(raw).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outdated_results_are_forgotten_a_hundred_per_operation() {
    // Long enough that the 150 pushes and cancels below all end within it on a loaded
    // machine (at 300 ms, a CPU-bound neighbour made the first ones outdated, and
    // pruned, before the count).
    const KEPT: Duration = Duration::from_secs(3);
    let server = RedisServer::start();
    let q = RedisQueue::connect(RedisQueueOptions { results_kept: KEPT, ..options(&server.url()) }).await.unwrap();
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    for i in 0..150 {
        let id = format!("r{i:03}");
        q.push(request(&id, Priority::Medium)).await.unwrap();
        assert_eq!(q.cancel(&id).await.unwrap(), CancelResult::Removed);
    }
    assert_eq!(count(&mut raw, "HLEN", "css:{only}:results").await, 150);
    // Wait, by Redis's clock and without touching the queue, until all are outdated.
    let newest: Vec<(String, u64)> =
        ::redis::cmd("ZRANGE").arg("css:{only}:ended").arg(-1).arg(-1).arg("WITHSCORES").query_async(&mut raw).await.unwrap();
    let outdated_at = newest[0].1 + KEPT.as_millis() as u64;
    let started = Instant::now();
    while redis_now_ms(&mut raw).await < outdated_at {
        assert!(started.elapsed() < Duration::from_secs(10), "Redis's clock did not move on");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(count(&mut raw, "ZCARD", "css:{only}:ended").await, 150, "nothing pruned them yet");
    assert!(q.requeue_expired(3).await.unwrap().is_empty());
    assert_eq!(count(&mut raw, "ZCARD", "css:{only}:ended").await, 50, "the oldest hundred");
    assert_eq!(count(&mut raw, "HLEN", "css:{only}:results").await, 50);
    assert_eq!(q.lookup("r149").await.unwrap(), RequestState::Unknown);
    assert_eq!(count(&mut raw, "ZCARD", "css:{only}:ended").await, 0);
    assert_eq!(count(&mut raw, "HLEN", "css:{only}:results").await, 0);

    // A result that is not an event of ours is an error.
    let _: () = ::redis::cmd("HSET").arg("css:{only}:results").arg("x").arg("garbage").query_async(&mut raw).await.unwrap();
    let later = redis_now_ms(&mut raw).await + 60_000;
    let _: () = ::redis::cmd("ZADD").arg("css:{only}:ended").arg(later).arg("x").query_async(&mut raw).await.unwrap();
    let error = q.lookup("x").await.unwrap_err();
    assert!(matches!(error, QueueError::Malformed { .. }), "{error:?}");
}
