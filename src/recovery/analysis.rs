//! Why a session crashed: facts first (the exit status, the spawner's own timeout, the
//! kernel's OOM counter, Claude Code's structured retries), the contract's text rules
//! last. Every analysis says which evidence decided it.

use std::fmt;

use crate::status::SessionState;

/// The contract's crash types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashType {
    Oom,
    Timeout,
    Segfault,
    Network,
    Permission,
    Unknown,
}

impl CrashType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oom => "oom",
            Self::Timeout => "timeout",
            Self::Segfault => "segfault",
            Self::Network => "network",
            Self::Permission => "permission",
            Self::Unknown => "unknown",
        }
    }
}

impl std::str::FromStr for CrashType {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        [Self::Oom, Self::Timeout, Self::Segfault, Self::Network, Self::Permission, Self::Unknown]
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or(())
    }
}

impl fmt::Display for CrashType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is known about a crashed session.
#[derive(Debug, Clone, Default)]
pub struct CrashFacts {
    /// How the session ended.
    pub state: Option<SessionState>,
    /// The signal that killed the agent, from its exit status (`SIGKILL`, ...).
    pub signal: Option<String>,
    pub exit_code: Option<i32>,
    /// OOM kills counted by the session's memory cgroup while it ran (`None` when
    /// the cgroup is unknown or unreadable).
    pub oom_kills: Option<u64>,
    /// The cgroup file the count came from, for the evidence.
    pub oom_source: Option<String>,
    /// The newest output: stdout then stderr (the contract's "last output and stack
    /// trace").
    pub output: String,
}

/// What a caller that keeps only the contract's report (not the session) knows:
/// `state`, `signal`, `exitCode`, `lastOutput` and `stackTrace` of a report in the
/// contract's JSON shape.
impl CrashFacts {
    /// What a [`CrashReport`](crate::status::CrashReport) alone tells.
    pub fn from_report(report: &crate::status::CrashReport) -> Self {
        Self {
            state: None,
            signal: report.signal.clone(),
            exit_code: report.exit_code,
            output: format!("{}\n{}", report.last_output, report.stack_trace.as_deref().unwrap_or_default()),
            ..Self::default()
        }
    }

    pub fn from_report_json(report: &serde_json::Value) -> Self {
        let text = |k: &str| report[k].as_str().unwrap_or_default();
        Self {
            state: report["state"].as_str().and_then(|s| s.parse().ok()),
            signal: report["signal"].as_str().map(str::to_owned),
            exit_code: report["exitCode"].as_i64().and_then(|c| i32::try_from(c).ok()),
            output: format!("{}\n{}", text("lastOutput"), text("stackTrace")),
            ..Self::default()
        }
    }
}

/// The contract's `CrashAnalysis`, plus the evidence that decided it.
#[derive(Debug, Clone, PartialEq)]
pub struct CrashAnalysis {
    pub crash_type: CrashType,
    pub root_cause: String,
    pub recommendation: String,
    /// 0 to 1.
    pub confidence: f64,
    pub suggested_fixes: Vec<String>,
    /// What decided the type, e.g. `exit status: signal SIGSEGV`.
    pub evidence: String,
    /// The signal the agent died of, from its exit status or read from an exit code
    /// 128+N.
    pub signal: Option<String>,
}

impl CrashAnalysis {
    /// The contract's JSON shape, plus `evidence` and `signal`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "crashType": self.crash_type.as_str(),
            "rootCause": self.root_cause,
            "recommendation": self.recommendation,
            "confidence": self.confidence,
            "suggestedFixes": self.suggested_fixes,
            "evidence": self.evidence,
            "signal": self.signal,
        })
    }

    /// Reads [`CrashAnalysis::to_json`]'s shape; missing fields are empty (an
    /// unknown type is `unknown`).
    pub fn from_json(v: &serde_json::Value) -> Self {
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        Self {
            crash_type: v["crashType"].as_str().and_then(|t| t.parse().ok()).unwrap_or(CrashType::Unknown),
            root_cause: text("rootCause"),
            recommendation: text("recommendation"),
            confidence: v["confidence"].as_f64().unwrap_or(0.5),
            suggested_fixes: v["suggestedFixes"]
                .as_array()
                .map(|a| a.iter().filter_map(|f| f.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
            evidence: text("evidence"),
            signal: v["signal"].as_str().map(str::to_owned),
        }
    }
}

/// The signal an exit code 128+N stands for, when N is a signal a process dies of
/// (shells, and agents that trap a signal, such as Claude Code exiting 143 on
/// SIGTERM, report deaths this way).
pub fn signal_from_exit_code(code: i32) -> Option<&'static str> {
    // Signals whose default action is not to end the process do not explain an exit.
    const NOT_DEADLY: [i32; 8] =
        [libc::SIGCHLD, libc::SIGCONT, libc::SIGSTOP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU, libc::SIGURG, libc::SIGWINCH];
    if code > 128 && code < 128 + 32 && !NOT_DEADLY.contains(&(code - 128)) {
        crate::process::known_signal_name(code - 128)
    } else {
        None
    }
}

/// The first of `needles` found in `haystack` as whole words ("oom" is not in "room").
fn contains_any(haystack: &str, needles: &[&str]) -> Option<String> {
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    needles
        .iter()
        .find(|needle| {
            haystack.match_indices(**needle).any(|(at, _)| {
                !is_word(haystack[..at].chars().next_back()) && !is_word(haystack[at + needle.len()..].chars().next())
            })
        })
        .map(|n| (*n).to_owned())
}

const OOM_WORDS: &[&str] = &["out of memory", "oom", "allocation failed", "cannot allocate memory", "enomem"];
const NETWORK_WORDS: &[&str] = &["econnrefused", "etimedout", "econnreset", "enotfound", "eai_again"];
const PERMISSION_WORDS: &[&str] = &["permission denied", "eacces", "eperm", "operation not permitted"];

/// An HTTP 5xx status in the output (`status 503`, `HTTP/1.1 502`, `"status":500`).
fn http_5xx(lower: &str) -> Option<String> {
    let bytes = lower.as_bytes();
    for marker in ["status ", "status\":", "status: ", "http/1.1 ", "http/2 ", "error_status\":"] {
        let mut from = 0;
        while let Some(at) = lower[from..].find(marker) {
            let start = from + at + marker.len();
            let digits = &bytes[start..bytes.len().min(start + 3)];
            if digits.len() == 3 && digits[0] == b'5' && digits.iter().all(u8::is_ascii_digit) {
                return Some(format!("HTTP {}", std::str::from_utf8(digits).unwrap_or("5xx")));
            }
            from = start;
        }
    }
    None
}

fn api_retries(output: &str) -> usize {
    output.matches("\"subtype\":\"api_retry\"").count()
}

fn analysis(crash_type: CrashType, confidence: f64, evidence: String, note: Option<&str>, signal: Option<String>) -> CrashAnalysis {
    let (cause, recommendation, fixes): (&str, &str, [&str; 2]) = match crash_type {
        CrashType::Oom => (
            "The agent ran out of memory",
            "Give the session more memory or split the task into smaller ones",
            ["Raise the memory limit of the daemon's cgroup or container", "Split the task so each session reads less at once"],
        ),
        CrashType::Timeout => (
            "The session ran longer than its time limit",
            "Allow more time or narrow the task",
            ["Raise the session's timeout (recovery grows it by timeoutGrowth)", "Break the task into steps that each finish in time"],
        ),
        CrashType::Segfault => (
            "The agent process crashed (a memory fault or an abort)",
            "Restart the session; if it repeats, update or reinstall the agent CLI",
            ["Update the Claude Code CLI to the newest version", "Check native add-ons and the Node version the CLI runs on"],
        ),
        CrashType::Network => (
            "The agent could not reach the model API or another service",
            "Retry after a delay; check connectivity and the API endpoint",
            ["Check ANTHROPIC_BASE_URL, proxies and DNS", "Retry with a longer delay between attempts"],
        ),
        CrashType::Permission => (
            "The agent was refused access to a file or an operation",
            "Check the working directory's ownership and the charter's allowed tools",
            ["Fix the permissions of the working directory", "Run the daemon as a user that owns the files the task needs"],
        ),
        CrashType::Unknown => (
            "The cause of the crash could not be determined",
            "Investigate manually: read the crash dump's output and exit status",
            ["Read stdout.log and stderr.log in the session directory", "Run the task again with verbose output"],
        ),
    };
    let recommendation = if confidence < 0.6 {
        "Investigate manually: the evidence is weak".to_owned()
    } else {
        recommendation.to_owned()
    };
    let root_cause = match note {
        Some(note) => format!("{cause} ({note})"),
        None => cause.to_owned(),
    };
    CrashAnalysis {
        crash_type,
        root_cause,
        recommendation,
        confidence,
        suggested_fixes: fixes.iter().map(|s| (*s).to_owned()).collect(),
        evidence,
        signal,
    }
}

/// Decides the crash type of `facts`.
pub fn analyze(facts: &CrashFacts) -> CrashAnalysis {
    let lower = facts.output.to_lowercase();
    let (signal, from_code) = match (&facts.signal, facts.exit_code.and_then(signal_from_exit_code)) {
        (Some(s), _) => (Some(s.clone()), false),
        (None, Some(s)) => (Some(s.to_owned()), true),
        (None, None) => (None, false),
    };
    let how = |sig: &str| match (from_code, facts.exit_code) {
        (true, Some(code)) => format!("exit code {code} = 128 + {sig}"),
        _ => format!("exit status: signal {sig}"),
    };
    let done = |t, c, evidence: String, note: Option<&str>| analysis(t, c, evidence, note, signal.clone());

    if facts.state == Some(SessionState::Timeout) {
        return done(CrashType::Timeout, 1.0, "the spawner's timeout ended the session".into(), None);
    }
    let oom_record = facts.oom_kills.filter(|&n| n > 0).map(|n| {
        format!("{} counted {n} OOM kill(s) while the session ran", facts.oom_source.as_deref().unwrap_or("the memory cgroup"))
    });
    match signal.as_deref() {
        Some(sig @ ("SIGSEGV" | "SIGBUS" | "SIGILL" | "SIGFPE")) => {
            return done(CrashType::Segfault, 0.95, how(sig), None);
        }
        Some(sig @ "SIGABRT") => {
            // V8 aborts when its heap is exhausted, after saying so.
            if let Some(word) = contains_any(&lower, OOM_WORDS) {
                return done(CrashType::Oom, 0.9, format!("{}, and the output says \"{word}\"", how(sig)), None);
            }
            return done(CrashType::Segfault, 0.9, how(sig), None);
        }
        Some(sig @ "SIGKILL") => {
            if let Some(record) = oom_record {
                return done(CrashType::Oom, 0.95, format!("{}; {record}", how(sig)), None);
            }
            if let Some(word) = contains_any(&lower, OOM_WORDS) {
                return done(CrashType::Oom, 0.75, format!("{}, and the output says \"{word}\"", how(sig)), None);
            }
            let checked = match &facts.oom_source {
                Some(source) => format!("{source} counted no OOM kill"),
                None => "no memory cgroup to ask".to_owned(),
            };
            return done(
                CrashType::Unknown,
                0.5,
                format!("{}; {checked}", how(sig)),
                Some("killed by SIGKILL that the spawner did not send, with no record of the OOM killer"),
            );
        }
        _ => {}
    }
    if let Some(record) = oom_record {
        return done(CrashType::Oom, 0.9, record, None);
    }
    let retries = api_retries(&facts.output);
    if retries >= 2 {
        return done(CrashType::Network, 0.85, format!("Claude Code retried the API {retries} times"), None);
    }
    if let Some(word) = contains_any(&lower, NETWORK_WORDS) {
        return done(CrashType::Network, 0.85, format!("the output says \"{word}\""), None);
    }
    if let Some(status) = http_5xx(&lower) {
        return done(CrashType::Network, 0.8, format!("the output reports {status}"), None);
    }
    if let Some(word) = contains_any(&lower, PERMISSION_WORDS) {
        return done(CrashType::Permission, 0.9, format!("the output says \"{word}\""), None);
    }
    // The contract's text rules, first match wins.
    let text = |word: String| format!("text rule: the output says \"{word}\"");
    if let Some(word) = contains_any(&lower, OOM_WORDS) {
        return done(CrashType::Oom, 0.9, text(word), None);
    }
    if let Some(word) = contains_any(&lower, &["timeout", "timed out", "deadline exceeded"]) {
        return done(CrashType::Timeout, 0.85, text(word), None);
    }
    if let Some(sig @ "SIGTERM") = signal.as_deref() {
        return done(CrashType::Timeout, 0.85, format!("text rule: {}", how(sig)), Some("stopped by SIGTERM that the spawner did not send"));
    }
    if let Some(word) = contains_any(&lower, &["sigsegv", "segmentation fault"]) {
        return done(CrashType::Segfault, 0.95, text(word), None);
    }
    if let Some(word) = contains_any(&lower, &["network", "connection"]) {
        return done(CrashType::Network, 0.8, text(word), None);
    }
    let evidence = match (&signal, facts.exit_code) {
        (Some(sig), _) => how(sig),
        (None, Some(code)) => format!("exit code {code}; no rule matched"),
        (None, None) => "no rule matched".to_owned(),
    };
    done(CrashType::Unknown, 0.5, evidence, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(signal: Option<&str>, exit_code: Option<i32>, output: &str) -> CrashFacts {
        CrashFacts {
            state: Some(SessionState::Crashed),
            signal: signal.map(str::to_owned),
            exit_code,
            output: output.to_owned(),
            ..CrashFacts::default()
        }
    }

    #[test]
    fn exit_status_decides_before_text() {
        let a = analyze(&facts(Some("SIGSEGV"), None, "connection refused"));
        assert_eq!((a.crash_type, a.confidence), (CrashType::Segfault, 0.95));
        assert_eq!(a.evidence, "exit status: signal SIGSEGV");
        let a = analyze(&facts(None, Some(139), ""));
        assert_eq!(a.crash_type, CrashType::Segfault);
        assert_eq!(a.evidence, "exit code 139 = 128 + SIGSEGV");
        assert_eq!(a.signal.as_deref(), Some("SIGSEGV"));
    }

    #[test]
    fn sigkill_is_oom_only_with_a_record() {
        let mut f = facts(None, Some(137), "");
        let a = analyze(&f);
        assert_eq!(a.crash_type, CrashType::Unknown);
        assert!(a.root_cause.contains("did not send"), "{}", a.root_cause);
        assert!(a.recommendation.starts_with("Investigate manually"));
        f.oom_kills = Some(1);
        f.oom_source = Some("/sys/fs/cgroup/x/memory.events".into());
        let a = analyze(&f);
        assert_eq!((a.crash_type, a.confidence), (CrashType::Oom, 0.95));
        assert!(a.evidence.contains("memory.events counted 1 OOM kill"), "{}", a.evidence);
        let a = analyze(&facts(Some("SIGKILL"), None, "FATAL ERROR: JavaScript heap out of memory"));
        assert_eq!((a.crash_type, a.confidence), (CrashType::Oom, 0.75));
    }

    #[test]
    fn abort_after_heap_exhaustion_is_oom() {
        let a = analyze(&facts(Some("SIGABRT"), None, "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory"));
        assert_eq!(a.crash_type, CrashType::Oom);
        assert_eq!(analyze(&facts(Some("SIGABRT"), None, "")).crash_type, CrashType::Segfault);
    }

    #[test]
    fn analyses_round_trip_through_json() {
        let a = analyze(&facts(None, Some(139), ""));
        assert_eq!(CrashAnalysis::from_json(&a.to_json()), a);
        let report = serde_json::json!({"signal": "SIGBUS", "lastOutput": "x", "stackTrace": "y"});
        let f = CrashFacts::from_report_json(&report);
        assert_eq!((f.signal.as_deref(), f.output.as_str()), (Some("SIGBUS"), "x\ny"));
    }

    #[test]
    fn the_spawners_timeout_is_certain() {
        let mut f = facts(None, Some(143), "");
        f.state = Some(SessionState::Timeout);
        let a = analyze(&f);
        assert_eq!((a.crash_type, a.confidence), (CrashType::Timeout, 1.0));
    }

    #[test]
    fn network_from_retries_errors_and_5xx() {
        let retry = r#"{"type":"system","subtype":"api_retry","attempt":1}"#;
        let a = analyze(&facts(None, Some(1), &format!("{retry}\n{retry}\n")));
        assert_eq!(a.crash_type, CrashType::Network);
        assert_eq!(a.evidence, "Claude Code retried the API 2 times");
        assert_eq!(analyze(&facts(None, Some(1), "connect ECONNREFUSED 127.0.0.1:9")).crash_type, CrashType::Network);
        let a = analyze(&facts(None, Some(1), "API Error: status 503 overloaded"));
        assert_eq!((a.crash_type, a.evidence.as_str()), (CrashType::Network, "the output reports HTTP 503"));
        assert_eq!(analyze(&facts(None, Some(1), "status 404")).crash_type, CrashType::Unknown);
    }

    #[test]
    fn permission_and_text_fallbacks() {
        assert_eq!(analyze(&facts(None, Some(1), "open /x: Permission denied")).crash_type, CrashType::Permission);
        let a = analyze(&facts(None, Some(1), "fatal: out of memory"));
        assert_eq!((a.crash_type, a.confidence), (CrashType::Oom, 0.9));
        assert!(a.evidence.starts_with("text rule"));
        assert_eq!(analyze(&facts(None, Some(1), "deadline exceeded")).crash_type, CrashType::Timeout);
        let a = analyze(&facts(None, Some(143), ""));
        assert_eq!((a.crash_type, a.confidence), (CrashType::Timeout, 0.85));
        assert!(a.root_cause.contains("did not send"));
        let a = analyze(&facts(None, Some(3), "nothing useful"));
        assert_eq!((a.crash_type, a.confidence), (CrashType::Unknown, 0.5));
        assert_eq!(a.suggested_fixes.len(), 2);
    }
}
