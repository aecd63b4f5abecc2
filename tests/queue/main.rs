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
use std::time::Duration;

use claude_session_spawner::pool::queue::{LocalQueue, ManualClock, RequestQueue, RESULTS_KEPT_MS};

fn local() -> Harness {
    local_on(LocalQueue::new(), None)
}

/// On a clock that moves only when the test says time passes ([`Harness::pass`]).
fn local_manual() -> Harness {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    local_on(LocalQueue::with_clock(clock.clone()), Some(clock))
}

/// On a manual clock, keeping results for the usual hour but only [`behaviour::FEW_RESULTS`].
fn local_retention() -> Harness {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let kept = Duration::from_millis(RESULTS_KEPT_MS);
    let queue = LocalQueue::with_clock(clock.clone()).keeping_results(kept, behaviour::FEW_RESULTS);
    local_on(queue, Some(clock)).with_results(kept, behaviour::FEW_RESULTS)
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
    redis_with(|_| {})
}

/// Results kept for half a second (by Redis's clock, which the test waits for), only
/// [`behaviour::FEW_RESULTS`] of them.
#[cfg(feature = "redis")]
fn redis_retention() -> Harness {
    const KEPT: Duration = Duration::from_millis(500);
    redis_with(|options| {
        options.results_kept = KEPT;
        options.results_limit = behaviour::FEW_RESULTS;
    })
    .with_results(KEPT, behaviour::FEW_RESULTS)
}

#[cfg(feature = "redis")]
fn redis_with(
    adjust: impl Fn(&mut claude_session_spawner::pool::queue::RedisQueueOptions) + Send + Sync + 'static,
) -> Harness {
    use claude_session_spawner::pool::queue::{RedisQueue, RedisQueueOptions};

    let server = redis_server::RedisServer::start();
    let url = server.url();
    Harness::new(
        Box::new(move || {
            let mut options = RedisQueueOptions::new(url.clone(), "behaviour");
            adjust(&mut options);
            Box::pin(async move {
                let queue = RedisQueue::connect(options).await.expect("connect to the test's redis-server");
                Arc::new(queue) as Arc<dyn RequestQueue>
            })
        }),
        server,
    )
}

/// Each test on both queues; the `manual_clock` ones run locally on a [`ManualClock`]
/// (Redis's clock is real: they wait for it, with a deadline), the `retention` ones too,
/// on queues that keep few results (and on Redis, briefly).
macro_rules! on_both {
    (
        real_clock: [$($name:ident),* $(,)?],
        manual_clock: [$($manual:ident),* $(,)?],
        retention: [$($retention:ident),* $(,)?] $(,)?
    ) => {
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
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $retention() {
                    crate::behaviour::$retention(crate::local_retention()).await
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
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $retention() {
                    crate::behaviour::$retention(crate::redis_retention()).await
                }
            )*
        }
    };
}

on_both!(
    real_clock: [
    priority_then_arrival,
    duplicate_ids_are_refused_while_queued_or_leased,
    a_push_within_a_limit_is_refused_once_that_many_wait_even_from_hosts_at_once,
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
    lookup_follows_a_request_to_its_end,
    lookup_after_a_lapsed_lease,
    a_push_forgets_how_the_id_ended_before,
    ],
    manual_clock: [announced_hosts_make_up_the_capacity],
    retention: [results_are_kept_for_their_retention, only_the_newest_results_are_kept],
);
