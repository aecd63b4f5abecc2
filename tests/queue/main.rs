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
use claude_session_spawner::pool::queue::{LocalQueue, ManualClock, RequestQueue};

fn local() -> Harness {
    local_on(LocalQueue::new(), None)
}

/// On a clock that moves only when the test says time passes ([`Harness::pass`]).
fn local_manual() -> Harness {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    local_on(LocalQueue::with_clock(clock.clone()), Some(clock))
}

fn local_on(queue: LocalQueue, clock: Option<Arc<ManualClock>>) -> Harness {
    let queue: Arc<dyn RequestQueue> = Arc::new(queue);
    let harness = Harness::new(
        Box::new(move || {
            let queue = Arc::clone(&queue);
            Box::pin(async move { queue })
        }),
        (),
    );
    match clock {
        Some(clock) => harness.with_manual_clock(clock),
        None => harness,
    }
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

/// Each test on both queues; the `manual_clock` ones run locally on a [`ManualClock`]
/// (Redis's clock is real: they wait for it, with a deadline).
macro_rules! on_both {
    (real_clock: [$($name:ident),* $(,)?], manual_clock: [$($manual:ident),* $(,)?] $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    crate::behaviour::$name(crate::local()).await
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $manual() {
                    crate::behaviour::$manual(crate::local_manual()).await
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
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $manual() {
                    crate::behaviour::$manual(crate::redis()).await
                }
            )*
        }
    };
}

on_both!(
    real_clock: [
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
    started_leaves_a_note_for_the_next_attempt,
    only_the_holder_says_started,
    the_note_goes_with_the_request,
    started_and_queued_events,
    ],
    manual_clock: [announced_hosts_make_up_the_capacity],
);
