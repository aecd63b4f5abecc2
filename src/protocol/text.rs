//! The `text` protocol: the prompt and each input are written to stdin as they are,
//! and metrics are guessed from stdout with the TypeScript module's expressions
//! (case-insensitive), counted once per line and kind.

use std::sync::LazyLock;

use regex::{Regex, RegexSet};

use super::{Findings, Launch, LaunchInput};
use crate::output::{Line, LineSplitter};

/// Longest line scanned for metrics; longer lines are skipped (the bytes still reach
/// the log and the events).
const LINE_LIMIT: usize = 64 * 1024;

const KINDS: [&str; 5] = [
    r"executed command",
    r"modified file|wrote file|edited file",
    r"\[Y/n\]|\(approve\)",
    r"escalated|escalating",
    r"error|failed|exception",
];

/// One expression for all kinds finds the few lines worth a closer look quickly.
static ANY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!("(?i){}", KINDS.join("|"))).expect("static pattern")
});
static EACH: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new(KINDS.iter().map(|k| format!("(?i){k}"))).expect("static patterns")
});

pub(super) fn launch(input: &LaunchInput<'_>) -> Launch {
    let mut first_input = input.prompt.as_bytes().to_vec();
    first_input.push(b'\n');
    Launch {
        args: Vec::new(),
        first_input,
    }
}

pub(crate) struct Observer {
    lines: LineSplitter,
}

impl Observer {
    pub(super) fn new() -> Self {
        Self {
            lines: LineSplitter::new(LINE_LIMIT),
        }
    }

    pub(super) fn on_stdout(&mut self, chunk: &[u8], found: &mut Findings) {
        self.lines.feed(chunk, |line| scan(line, found));
    }

    pub(super) fn on_eof(&mut self, found: &mut Findings) {
        self.lines.finish(|line| scan(line, found));
    }
}

fn scan(line: Line<'_>, found: &mut Findings) {
    let Line::Complete(bytes) = line else { return };
    let text = String::from_utf8_lossy(bytes);
    if !ANY.is_match(&text) {
        return;
    }
    let m = &mut found.metrics;
    for kind in EACH.matches(&text).iter() {
        match kind {
            0 => m.commands_executed += 1,
            1 => m.files_modified += 1,
            2 => m.approval_prompts += 1,
            3 => m.escalations += 1,
            _ => m.errors += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_once_per_line_and_kind_across_chunks() {
        let mut o = Observer::new();
        let mut f = Findings::default();
        o.on_stdout(b"Executed command: ls\nWrote file a.txt and modified file b", &mut f);
        o.on_stdout(b".txt\nContinue? [Y/n]\nError: failed twice\n(approve) escalating now\n", &mut f);
        o.on_stdout(b"all fine\nan EXCEPTION", &mut f);
        o.on_eof(&mut f);
        let m = f.metrics;
        assert_eq!(m.commands_executed, 1);
        assert_eq!(m.files_modified, 1, "two phrases on one line count once");
        assert_eq!(m.approval_prompts, 2);
        assert_eq!(m.escalations, 1);
        assert_eq!(m.errors, 2, "'Error: failed' once, the unterminated last line once");
    }

    #[test]
    fn prompt_goes_to_stdin_with_a_newline() {
        let config = crate::config::SessionConfig::default();
        let l = launch(&LaunchInput { config: &config, claude_md: "", prompt: "do it", conversation_id: "x" });
        assert!(l.args.is_empty());
        assert_eq!(l.first_input, b"do it\n");
    }
}
