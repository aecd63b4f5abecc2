//! A recovery manager over a spawner: `cargo run --example recovery`. A session whose
//! agent crashes (SIGSEGV) the first time it runs is analysed, dumped and started
//! again from its stored config; the second run completes. The agent is the fake
//! agent built next to this example (`cargo build --examples`), or the program in
//! `AGENT` (which is then given no steps).

use std::time::Duration;

use claude_session_spawner::recovery::{RecoveryConfig, RecoveryManager};
use claude_session_spawner::{Protocol, SessionConfig, Spawner, SpawnerEvent, SpawnerOptions};
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("css-recovery-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let marker = dir.join("ran-once");
    let options = match std::env::var_os("AGENT") {
        Some(agent) => SpawnerOptions::default().claude_path(agent),
        None => {
            let agent = std::env::current_exe()?.with_file_name("fake_agent");
            let crash_once = [format!("exit-if-exists:{}", marker.display()), format!("touch:{}", marker.display()), "signal:SEGV".into()];
            SpawnerOptions::default().claude_path(agent).protocol(Protocol::Text).extra_args(crash_once)
        }
    };
    let spawner = Spawner::new(options, |_: SpawnerEvent| {})?;
    let (events, mut received) = mpsc::unbounded_channel();
    let config = RecoveryConfig { crash_dump_directory: dir.join("dumps"), retry_delay_ms: 100, ..RecoveryConfig::default() };
    let manager = RecoveryManager::new(&spawner, config, events);

    let mut config = SessionConfig { working_directory: dir.clone(), ..SessionConfig::default() };
    config.task_context.description = "crash once, then finish".into();
    let session = spawner.spawn_session(config).await?;
    println!("started {}", session.session_id);
    let done = async {
        while let Some(event) = received.recv().await {
            match &event {
                SpawnerEvent::CrashAnalyzed { session_id, analysis } => {
                    println!("{session_id}: {} ({})", analysis.crash_type, analysis.evidence)
                }
                SpawnerEvent::CrashDumpSaved { filepath, .. } => println!("dump: {}", filepath.display()),
                SpawnerEvent::RecoveryRespawned { new_session_id, .. } => println!("respawned as {new_session_id}"),
                SpawnerEvent::RecoverySucceeded { .. } | SpawnerEvent::RecoveryFailed { .. } => {
                    println!("{}", event.name());
                    return;
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), done).await?;
    let stats = manager.recovery_stats();
    println!("crashes {}, recovered {}", stats.total_crashes, stats.successful_recoveries);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
