//! The `text` protocol: the prompt and each input are written to stdin as they are,
//! and metrics are guessed from stdout with the TypeScript module's expressions
//! (case-insensitive), counted once per line and kind.
//!
//! The expressions are plain ASCII words, so they are found by folding each chunk's
//! bytes to lower case (`| 0x20`, which vectorises) and searching the folded bytes
//! with a SIMD multi-substring searcher (Teddy); each hit is then checked against
//! the original bytes. That is ASCII case-insensitive matching, which is what
//! JavaScript's `/i` does for ASCII patterns, at memory speed.

use std::sync::LazyLock;

use aho_corasick::packed;
use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

use super::{Findings, Launch, LaunchInput};
use crate::status::SessionMetrics;

/// Longest line kept across chunks for metrics; the rest of a longer line is not
/// scanned (the bytes still reach the log and the events).
const LINE_LIMIT: usize = 64 * 1024;

/// The contract's expressions, as (words, kind): `executed command`;
/// `modified file|wrote file|edited file`; `[Y/n]` or `(approve)`;
/// `escalated|escalating`; `error|failed|exception`.
const WORDS: [(&str, usize); 11] = [
    ("executed command", 0),
    ("modified file", 1),
    ("wrote file", 1),
    ("edited file", 1),
    ("[y/n]", 2),
    ("(approve)", 2),
    ("escalated", 3),
    ("escalating", 3),
    ("error", 4),
    ("failed", 4),
    ("exception", 4),
];

/// Bytes folded at a time (see `scan_lines`).
const FOLD_BLOCK: usize = 16 * 1024;

/// The longest word's length.
const LONGEST_WORD: usize = {
    let mut longest = 0;
    let mut i = 0;
    while i < WORDS.len() {
        if WORDS[i].0.len() > longest {
            longest = WORDS[i].0.len();
        }
        i += 1;
    }
    longest
};

/// The words folded as the haystack is, for the packed searcher.
static FOLDED: LazyLock<Option<packed::Searcher>> = LazyLock::new(|| {
    packed::Config::new()
        .match_kind(packed::MatchKind::LeftmostFirst)
        .builder()
        .extend(WORDS.iter().map(|(w, _)| fold(w.as_bytes())))
        .build()
});

/// Where no packed searcher can be built: an automaton that sees every byte.
static SCANNER: LazyLock<AhoCorasick> = LazyLock::new(|| {
    AhoCorasick::builder()
        .kind(Some(AhoCorasickKind::DFA))
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::LeftmostFirst)
        .build(WORDS.iter().map(|(w, _)| w))
        .expect("static patterns")
});

pub(super) fn launch(input: &LaunchInput<'_>) -> Launch {
    let mut first_input = input.prompt.as_bytes().to_vec();
    first_input.push(b'\n');
    Launch {
        args: Vec::new(),
        first_input,
    }
}

fn fold(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().map(|b| b | 0x20).collect()
}

pub(crate) struct Observer {
    metrics: SessionMetrics,
    /// The unfinished last line of what was seen so far (at most `LINE_LIMIT`).
    carry: Vec<u8>,
    /// Reused for the folded copy of what is scanned.
    folded: Vec<u8>,
    /// The rest of the current line is past `LINE_LIMIT` and not scanned.
    skipping: bool,
}

impl Observer {
    pub(super) fn new() -> Self {
        Self {
            metrics: SessionMetrics::default(),
            carry: Vec::new(),
            folded: Vec::new(),
            skipping: false,
        }
    }

    pub(super) fn on_stdout(&mut self, chunk: &[u8], found: &mut Findings) {
        let before = self.metrics;
        self.scan_chunk(chunk);
        if self.metrics != before {
            found.metrics = Some(self.metrics);
        }
    }

    fn scan_chunk(&mut self, chunk: &[u8]) {
        let Some(first_nl) = chunk.iter().position(|&b| b == b'\n') else {
            self.keep(chunk);
            return;
        };
        // The line that started before this chunk ends here.
        if !self.skipping {
            self.carry.extend_from_slice(&chunk[..first_nl]);
            scan_lines(&self.carry, &mut self.folded, &mut self.metrics);
        }
        self.carry.clear();
        self.skipping = false;
        let rest = &chunk[first_nl + 1..];
        let last_nl = rest.iter().rposition(|&b| b == b'\n');
        let (complete, tail) = match last_nl {
            Some(i) => rest.split_at(i + 1),
            None => rest.split_at(0),
        };
        scan_lines(complete, &mut self.folded, &mut self.metrics);
        self.keep(tail);
    }

    pub(super) fn on_eof(&mut self, found: &mut Findings) {
        let before = self.metrics;
        if !self.skipping {
            scan_lines(&self.carry, &mut self.folded, &mut self.metrics);
        }
        if self.metrics != before {
            found.metrics = Some(self.metrics);
        }
        self.carry = Vec::new();
        self.folded = Vec::new();
    }

    fn keep(&mut self, bytes: &[u8]) {
        if self.skipping {
            return;
        }
        if self.carry.len() + bytes.len() > LINE_LIMIT {
            self.carry.clear();
            self.skipping = true;
        } else {
            self.carry.extend_from_slice(bytes);
        }
    }
}

/// Counts each kind once per line in `text`, a run of whole lines.
fn scan_lines(text: &[u8], folded: &mut Vec<u8>, metrics: &mut SessionMetrics) {
    let mut counter = Counter::default();
    match FOLDED.as_ref() {
        Some(searcher) => {
            // Folded a block at a time, so the copy stays in the CPU's nearest cache.
            // A block reaches past its end by a word's length less one; a match that
            // starts there is left to the next block, which starts where the search
            // of the whole text would go on (the end of the last match, if later):
            // the same matches as one search over everything.
            let mut start = 0;
            while start < text.len() {
                let end = (start + FOLD_BLOCK).min(text.len());
                let reach = (end + LONGEST_WORD - 1).min(text.len());
                let mut resume = end;
                folded.clear();
                folded.extend(text[start..reach].iter().map(|b| b | 0x20));
                for m in searcher.find_iter(folded.as_slice()) {
                    let at = start + m.start();
                    if at >= end {
                        break;
                    }
                    resume = resume.max(start + m.end());
                    let (word, kind) = WORDS[m.pattern().as_usize()];
                    // `[` folds to `{` (and `]` to `}`), so `{y/n}` folds like `[y/n]`:
                    // the original bytes decide.
                    if text[at..start + m.end()].eq_ignore_ascii_case(word.as_bytes()) {
                        counter.count(text, at, kind, metrics);
                    }
                }
                start = resume;
            }
        }
        None => {
            for m in SCANNER.find_iter(text) {
                counter.count(text, m.start(), WORDS[m.pattern().as_usize()].1, metrics);
            }
        }
    }
}

/// Counts a kind at most once per line, for matches visited in order.
#[derive(Default)]
struct Counter {
    /// Start of the line where each kind was last counted, plus one (0: never).
    counted_at: [usize; 5],
    /// The current line's start, found by looking only at bytes not looked at yet.
    line_start: usize,
    looked_to: usize,
}

impl Counter {
    fn count(&mut self, text: &[u8], at: usize, kind: usize, metrics: &mut SessionMetrics) {
        if let Some(nl) = text[self.looked_to..at].iter().rposition(|&b| b == b'\n') {
            self.line_start = self.looked_to + nl + 1;
        }
        self.looked_to = at;
        if self.counted_at[kind] == self.line_start + 1 {
            return;
        }
        self.counted_at[kind] = self.line_start + 1;
        match kind {
            0 => metrics.commands_executed += 1,
            1 => metrics.files_modified += 1,
            2 => metrics.approval_prompts += 1,
            3 => metrics.escalations += 1,
            _ => metrics.errors += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics_of(chunks: &[&[u8]]) -> SessionMetrics {
        let mut o = Observer::new();
        for c in chunks {
            o.on_stdout(c, &mut Findings::default());
        }
        o.on_eof(&mut Findings::default());
        o.metrics
    }

    #[test]
    fn counts_once_per_line_and_kind_across_chunks() {
        let m = metrics_of(&[
            b"Executed command: ls\nWrote file a.txt and modified file b",
            b".txt\nContinue? [Y/n]\nError: failed twice\n(approve) escalating now\n",
            b"all fine\nan EXCEPTION",
        ]);
        assert_eq!(m.commands_executed, 1);
        assert_eq!(m.files_modified, 1, "two phrases on one line count once");
        assert_eq!(m.approval_prompts, 2);
        assert_eq!(m.escalations, 1);
        assert_eq!(m.errors, 2, "'Error: failed' once, the unterminated last line once");
    }

    #[test]
    fn a_word_cut_by_a_chunk_boundary_is_found() {
        let m = metrics_of(&[b"first line\nsomething err", b"or happened\n", b"exec", b"uted com", b"mand\n"]);
        assert_eq!((m.errors, m.commands_executed), (1, 1));
    }

    #[test]
    fn the_same_word_on_separate_lines_counts_per_line() {
        let m = metrics_of(&[b"error\nerror\n\nERROR"]);
        assert_eq!(m.errors, 3);
    }

    #[test]
    fn folding_does_not_confuse_braces_with_brackets() {
        let m = metrics_of(&[b"pick {y/n} or {approve}\n[Y/N]?\n"]);
        assert_eq!(m.approval_prompts, 1);
    }

    #[test]
    fn both_searchers_agree() {
        let text = b"Executed command x\nERROR and Failed\nwrote FILE, (Approve) [y/N]\nescalating\n";
        let mut fast = SessionMetrics::default();
        scan_lines(text, &mut Vec::new(), &mut fast);
        let mut slow = SessionMetrics::default();
        let mut counter = Counter::default();
        for m in SCANNER.find_iter(&text[..]) {
            counter.count(text, m.start(), WORDS[m.pattern().as_usize()].1, &mut slow);
        }
        assert_eq!(fast, slow);
        assert_eq!((fast.commands_executed, fast.errors, fast.files_modified, fast.approval_prompts, fast.escalations), (1, 1, 1, 1, 1));
    }

    #[test]
    fn blocks_find_what_one_search_finds() {
        // Words, overlapping ones ("modified filerror") and lines, laid so that
        // block boundaries fall inside and between them.
        let mut text = Vec::new();
        let pieces: [&[u8]; 6] = [b"modified filerror ", b"Executed Command\n", b"x", b"(approve) [Y/n] ", b"escalating\n", b"wrote file exception failed\n"];
        let mut i = 0;
        while text.len() < 5 * FOLD_BLOCK {
            text.extend_from_slice(pieces[i % pieces.len()]);
            i += 1;
        }
        let mut blocked = SessionMetrics::default();
        scan_lines(&text, &mut Vec::new(), &mut blocked);
        let searcher = FOLDED.as_ref().expect("a packed searcher on this machine");
        let whole = fold(&text);
        let mut once = SessionMetrics::default();
        let mut counter = Counter::default();
        for m in searcher.find_iter(whole.as_slice()) {
            let (word, kind) = WORDS[m.pattern().as_usize()];
            if text[m.start()..m.end()].eq_ignore_ascii_case(word.as_bytes()) {
                counter.count(&text, m.start(), kind, &mut once);
            }
        }
        assert_eq!(blocked, once);
        assert!(blocked.errors > 0 && blocked.commands_executed > 0 && blocked.approval_prompts > 0);
    }

    #[test]
    fn the_rest_of_an_overlong_line_is_not_scanned() {
        let long = vec![b'x'; LINE_LIMIT + 10];
        let m = metrics_of(&[&long, b" error\nerror\n"]);
        assert_eq!(m.errors, 1, "only the line after the overlong one");
    }

    #[test]
    fn prompt_goes_to_stdin_with_a_newline() {
        let config = crate::config::SessionConfig::default();
        let l = launch(&LaunchInput { config: &config, claude_md: "", prompt: "do it", conversation_id: "x" });
        assert!(l.args.is_empty());
        assert_eq!(l.first_input, b"do it\n");
    }
}
