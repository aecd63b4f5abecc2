//! Benchmark: the Rust core's spawner run sequentially, no Node involved.
//! `core_loop <agent> <count> [agent args...]` prints `{"sessions":N,"seconds":S}`.

use claude_session_spawner::{Protocol, SessionConfig, Spawner, SpawnerEvent, SpawnerOptions};
use std::time::Instant;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let agent = args.next().expect("agent path");
    let count: usize = args.next().expect("count").parse().expect("count");
    let agent_args: Vec<String> = args.collect();
    let dir = std::env::temp_dir().join("css-core-loop");
    std::fs::create_dir_all(&dir).unwrap();
    let options = SpawnerOptions::default()
        .claude_path(agent)
        .protocol(Protocol::Text)
        .extra_args(agent_args)
        .history_size(10);
    let spawner = Spawner::new(options, |_: SpawnerEvent| {}).unwrap();
    let mut config = SessionConfig {
        working_directory: dir,
        ..Default::default()
    };
    config.task_context.description = "benchmark".into();
    let started = Instant::now();
    for _ in 0..count {
        let session = spawner.spawn_session(config.clone()).await.unwrap();
        session.completion.await;
        spawner.cleanup_completed_sessions();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("{{\"sessions\":{count},\"seconds\":{seconds}}}");
}
