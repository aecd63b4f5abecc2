//! Benchmark baseline: the plainest Rust way to run an agent to completion, N times
//! in a row (spawn with piped stdio, write the prompt, read all output, wait).
//! `spawn_loop <agent> <count> [agent args...]` prints `{"sessions":N,"seconds":S}`.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let agent = args.next().expect("agent path");
    let count: usize = args.next().expect("count").parse().expect("count");
    let agent_args: Vec<String> = args.collect();
    let prompt = b"Task: benchmark\n\nProceed.\n";
    let started = Instant::now();
    for _ in 0..count {
        let mut child = Command::new(&agent)
            .args(&agent_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        // An agent may exit before reading: a broken pipe is fine here.
        let _ = child.stdin.take().unwrap().write_all(prompt);
        let mut out = Vec::new();
        child.stdout.take().unwrap().read_to_end(&mut out).expect("stdout");
        child.stderr.take().unwrap().read_to_end(&mut out).expect("stderr");
        child.wait().expect("wait");
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("{{\"sessions\":{count},\"seconds\":{seconds}}}");
}
