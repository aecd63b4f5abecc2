//! Just enough of the POSIX shell grammar to know which commands a Bash tool call
//! would run: every simple command of the script, including those inside `$(...)`,
//! backticks, process substitutions and heredoc bodies, split at `;`, `&&`, `||`,
//! `|`, `&`, newlines and parentheses, with quotes removed and line continuations
//! joined. What it cannot read with certainty it reports as an error, and the
//! policy then refuses the command.

use std::fmt;

/// One word of a command, after quote removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    /// No unquoted expansion (`$x`, `$(...)`, backticks) and no unquoted glob in it:
    /// what runs is exactly `text`.
    pub literal: bool,
}

/// A simple command: its words, redirection targets left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    pub words: Vec<Word>,
}

impl Command {
    pub fn texts(&self) -> Vec<&str> {
        self.words.iter().map(|w| w.text.as_str()).collect()
    }
}

/// Why a script could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Nesting deeper than this (`$(` in `$(` in ...) is not followed: an error.
const MAX_DEPTH: usize = 12;

/// Every simple command `script` runs, in order of appearance (a substitution's
/// commands come right after the command that contains it).
pub fn parse(script: &str) -> Result<Vec<Command>, ParseError> {
    parse_at(script, 0)
}

pub(crate) fn parse_at(script: &str, depth: usize) -> Result<Vec<Command>, ParseError> {
    if depth > MAX_DEPTH {
        return Err(ParseError("nested too deeply".into()));
    }
    let mut p = Parser {
        chars: script.chars().collect(),
        at: 0,
        depth,
        commands: Vec::new(),
        nested: Vec::new(),
        current: Command::default(),
        word: String::new(),
        word_started: false,
        word_literal: true,
        skip_next_word: false,
        heredocs: Vec::new(),
        pending_heredoc_word: false,
    };
    p.run()?;
    Ok(p.commands)
}

struct Heredoc {
    delimiter: String,
    /// Quoted delimiter: the body is not expanded.
    quoted: bool,
    strip_tabs: bool,
}

struct Parser {
    chars: Vec<char>,
    at: usize,
    depth: usize,
    commands: Vec<Command>,
    /// Commands found inside substitutions of the current command.
    nested: Vec<Command>,
    current: Command,
    word: String,
    word_started: bool,
    word_literal: bool,
    /// The next word is a redirection target, not an argument.
    skip_next_word: bool,
    heredocs: Vec<Heredoc>,
    /// The next word is a heredoc's delimiter.
    pending_heredoc_word: bool,
}

impl Parser {
    fn peek(&self, offset: usize) -> Option<char> {
        self.chars.get(self.at + offset).copied()
    }

    fn run(&mut self) -> Result<(), ParseError> {
        while let Some(c) = self.peek(0) {
            match c {
                ' ' | '\t' => {
                    self.end_word();
                    self.at += 1;
                }
                '\n' => {
                    self.end_word();
                    self.end_command();
                    self.at += 1;
                    self.read_heredoc_bodies()?;
                }
                '\\' => {
                    match self.peek(1) {
                        Some('\n') => {}
                        Some(next) => self.push(next, true),
                        None => self.push('\\', true),
                    }
                    self.at += 2;
                }
                '\'' => self.single_quoted()?,
                '"' => self.double_quoted()?,
                '$' => self.dollar(false)?,
                '`' => self.backtick()?,
                '#' if !self.word_started => {
                    while self.peek(0).is_some_and(|c| c != '\n') {
                        self.at += 1;
                    }
                }
                ';' | '|' => {
                    self.end_word();
                    self.end_command();
                    self.at += 1;
                    while matches!(self.peek(0), Some(';' | '|' | '&')) {
                        self.at += 1;
                    }
                }
                '&' => {
                    if self.peek(1) == Some('>') {
                        self.end_word();
                        self.at += 2;
                        if self.peek(0) == Some('>') {
                            self.at += 1;
                        }
                        self.skip_next_word = true;
                    } else {
                        self.end_word();
                        self.end_command();
                        self.at += 1;
                        if self.peek(0) == Some('&') {
                            self.at += 1;
                        }
                    }
                }
                '<' | '>' => self.redirection()?,
                '(' | ')' => {
                    self.end_word();
                    self.end_command();
                    self.at += 1;
                }
                c => {
                    if matches!(c, '*' | '?' | '[') {
                        self.word_literal = false;
                    }
                    self.push(c, true);
                    self.at += 1;
                }
            }
        }
        self.end_word();
        self.end_command();
        if let Some(h) = self.heredocs.first() {
            return Err(ParseError(format!("heredoc `{}` has no body", h.delimiter)));
        }
        Ok(())
    }

    fn push(&mut self, c: char, _quoted: bool) {
        self.word.push(c);
        self.word_started = true;
    }

    fn end_word(&mut self) {
        if !self.word_started {
            return;
        }
        let text = std::mem::take(&mut self.word);
        let literal = std::mem::replace(&mut self.word_literal, true);
        self.word_started = false;
        if self.pending_heredoc_word {
            self.pending_heredoc_word = false;
            if let Some(h) = self.heredocs.last_mut() {
                h.delimiter = text;
            }
            return;
        }
        if std::mem::take(&mut self.skip_next_word) {
            return;
        }
        self.current.words.push(Word { text, literal });
    }

    fn end_command(&mut self) {
        let command = std::mem::take(&mut self.current);
        if !command.words.is_empty() {
            self.commands.push(command);
        }
        self.commands.append(&mut self.nested);
    }

    fn single_quoted(&mut self) -> Result<(), ParseError> {
        self.at += 1;
        self.word_started = true;
        loop {
            match self.peek(0) {
                None => return Err(ParseError("unterminated single quote".into())),
                Some('\'') => {
                    self.at += 1;
                    return Ok(());
                }
                Some(c) => {
                    self.word.push(c);
                    self.at += 1;
                }
            }
        }
    }

    fn double_quoted(&mut self) -> Result<(), ParseError> {
        self.at += 1;
        self.word_started = true;
        loop {
            match self.peek(0) {
                None => return Err(ParseError("unterminated double quote".into())),
                Some('"') => {
                    self.at += 1;
                    return Ok(());
                }
                Some('\\') => {
                    match self.peek(1) {
                        Some('\n') => {}
                        Some(c @ ('"' | '\\' | '$' | '`')) => self.word.push(c),
                        Some(c) => {
                            self.word.push('\\');
                            self.word.push(c);
                        }
                        None => return Err(ParseError("unterminated double quote".into())),
                    }
                    self.at += 2;
                }
                Some('$') => self.dollar(true)?,
                Some('`') => self.backtick()?,
                Some(c) => {
                    self.word.push(c);
                    self.at += 1;
                }
            }
        }
    }

    /// `$...`: a substitution, an expansion, ANSI-C quoting, or a plain `$`.
    fn dollar(&mut self, in_double_quotes: bool) -> Result<(), ParseError> {
        self.word_started = true;
        match self.peek(1) {
            Some('(') if self.peek(2) == Some('(') => {
                // Arithmetic: no command runs, but the value is unknown.
                let end = self.matching(self.at + 1, '(', ')')?;
                self.at = end + 1;
                self.word_literal = false;
            }
            Some('(') => {
                let end = self.matching(self.at + 1, '(', ')')?;
                let inner: String = self.chars[self.at + 2..end].iter().collect();
                self.nested.extend(parse_at(&inner, self.depth + 1)?);
                self.at = end + 1;
                self.word_literal = false;
            }
            Some('{') => {
                let end = self.matching(self.at + 1, '{', '}')?;
                self.at = end + 1;
                self.word_literal = false;
            }
            Some('\'') if !in_double_quotes => {
                self.at += 2;
                loop {
                    match self.peek(0) {
                        None => return Err(ParseError("unterminated $'...' quote".into())),
                        Some('\\') => {
                            if let Some(c) = self.peek(1) {
                                self.word.push(c);
                            }
                            self.at += 2;
                        }
                        Some('\'') => {
                            self.at += 1;
                            break;
                        }
                        Some(c) => {
                            self.word.push(c);
                            self.at += 1;
                        }
                    }
                }
            }
            Some(c) if c.is_ascii_alphanumeric() || "_@*#?$!-".contains(c) => {
                self.at += 1;
                if c.is_ascii_alphabetic() || c == '_' {
                    while self.peek(0).is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                        self.at += 1;
                    }
                } else {
                    self.at += 1;
                }
                self.word_literal = false;
            }
            _ => {
                self.word.push('$');
                self.at += 1;
            }
        }
        Ok(())
    }

    fn backtick(&mut self) -> Result<(), ParseError> {
        let mut end = self.at + 1;
        let mut inner = String::new();
        loop {
            match self.chars.get(end) {
                None => return Err(ParseError("unterminated backtick".into())),
                Some('`') => break,
                Some('\\') if matches!(self.chars.get(end + 1), Some('`' | '\\' | '$')) => {
                    inner.push(self.chars[end + 1]);
                    end += 2;
                }
                Some(&c) => {
                    inner.push(c);
                    end += 1;
                }
            }
        }
        self.nested.extend(parse_at(&inner, self.depth + 1)?);
        self.at = end + 1;
        self.word_started = true;
        self.word_literal = false;
        Ok(())
    }

    /// Index of the bracket closing the one at `open_at`, skipping quoted text.
    fn matching(&self, open_at: usize, open: char, close: char) -> Result<usize, ParseError> {
        let mut depth = 0usize;
        let mut i = open_at;
        while let Some(&c) = self.chars.get(i) {
            match c {
                '\\' => i += 1,
                '\'' => {
                    i += 1;
                    while self.chars.get(i).is_some_and(|&c| c != '\'') {
                        i += 1;
                    }
                }
                '"' => {
                    i += 1;
                    while let Some(&c) = self.chars.get(i) {
                        if c == '\\' {
                            i += 1;
                        } else if c == '"' {
                            break;
                        }
                        i += 1;
                    }
                }
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(i);
                    }
                }
                _ => {}
            }
            i += 1;
        }
        Err(ParseError(format!("unterminated `{open}`")))
    }

    fn redirection(&mut self) -> Result<(), ParseError> {
        let c = self.chars[self.at];
        // `<(...)` / `>(...)`: a process substitution runs its commands.
        if self.peek(1) == Some('(') && !self.word_started {
            let end = self.matching(self.at + 1, '(', ')')?;
            let inner: String = self.chars[self.at + 2..end].iter().collect();
            self.nested.extend(parse_at(&inner, self.depth + 1)?);
            self.at = end + 1;
            self.word_started = true;
            self.word_literal = false;
            return Ok(());
        }
        // A word of digits right before the operator is a file descriptor number.
        if self.word_started && !self.word.is_empty() && self.word.chars().all(|c| c.is_ascii_digit()) {
            self.word.clear();
            self.word_started = false;
            self.word_literal = true;
        } else {
            self.end_word();
        }
        self.at += 1;
        if c == '<' && self.peek(0) == Some('<') {
            self.at += 1;
            if self.peek(0) == Some('<') {
                // A here-string: its word is data.
                self.at += 1;
                self.skip_next_word = true;
                return Ok(());
            }
            let strip_tabs = self.peek(0) == Some('-');
            if strip_tabs {
                self.at += 1;
            }
            let quoted = self.chars[self.at..]
                .iter()
                .take_while(|c| !c.is_whitespace())
                .any(|c| matches!(c, '\'' | '"' | '\\'));
            while matches!(self.peek(0), Some(' ' | '\t')) {
                self.at += 1;
            }
            self.heredocs.push(Heredoc { delimiter: String::new(), quoted, strip_tabs });
            self.pending_heredoc_word = true;
            return Ok(());
        }
        if matches!(self.peek(0), Some('>' | '&' | '|' | '<')) {
            self.at += 1;
        }
        self.skip_next_word = true;
        Ok(())
    }

    /// After a newline: the bodies of the heredocs started on the line just ended.
    fn read_heredoc_bodies(&mut self) -> Result<(), ParseError> {
        for heredoc in std::mem::take(&mut self.heredocs) {
            let mut body = String::new();
            loop {
                if self.at >= self.chars.len() {
                    return Err(ParseError(format!("heredoc `{}` is not closed", heredoc.delimiter)));
                }
                let end = self.chars[self.at..].iter().position(|&c| c == '\n').map_or(self.chars.len(), |p| self.at + p);
                let line: String = self.chars[self.at..end].iter().collect();
                self.at = (end + 1).min(self.chars.len());
                let check = if heredoc.strip_tabs { line.trim_start_matches('\t') } else { line.as_str() };
                if check == heredoc.delimiter {
                    break;
                }
                body.push_str(&line);
                body.push('\n');
            }
            if !heredoc.quoted {
                // An unquoted body is expanded like a double-quoted string: its
                // substitutions run.
                let quoted = format!("\"{}\"", body.replace('\\', "\\\\").replace('"', "\\\""));
                let commands = parse_at(&format!(": {quoted}"), self.depth + 1)?;
                self.commands.extend(commands.into_iter().skip(1));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
