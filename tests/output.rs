//! Output under stress: floods, invalid UTF-8, huge lines, bounded memory, complete
//! logs, and events that add up to exactly what the agent wrote.

mod support;

use claude_session_spawner::*;
use support::*;

fn log(dir: &std::path::Path, id: &str, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(".vp-daemon/sessions").join(id).join(name)).unwrap()
}

#[tokio::test]
async fn stderr_flood_without_reading_stdin_does_not_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let status = finished(
        spawner(&["flood-err:10485760", "out:done"], &rec).spawn_session(config(dir.path())).await.unwrap().completion,
    )
    .await;
    assert_eq!(status.state, SessionState::Completed);
    assert_eq!(status.stdout, "done\n");
    assert_eq!(log(dir.path(), &status.session_id, "stderr.log").len(), 10 << 20);
    assert_eq!(rec.output(&status.session_id, "stderr").len(), 10 << 20);
}

#[tokio::test]
async fn memory_keeps_the_tail_and_disk_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let options = SpawnerOptions::default().output_buffer_bytes(4096);
    let spawner = spawner_with(options, &["flood-out:3000000", "out:the end"], &rec);
    let status = finished(spawner.spawn_session(config(dir.path())).await.unwrap().completion).await;
    assert!(status.stdout.len() <= 4096, "kept {} bytes", status.stdout.len());
    // 3,000,000 is not a whole number of 1 KiB lines: the last one has no newline.
    assert!(status.stdout.ends_with("xxthe end\n"), "{:?}", &status.stdout[status.stdout.len() - 20..]);
    let on_disk = log(dir.path(), &status.session_id, "stdout.log");
    assert_eq!(on_disk.len(), 3_000_000 + "the end\n".len());
    assert_eq!(rec.output(&status.session_id, "stdout").as_bytes(), &on_disk[..]);
}

#[tokio::test]
async fn invalid_utf8_is_replaced_in_text_and_kept_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let status = finished(
        spawner(&["invalid-utf8", "out:after"], &rec).spawn_session(config(dir.path())).await.unwrap().completion,
    )
    .await;
    assert_eq!(status.state, SessionState::Completed);
    assert_eq!(status.stdout, "bad \u{fffd}\u{fffd} bytes \u{fffd}\nafter\n");
    assert_eq!(log(dir.path(), &status.session_id, "stdout.log"), b"bad \xff\xfe bytes \xc3\nafter\n");
}

#[tokio::test]
async fn characters_cut_between_reads_arrive_whole() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    // 11 bytes a line, written 65521 bytes at a time: nearly every read ends inside a
    // character, which the next read completes.
    let lines = 200_000;
    let status = finished(
        spawner(&[&format!("wide-out:{lines}")], &rec).spawn_session(config(dir.path())).await.unwrap().completion,
    )
    .await;
    let expected = "aé€😀\n".repeat(lines);
    assert_eq!(status.state, SessionState::Completed);
    let delivered = rec.output(&status.session_id, "stdout");
    assert!(!delivered.contains('\u{fffd}'), "a character was cut");
    assert!(delivered == expected, "delivered {} bytes, expected {}", delivered.len(), expected.len());
    assert_eq!(log(dir.path(), &status.session_id, "stdout.log"), expected.as_bytes());
    assert!(status.stdout.ends_with("aé€😀\naé€😀\n"));
}

#[tokio::test]
async fn a_huge_line_without_newline_is_delivered_whole() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let status = finished(
        spawner(&["long-line:20971520"], &rec).spawn_session(config(dir.path())).await.unwrap().completion,
    )
    .await;
    assert_eq!(status.state, SessionState::Completed);
    assert_eq!(log(dir.path(), &status.session_id, "stdout.log").len(), 20 << 20);
    let delivered = rec.output(&status.session_id, "stdout");
    assert_eq!(delivered.len(), 20 << 20);
    assert!(delivered.bytes().all(|b| b == b'L'));
}

#[tokio::test]
async fn output_events_precede_the_single_end_event() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let spawner = spawner(&["flood-out:500000", "flood-err:500000"], &rec);
    let status = finished(spawner.spawn_session(config(dir.path())).await.unwrap().completion).await;
    let events = rec.for_session(&status.session_id);
    let ended: Vec<_> = events.iter().enumerate().filter(|(_, e)| matches!(e, Seen::Ended { .. })).collect();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].0, events.len() - 1, "session-ended is the last event");
    assert_eq!(rec.output(&status.session_id, "stdout").len(), 500_000);
    assert_eq!(rec.output(&status.session_id, "stderr").len(), 500_000);
}

#[tokio::test]
async fn text_protocol_guesses_metrics_from_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let spawner = spawner(
        &["out:Executed command: npm test", "out:Wrote file src/a.rs", "out:Proceed? [Y/n]", "out:Error: it failed", "err:error on stderr is not counted"],
        &rec,
    );
    let status = finished(spawner.spawn_session(config(dir.path())).await.unwrap().completion).await;
    let m = status.metrics;
    assert_eq!((m.commands_executed, m.files_modified, m.approval_prompts, m.escalations, m.errors), (1, 1, 1, 0, 1));
}

#[tokio::test]
async fn a_slow_handler_slows_the_agent_instead_of_growing_memory() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    // The handler keeps every chunk for a while by moving it to a thread that holds
    // at most a few: with 1 MiB of credit, the bytes in flight never exceed it.
    let dir = tempfile::tempdir().unwrap();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = std::sync::mpsc::channel::<OutputChunk>();
    let (f, p) = (Arc::clone(&in_flight), Arc::clone(&peak));
    let options = SpawnerOptions { output_credit_bytes: 1 << 20, ..Default::default() }
        .claude_path(fake_agent())
        .protocol(Protocol::Text)
        .extra_args(["flood-out:20000000"]);
    let spawner = Spawner::new(options, move |e: SpawnerEvent| {
        if let SpawnerEvent::SessionOutput(chunk) = e {
            let now = f.fetch_add(chunk.data.len(), Ordering::SeqCst) + chunk.data.len();
            p.fetch_max(now, Ordering::SeqCst);
            let _ = tx.send(chunk);
        }
    })
    .unwrap();
    let consumer = std::thread::spawn(move || {
        let mut total = 0;
        for chunk in rx {
            total += chunk.data.len();
            in_flight.fetch_sub(chunk.data.len(), Ordering::SeqCst);
            drop(chunk);
        }
        total
    });
    let status = finished(spawner.spawn_session(config(dir.path())).await.unwrap().completion).await;
    assert_eq!(status.state, SessionState::Completed);
    drop(spawner);
    assert!(peak.load(Ordering::SeqCst) <= 1 << 20, "peak in flight {}", peak.load(Ordering::SeqCst));
    let _ = consumer;
}

#[tokio::test]
async fn a_stream_that_stays_empty_still_has_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new();
    let result = spawner(&["out:only stdout", "exit:0"], &rec).spawn_session(config(dir.path())).await.unwrap();
    let status = finished(result.completion).await;
    assert_eq!(status.state, SessionState::Completed);
    assert_eq!(log(dir.path(), &status.session_id, "stdout.log"), b"only stdout\n");
    // Its writer never started (nothing came), but the file is there, empty.
    assert_eq!(log(dir.path(), &status.session_id, "stderr.log"), b"");
}
