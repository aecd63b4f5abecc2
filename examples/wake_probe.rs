//! Benchmark probe: what it costs one thread to wake another on this machine, the
//! hand-over a session makes between JavaScript's thread and the supervising one.
//! Two threads pass a byte back and forth through two pipes, pinned to one CPU, to
//! two CPUs, and on two CPUs with a pause before each round (the other CPU goes
//! idle, as it does while an agent runs). Linux only.
//! `wake_probe [rounds]` prints `{"sameCpuUs":..,"twoCpusUs":..,"twoCpusIdleUs":..}`:
//! microseconds per round trip (two wake-ups).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; the calls only read and fill it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Elsewhere the threads are not pinned (the figures then mix the cases); the probe
/// still builds, so the examples type-check for macOS.
#[cfg(not(target_os = "linux"))]
fn pin(_cpu: usize) {}

/// The mean round trip with the two threads on `cpus`, pausing `idle` before each.
fn round_trip(cpus: (usize, usize), rounds: usize, idle: Duration) -> f64 {
    let (mut here, mut there) = UnixStream::pair().expect("socket pair");
    let peer = std::thread::spawn(move || {
        pin(cpus.1);
        let mut byte = [0u8; 1];
        while there.read_exact(&mut byte).is_ok() {
            if there.write_all(&byte).is_err() {
                break;
            }
        }
    });
    pin(cpus.0);
    let mut byte = [1u8; 1];
    let mut total = Duration::ZERO;
    for _ in 0..rounds {
        if !idle.is_zero() {
            std::thread::sleep(idle);
        }
        let started = Instant::now();
        here.write_all(&byte).expect("write");
        here.read_exact(&mut byte).expect("read");
        total += started.elapsed();
    }
    drop(here);
    peer.join().expect("peer thread");
    total.as_secs_f64() * 1e6 / rounds as f64
}

fn main() {
    let rounds: usize = std::env::args().nth(1).map_or(2000, |r| r.parse().expect("rounds"));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let same = round_trip((0, 0), rounds, Duration::ZERO);
    let (two, idle) = if cpus > 1 {
        (round_trip((0, 1), rounds, Duration::ZERO), round_trip((0, 1), rounds / 4, Duration::from_micros(500)))
    } else {
        (f64::NAN, f64::NAN)
    };
    let num = |v: f64| if v.is_nan() { "null".to_owned() } else { format!("{v:.1}") };
    println!("{{\"sameCpuUs\":{},\"twoCpusUs\":{},\"twoCpusIdleUs\":{}}}", num(same), num(two), num(idle));
}
