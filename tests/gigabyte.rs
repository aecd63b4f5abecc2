//! 1 GiB of stdout: the session completes, its stdout.log is exactly what the agent
//! wrote, and this process's memory stays flat. Alone in its binary, because the
//! peak RSS it measures is the whole process's: other tests running beside it (cargo
//! runs a binary's tests in parallel) would raise it too.

mod support;

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use claude_session_spawner::*;
use support::*;

const SIZE: u64 = 1 << 30;
const CHUNK: usize = 1 << 20;

#[tokio::test]
async fn a_gigabyte_of_stdout_is_logged_byte_for_byte_in_flat_memory() {
    let dir = tempfile::tempdir().unwrap();
    // Counts what reaches the handler and drops it: keeping the chunks (as the
    // Recorder does) would be the test's own gigabyte.
    let delivered = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&delivered);
    // Claude Code's protocol, the default. The text protocol scans every line for its
    // metrics' keywords, which in a debug build limits it to about 40 MiB/s (25 s
    // for this gigabyte); stream-json's JSON parser refuses these lines within their
    // first bytes.
    let options = SpawnerOptions::default()
        .claude_path(fake_agent())
        .protocol(Protocol::StreamJson)
        .extra_args(["--steps".to_owned(), format!("numbered-out:{SIZE}")]);
    let spawner = Spawner::new(options, move |e: SpawnerEvent| {
        if let SpawnerEvent::SessionOutput(chunk) = e {
            if chunk.stream == Stream::Stdout {
                seen.fetch_add(chunk.data.len() as u64, Ordering::Relaxed);
            }
        }
    })
    .unwrap();
    let peak_before = own_memory("VmHWM");

    let result = spawner.spawn_session(config(dir.path())).await.unwrap();
    let id = result.session_id.clone();
    let status = tokio::time::timeout(std::time::Duration::from_secs(120), result.completion)
        .await
        .expect("a gigabyte in two minutes");
    assert_eq!(status.state, SessionState::Completed);
    assert_eq!(delivered.load(Ordering::Relaxed), SIZE, "the output events add up to what was written");
    assert!(status.stdout.len() <= 1 << 20, "the status keeps only the tail");

    // Compared a chunk at a time: the expected bytes are made as they are needed.
    let log = spawner.session_directory(&id).unwrap().join("stdout.log");
    assert_eq!(std::fs::metadata(&log).unwrap().len(), SIZE);
    let mut file = std::fs::File::open(&log).unwrap();
    let mut actual = vec![0u8; CHUNK];
    let mut expected = Vec::with_capacity(CHUNK);
    let mut line = 0u64;
    let mut offset = 0u64;
    while offset < SIZE {
        file.read_exact(&mut actual).unwrap();
        expected.clear();
        while expected.len() < CHUNK {
            expected.extend_from_slice(&numbered_line(line));
            line += 1;
        }
        assert!(actual == expected, "stdout.log differs from what the agent wrote in the MiB at {offset}");
        offset += CHUNK as u64;
    }
    assert_eq!(file.read(&mut actual).unwrap(), 0, "nothing after the gigabyte");

    let grown = own_memory("VmHWM").saturating_sub(peak_before);
    assert!(grown < 64 << 20, "peak RSS grew by {} MiB", grown >> 20);
}
