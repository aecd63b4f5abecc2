//! Three pools sharing one queue, in this process: `cargo run --example shared_pool
//! --features redis [redis-url]`. With a Redis URL the queue is in Redis (start one
//! with `redis-server --port 6380` and pass `redis://127.0.0.1:6380/`); without, an
//! in-process `LocalQueue`. The agent is the fake agent built next to this example
//! (`cargo build --examples`), or the program in `AGENT`; requests are made on the
//! first pool and run wherever there is a free slot.

use std::sync::Arc;
use std::time::Duration;

use claude_session_spawner::pool::queue::{LocalQueue, RequestQueue};
use claude_session_spawner::pool::{Pool, PoolConfig, PoolRequest, SharedQueueConfig};
use claude_session_spawner::{Priority, Protocol, SessionConfig, Spawner, SpawnerEvent, SpawnerOptions};

fn agent() -> std::path::PathBuf {
    match std::env::var_os("AGENT") {
        Some(path) => path.into(),
        None => std::env::current_exe().expect("this example's path").with_file_name("fake_agent"),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1);
    let local: Arc<dyn RequestQueue> = Arc::new(LocalQueue::new());
    let dir = tempfile_dir()?;
    let mut pools = Vec::new();
    for host in ["alpha", "beta", "gamma"] {
        let options = SpawnerOptions::default().claude_path(agent()).protocol(Protocol::Text).extra_args(["sleep:200", "out:done", "exit:0"]);
        let spawner = Spawner::new(options, |_: SpawnerEvent| {})?;
        let queue = SharedQueueConfig {
            url: url.clone().unwrap_or_default(),
            name: "example".into(),
            host: Some(host.into()),
            lease_ms: 5_000,
            poll_interval_ms: 200,
            connect_timeout_ms: None,
            response_timeout_ms: None,
        };
        let config = PoolConfig { max_concurrent_sessions: 2, queue: Some(queue), ..PoolConfig::default() };
        let announce = move |event: SpawnerEvent| {
            if let SpawnerEvent::SessionAllocated { request_id, host: Some(ran_on), .. } = &event {
                println!("{host}: {request_id} allocated on {ran_on}");
            }
        };
        let pool = match &url {
            Some(_) => Pool::over(&spawner, config, announce)?,
            None => Pool::on_queue(&spawner, config, Arc::clone(&local), host, announce),
        };
        pools.push(pool);
    }
    let mut waiting = Vec::new();
    for i in 0..8 {
        let mut config = SessionConfig { working_directory: dir.clone(), ..SessionConfig::default() };
        config.task_context.description = format!("task {i}");
        let pool = pools[0].clone();
        let request = PoolRequest::new(format!("task-{i}"), config, Priority::ALL[i % 4]);
        waiting.push(tokio::spawn(async move {
            let allocation = pool.request_session(request).await?;
            let status = allocation.outcome.await?;
            Ok::<_, claude_session_spawner::pool::PoolFailure>((allocation.request_id, status))
        }));
    }
    for w in waiting {
        let (id, status) = tokio::time::timeout(Duration::from_secs(60), w).await??.map_err(|e| e.to_string())?;
        println!("{id}: {} on {}", status.state, status.host.as_deref().unwrap_or("?"));
    }
    for pool in &pools {
        pool.close().await;
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("css-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
