//! A thousand sessions one after another, cleaned up as a daemon would: nothing
//! accumulates (zombies, descriptors, memory). Alone in its binary, because it
//! counts the whole process's descriptors and memory, which other tests running
//! beside it would change.

mod support;

use claude_session_spawner::*;
use support::*;

const WARM_UP: usize = 20;
const SESSIONS: usize = 1000;

#[tokio::test]
async fn a_thousand_sessions_leave_no_zombies_descriptors_or_memory_behind() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut options = SpawnerOptions::default()
        .claude_path(fake_agent())
        .protocol(Protocol::Text)
        .extra_args(["exit:0"])
        .history_size(5);
    // Its own state directory, so each session is recorded and forgotten as a
    // daemon's would be, without touching the machine's.
    options.state_dir = Some(state.path().to_owned());
    // Events are dropped: a recorder would itself grow with every session.
    let spawner = Spawner::new(options, |_: SpawnerEvent| {}).unwrap();

    let mut baseline = None;
    for n in 0..SESSIONS {
        // The first sessions open what lives as long as the spawner (the runtime's
        // driver, the launcher thread, the allocator's arenas): measure after them.
        if n == WARM_UP {
            baseline = Some((open_fds(), own_memory("VmRSS")));
        }
        let result = spawner.spawn_session(config(dir.path())).await.unwrap();
        let status = finished(result.completion).await;
        assert_eq!(status.state, SessionState::Completed, "session {n}");
        spawner.cleanup_completed_sessions();
    }
    let (fds_before, rss_before) = baseline.unwrap();

    assert!(spawner.active_sessions().is_empty());
    assert!(spawner.metrics_summary().total_sessions <= 5, "the history stays at its size");
    // Each agent is reaped before its session ends.
    assert_eq!(zombie_children(), Vec::<u32>::new(), "unreaped agents");
    // The last session's descriptors may close a moment after its end is reported.
    wait_until("the descriptor count to return to its baseline", || open_fds() <= fds_before).await;
    assert_eq!(open_fds(), fds_before);
    assert_eq!(registry::recorded_sessions(state.path()).unwrap(), vec![], "no session left recorded");
    assert_eq!(std::fs::read_dir(state.path()).unwrap().count(), 1, "one file of slots, not a file per session");
    // A few hundred KiB of growth is the allocator settling; keeping every ended
    // session (as an unbounded history would) costs about 5 MiB here.
    let grown = own_memory("VmRSS").saturating_sub(rss_before);
    assert!(grown < 2 << 20, "RSS grew by {} KiB over {} sessions", grown >> 10, SESSIONS - WARM_UP);
}
