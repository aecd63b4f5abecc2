//! A charter's forbidden pattern: a JavaScript-style regular expression (source and
//! flags) compiled for Rust's `regex` engine, refusing what that engine cannot honour
//! rather than silently matching something else.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use regex::{Regex, RegexBuilder};

/// Compiled patterns by (source, flags). Charters repeat from session to session and
/// compiling costs far more than spawning (~0.5 ms for `/secret/i`); a `Regex` clone
/// shares its compiled form. Bounded: cleared when full.
static COMPILED: LazyLock<Mutex<HashMap<(String, String), Regex>>> = LazyLock::new(Default::default);
const COMPILED_MAX: usize = 1024;

#[derive(Debug, Clone)]
pub struct ForbiddenPattern {
    source: String,
    flags: String,
    regex: Regex,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("/{pattern}/{flags} cannot be used: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub flags: String,
    pub reason: String,
}

impl ForbiddenPattern {
    /// `flags` are JavaScript's: `i`, `m`, `s` change matching; `u`, `v` are what
    /// Rust's engine does anyway; `g`, `y`, `d` only concern iteration and are ignored.
    pub fn new(source: &str, flags: &str) -> Result<Self, PatternError> {
        let key = (source.to_owned(), flags.to_owned());
        let cached = COMPILED.lock().ok().and_then(|c| c.get(&key).cloned());
        let regex = match cached {
            Some(regex) => regex,
            None => {
                let regex = Self::compile(source, flags)?;
                if let Ok(mut cache) = COMPILED.lock() {
                    if cache.len() >= COMPILED_MAX {
                        cache.clear();
                    }
                    cache.insert(key, regex.clone());
                }
                regex
            }
        };
        Ok(Self {
            source: source.to_owned(),
            flags: flags.to_owned(),
            regex,
        })
    }

    fn compile(source: &str, flags: &str) -> Result<Regex, PatternError> {
        let fail = |reason: String| PatternError {
            pattern: source.to_owned(),
            flags: flags.to_owned(),
            reason,
        };
        let mut builder = RegexBuilder::new(source);
        for flag in flags.chars() {
            match flag {
                'i' => builder.case_insensitive(true),
                'm' => builder.multi_line(true),
                's' => builder.dot_matches_new_line(true),
                'u' | 'v' | 'g' | 'y' | 'd' => &mut builder,
                other => return Err(fail(format!("unknown flag '{other}'"))),
            };
        }
        builder.size_limit(1 << 22).build().map_err(|e| {
            // The engine's message is a multi-line diagram; its last line says why.
            let text = e.to_string();
            let why = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(&text);
            fail(why.trim().trim_start_matches("error: ").to_owned())
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn flags(&self) -> &str {
        &self.flags
    }

    pub fn regex(&self) -> &Regex {
        &self.regex
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

impl std::fmt::Display for ForbiddenPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/{}/{}", self.source, self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_honoured() {
        let p = ForbiddenPattern::new("secret", "i").unwrap();
        assert!(p.is_match("my SECRET key"));
        let p = ForbiddenPattern::new("secret", "").unwrap();
        assert!(!p.is_match("my SECRET key"));
        let p = ForbiddenPattern::new("^token$", "m").unwrap();
        assert!(p.is_match("a\ntoken\nb"));
        let p = ForbiddenPattern::new("a.b", "s").unwrap();
        assert!(p.is_match("a\nb"));
        assert_eq!(ForbiddenPattern::new("x", "gu").unwrap().to_string(), "/x/gu");
    }

    #[test]
    fn lookaround_is_refused_with_a_reason() {
        let err = ForbiddenPattern::new("a(?=b)", "").unwrap_err();
        assert_eq!(err.pattern, "a(?=b)");
        assert!(err.reason.contains("look-around"), "{}", err.reason);
        assert!(err.to_string().starts_with("/a(?=b)/ cannot be used"));
    }

    #[test]
    fn unknown_flag_is_refused() {
        let err = ForbiddenPattern::new("a", "q").unwrap_err();
        assert!(err.reason.contains("unknown flag 'q'"));
    }
}
