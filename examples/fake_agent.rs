//! A scriptable stand-in for an agent, for process-level tests and benchmarks
//! (crashes, floods, signals, stray children). Each argument is one step, run in
//! order:
//!
//! | step | effect |
//! |---|---|
//! | `out:<text>` / `err:<text>` | a line on stdout / stderr |
//! | `read-line` | reads one line from stdin, prints `got: <line>` |
//! | `echo-stdin` | prints `echo: <line>` for each stdin line until end of input |
//! | `drain-stdin` | reads stdin to its end, printing nothing |
//! | `count-stdin:<c>` | reads stdin to its end, prints `stdin: <n> bytes, <m> of <c>` (`m`: how many bytes were the character `c`) |
//! | `sleep:<ms>` / `hang` | sleeps / sleeps for ever |
//! | `wait-file:<path>` | waits until `<path>` exists |
//! | `wait-orphaned` | waits until the process that started it has exited |
//! | `exit:<code>` | exits with `code` |
//! | `signal:<NAME>` | kills itself with signal `NAME` (e.g. `SEGV`) |
//! | `ignore-term` | ignores SIGTERM from now on |
//! | `flood-out:<bytes>` / `flood-err:<bytes>` | writes that many bytes in 1 KiB lines |
//! | `blast-out:<bytes>` | writes that many bytes in 64 KiB writes of 1 KiB lines |
//! | `numbered-out:<bytes>` | writes that many bytes in 64 KiB writes of 1 KiB lines, each starting with its line number (see [`numbered_line`]) |
//! | `wide-out:<n>` | writes `aé€😀` and a newline `n` times (characters of 1 to 4 bytes), in writes of 65521 bytes, so that reads cut characters |
//! | `long-line:<bytes>` | writes one line of that many bytes, without a newline |
//! | `invalid-utf8` | writes bytes that are not UTF-8, then a newline |
//! | `spawn-sleepers:<n>` | starts `n` children that sleep, prints `sleeper: <pid>` each |
//! | `spawn-escapee` | starts a child that leaves the process group (`setsid`) and sleeps, keeping stdout open; prints `escapee: <pid>` |
//! | `spawn-daemon` | like `spawn-escapee`, but the child's stdout and stderr are `/dev/null` (a daemon that holds nothing of the session); prints `daemon: <pid>` |
//! | `child:<steps>` | starts a child running `<steps>` (comma-separated), prints `child: <pid>` |
//! | `child-wait:<steps>` | runs `<steps>` in a child and waits for it to exit (what that child starts is left orphaned, not the agent's child) |
//! | `quiet-sleepers:<n>` | like `spawn-sleepers`, for an agent whose stdout is closed: the sleepers' stdout and stderr are `/dev/null`, and `sleeper: <pid>` goes to stderr |
//! | `on-term-write:<path>` | from now on SIGTERM writes `cleaned` to `<path>` and exits 0 |
//! | `close-stdout` | closes its stdout |
//! | `pid` / `cwd` / `env:<NAME>` | prints `pid: <pid>` / `cwd: <dir>` / `<NAME>=<value>` |
//! | `json-blob:<bytes>` | one JSON line `{"type":"blob","data":"xx…"}` of about that many bytes |
//! | `split:<text>` | `<text>` and a newline, written in two pieces 30 ms apart |
//! | `args` | prints each argument it was given, one per line, as `arg: <value>` |
//! | `touch:<path>` / `exit-if-exists:<path>` | creates the file / exits 0 if it exists (an agent that behaves differently when run again) |
//! | `if-exists:<path>=<step>` | runs `<step>` only if `<path>` exists |
//! | `env-steps` | runs the steps in `$FAKE_AGENT_STEPS` (separated by `;`), so sessions of one spawner can behave differently |
//!
//! When the arguments contain `--steps`, only those after it are steps (the ones
//! before are a protocol's flags, e.g. Claude Code's). Without steps it echoes stdin.
//! It ends with exit code 0 after its last step.

use std::io::{BufRead, Read, Write};
use std::time::Duration;

/// The parent this process started with (see `wait-orphaned`).
static PARENT: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

fn main() {
    PARENT.get_or_init(std::os::unix::process::parent_id);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let steps: Vec<String> = match args.iter().position(|a| a == "--steps") {
        Some(at) => args[at + 1..].to_vec(),
        None => args,
    };
    if steps.is_empty() {
        run("echo-stdin");
    }
    for step in &steps {
        run(step);
    }
}

fn run(step: &str) {
    let (name, arg) = step.split_once(':').unwrap_or((step, ""));
    let number = || arg.parse::<u64>().unwrap_or_else(|_| panic!("step {step} needs a number"));
    let mut out = std::io::stdout().lock();
    match name {
        "env-steps" => {
            drop(out);
            let steps = std::env::var("FAKE_AGENT_STEPS").unwrap_or_default();
            for step in steps.split(';').filter(|s| !s.is_empty()) {
                run(step);
            }
        }
        "if-exists" => {
            let (path, then) = arg.split_once('=').expect("if-exists:<path>=<step>");
            if std::path::Path::new(path).exists() {
                drop(out);
                run(then);
            }
        }
        "touch" => {
            std::fs::write(arg, b"").expect("touch");
        }
        "wait-file" => {
            // A gate a test opens by creating the file; polled, as a test agent has no inotify.
            while !std::path::Path::new(arg).exists() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        "exit-if-exists" => {
            if std::path::Path::new(arg).exists() {
                out.flush().ok();
                std::process::exit(0);
            }
        }
        "out" => line(&mut out, arg),
        "err" => line(&mut std::io::stderr().lock(), arg),
        "read-line" => {
            let mut buf = String::new();
            std::io::stdin().lock().read_line(&mut buf).ok();
            line(&mut out, &format!("got: {}", buf.trim_end_matches('\n')));
        }
        "echo-stdin" => {
            for l in std::io::stdin().lock().lines() {
                let Ok(l) = l else { break };
                line(&mut out, &format!("echo: {l}"));
            }
        }
        "drain-stdin" => {
            let mut sink = Vec::new();
            std::io::stdin().lock().read_to_end(&mut sink).ok();
        }
        "count-stdin" => {
            // Reads stdin to its end; says how many bytes came, and how many were `arg`.
            let mut all = Vec::new();
            std::io::stdin().lock().read_to_end(&mut all).ok();
            let marked = all.iter().filter(|&&b| arg.as_bytes().first() == Some(&b)).count();
            line(&mut out, &format!("stdin: {} bytes, {marked} of {arg}", all.len()));
        }
        "wait-orphaned" => {
            // Until the parent has exited (this process was handed to another).
            while Some(&std::os::unix::process::parent_id()) == PARENT.get() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        "sleep" => std::thread::sleep(Duration::from_millis(number())),
        "hang" => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        "exit" => {
            out.flush().ok();
            std::process::exit(arg.parse().expect("exit code"));
        }
        "signal" => {
            out.flush().ok();
            let sig = signal(arg);
            // SAFETY: restoring the default action, then raising: plain libc calls.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
                libc::raise(sig);
            }
        }
        "ignore-term" => {
            // SAFETY: ignoring a signal is a plain libc call.
            unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
        }
        "flood-out" => flood(&mut out, number(), 1024),
        "flood-err" => flood(&mut std::io::stderr().lock(), number(), 1024),
        "blast-out" => flood(&mut out, number(), 64 * 1024),
        "wide-out" => {
            let text = "aé€😀\n".repeat(number() as usize);
            for piece in text.as_bytes().chunks(65521) {
                write(&mut out, piece);
            }
            out.flush().ok();
        }
        "numbered-out" => {
            let total = number();
            let mut block = Vec::with_capacity(64 * 1024);
            let mut written = 0u64;
            let mut next_line = 0u64;
            while written < total {
                block.clear();
                while block.len() < 64 * 1024 {
                    block.extend_from_slice(&numbered_line(next_line));
                    next_line += 1;
                }
                let n = (total - written).min(block.len() as u64) as usize;
                write(&mut out, &block[..n]);
                written += n as u64;
            }
            out.flush().ok();
        }
        "long-line" => {
            let chunk = vec![b'L'; 64 * 1024];
            let mut left = number() as usize;
            while left > 0 {
                let n = left.min(chunk.len());
                write(&mut out, &chunk[..n]);
                left -= n;
            }
            out.flush().ok();
        }
        "invalid-utf8" => write(&mut out, b"bad \xff\xfe bytes \xc3\n"),
        "spawn-sleepers" => {
            let me = std::env::current_exe().expect("own path");
            for _ in 0..number() {
                let child = std::process::Command::new(&me)
                    .arg("hang")
                    .stdin(std::process::Stdio::null())
                    .spawn()
                    .expect("spawn sleeper");
                line(&mut out, &format!("sleeper: {}", child.id()));
                std::mem::forget(child);
            }
        }
        "quiet-sleepers" => {
            let me = std::env::current_exe().expect("own path");
            let mut err = std::io::stderr().lock();
            for _ in 0..number() {
                let child = std::process::Command::new(&me)
                    .arg("hang")
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("spawn sleeper");
                line(&mut err, &format!("sleeper: {}", child.id()));
                std::mem::forget(child);
            }
        }
        "spawn-escapee" | "spawn-daemon" => {
            use std::os::unix::process::CommandExt;
            use std::process::Stdio;
            let me = std::env::current_exe().expect("own path");
            let mut command = std::process::Command::new(me);
            command.arg("hang").stdin(Stdio::null());
            if name == "spawn-daemon" {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
            // SAFETY: setsid is async-signal-safe, as pre_exec requires.
            unsafe {
                command.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            }
            let child = command.spawn().expect("spawn escapee");
            let what = if name == "spawn-daemon" { "daemon" } else { "escapee" };
            line(&mut out, &format!("{what}: {}", child.id()));
            std::mem::forget(child);
        }
        "child" => {
            let me = std::env::current_exe().expect("own path");
            let child = std::process::Command::new(me)
                .args(arg.split(','))
                .stdin(std::process::Stdio::null())
                .spawn()
                .expect("spawn child");
            line(&mut out, &format!("child: {}", child.id()));
            std::mem::forget(child);
        }
        "child-wait" => {
            let me = std::env::current_exe().expect("own path");
            std::process::Command::new(me)
                .args(arg.split(','))
                .stdin(std::process::Stdio::null())
                .status()
                .expect("run child");
        }
        "on-term-write" => {
            use std::os::fd::IntoRawFd;
            let file = std::fs::File::create(arg).expect("marker file");
            TERM_FD.store(file.into_raw_fd(), std::sync::atomic::Ordering::SeqCst);
            // SAFETY: the handler only calls async-signal-safe functions.
            unsafe { libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t) };
        }
        "close-stdout" => {
            out.flush().ok();
            // SAFETY: closing our own stdout descriptor.
            unsafe { libc::close(1) };
        }
        "json-blob" => {
            let size = number() as usize;
            let mut text = String::with_capacity(size + 32);
            text.push_str("{\"type\":\"blob\",\"data\":\"");
            text.extend(std::iter::repeat_n('x', size.saturating_sub(30)));
            text.push_str("\"}\n");
            write(&mut out, text.as_bytes());
            out.flush().ok();
        }
        "split" => {
            let text = format!("{arg}\n");
            let (a, b) = text.as_bytes().split_at(text.len() / 2);
            write(&mut out, a);
            out.flush().ok();
            std::thread::sleep(Duration::from_millis(30));
            write(&mut out, b);
            out.flush().ok();
        }
        "args" => {
            for a in std::env::args().skip(1) {
                line(&mut out, &format!("arg: {a}"));
            }
        }
        "pid" => line(&mut out, &format!("pid: {}", std::process::id())),
        "cwd" => line(&mut out, &format!("cwd: {}", std::env::current_dir().unwrap().display())),
        "env" => line(&mut out, &format!("{arg}={}", std::env::var(arg).unwrap_or_default())),
        other => panic!("unknown step {other}"),
    }
}

fn line(w: &mut impl Write, text: &str) {
    write(w, format!("{text}\n").as_bytes());
    w.flush().ok();
}

fn write(w: &mut impl Write, bytes: &[u8]) {
    if w.write_all(bytes).is_err() {
        // The reader went away: an agent would die of SIGPIPE here.
        std::process::exit(141);
    }
}

fn flood(w: &mut impl Write, bytes: u64, write_size: usize) {
    let mut text = vec![b'x'; 1023];
    text.push(b'\n');
    let block: Vec<u8> = text.iter().copied().cycle().take(write_size.max(1024)).collect();
    let mut left = bytes as usize;
    while left > 0 {
        let n = left.min(block.len());
        write(w, &block[..n]);
        left -= n;
    }
    w.flush().ok();
}

/// Line `n` of `numbered-out`: 1024 bytes, `n` as 16 hex digits, then `.`s and a
/// newline. Tests build the same lines (`support::numbered_line`) to compare logs
/// byte for byte: a dropped, repeated or reordered line shows, which with identical
/// lines it would not.
fn numbered_line(n: u64) -> [u8; 1024] {
    let mut line = [b'.'; 1024];
    line[..16].copy_from_slice(format!("{n:016x}").as_bytes());
    line[1023] = b'\n';
    line
}

static TERM_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_term(_: libc::c_int) {
    let fd = TERM_FD.load(std::sync::atomic::Ordering::SeqCst);
    // SAFETY: write and _exit are async-signal-safe.
    unsafe {
        libc::write(fd, b"cleaned\n".as_ptr().cast(), 8);
        libc::_exit(0);
    }
}

fn signal(name: &str) -> i32 {
    claude_session_spawner::process::signal_number(name).unwrap_or_else(|| panic!("unknown signal {name}"))
}
