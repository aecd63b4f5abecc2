//! The shared request queue (`pool::queue`): every behaviour test on the in-process
//! queue and, with the `redis` feature, on a real `redis-server`; then what only
//! Redis has (restarts, unreachable servers, data it holds that is not ours).

mod behaviour;
#[cfg(feature = "redis")]
mod redis_only;
#[cfg(feature = "redis")]
mod redis_server;

use std::sync::Arc;

use behaviour::Harness;
use claude_session_spawner::pool::queue::{LocalQueue, RequestQueue};

fn local() -> Harness {
    let queue: Arc<dyn RequestQueue> = Arc::new(LocalQueue::new());
    Harness::new(
        Box::new(move || {
            let queue = Arc::clone(&queue);
            Box::pin(async move { queue })
        }),
        (),
    )
}

/// A server of its own per test, and a handle (a connection) per host.
#[cfg(feature = "redis")]
fn redis() -> Harness {
    use claude_session_spawner::pool::queue::{RedisQueue, RedisQueueOptions};

    let server = redis_server::RedisServer::start();
    let url = server.url();
    Harness::new(
        Box::new(move || {
            let options = RedisQueueOptions::new(url.clone(), "behaviour");
            Box::pin(async move {
                let queue = RedisQueue::connect(options).await.expect("connect to the test's redis-server");
                Arc::new(queue) as Arc<dyn RequestQueue>
            })
        }),
        server,
    )
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    crate::behaviour::$name(crate::local()).await
                }
            )*
        }
        #[cfg(feature = "redis")]
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    crate::behaviour::$name(crate::redis()).await
                }
            )*
        }
    };
}

on_both!(
    priority_then_arrival,
    duplicate_ids_are_refused_while_queued_or_leased,
    concurrent_hosts_never_take_the_same_request,
    a_lapsed_lease_can_neither_renew_nor_finish,
    expired_leases_requeue_at_their_place_then_fail,
    cancel_removes_queued_and_flags_leased,
    a_pending_cancel_wins_over_release_and_lapse,
    release_goes_to_the_front_of_its_class,
    snapshot_shows_order_leases_and_mean_execution,
    events_reach_every_host,
);
