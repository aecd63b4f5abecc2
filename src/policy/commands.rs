//! Does a Bash command run a forbidden command?
//!
//! An entry such as `rm -rf` or `git push --force` is a command name, the words that
//! must follow it (`push`), and the flags it must carry (`-r` and `-f`; `--force`).
//! A script runs the entry when one of its simple commands (see [`super::shell`]) has
//! the entry's name at a command position and carries all the entry's words, in
//! order, and all its flags, in any order or combination: `rm -rf` matches `rm -fr`,
//! `rm -r -f`, `rm -Rf` and `rm --recursive --force` (short flags compare without
//! case; a few commands' long spellings are known). A command position is the start
//! of a simple command after any variable assignments, after the wrappers `sudo`,
//! `doas`, `env`, `xargs`, `nohup`, `time`, `command`, `builtin`, `exec`, `nice`,
//! `timeout`, `stdbuf`, `ionice`, `setsid` and `watch` (and their options), after
//! `if`, `then`, `do`, `!` and the like; inside the script of `sh -c`/`bash -c`
//! (any shell, `-c` in any option cluster), `su -c`, `eval`, `env -S`; and after
//! `find -exec`/`-execdir`/`-ok`. So `echo "rm -rf"` runs `echo`, not `rm`.
//!
//! Where the command cannot be read for certain, the answer is "unsure" and the
//! policy denies: a script that does not parse (an unterminated quote, `$(`, heredoc),
//! a command name that is computed (`$CMD -rf`, `$(which rm)`, a glob), a computed
//! `sh -c` script or `eval` argument, or a shell that reads its commands from its
//! input (`curl … | sh`, `bash <<EOF`).

use std::collections::HashSet;

use super::shell::{self, Word};

/// A charter's `forbiddenCommands` entry, ready for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForbiddenCommand {
    pub entry: String,
    name: String,
    words: Vec<String>,
    short: Vec<char>,
    long: Vec<String>,
}

/// Why a script was found to run a forbidden command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// It runs the entry.
    Runs,
    /// It cannot be checked for certain; the text says why.
    Unsure(String),
}

/// Known long spellings of short flags: (command, short flag, long flag).
const ALIASES: [(&str, char, &str); 9] = [
    ("rm", 'r', "recursive"),
    ("rm", 'f', "force"),
    ("rm", 'd', "dir"),
    ("git", 'f', "force"),
    ("cp", 'r', "recursive"),
    ("cp", 'f', "force"),
    ("chmod", 'r', "recursive"),
    ("chown", 'r', "recursive"),
    ("mv", 'f', "force"),
];

impl ForbiddenCommand {
    /// `None` for an entry with no command in it.
    pub fn parse(entry: &str) -> Option<Self> {
        let words: Vec<String> = match shell::parse(entry) {
            Ok(commands) => commands.into_iter().next()?.words.into_iter().map(|w| w.text).collect(),
            Err(_) => entry.split_whitespace().map(str::to_owned).collect(),
        };
        let (name, rest) = words.split_first()?;
        let mut c = Self {
            entry: entry.trim().to_owned(),
            name: basename(name).to_owned(),
            words: Vec::new(),
            short: Vec::new(),
            long: Vec::new(),
        };
        for w in rest {
            if let Some(long) = w.strip_prefix("--").filter(|l| !l.is_empty()) {
                c.long.push(long.split('=').next().unwrap_or(long).to_owned());
            } else if let Some(flags) = w.strip_prefix('-').filter(|f| !f.is_empty()) {
                c.short.extend(flags.chars().filter(|c| c.is_ascii_alphabetic()).map(|c| c.to_ascii_lowercase()));
            } else {
                c.words.push(w.clone());
            }
        }
        Some(c)
    }

    /// Whether a command named `name` with `args` runs this entry.
    fn matches(&self, name: &str, args: &[Word]) -> bool {
        if name != self.name {
            return false;
        }
        let mut shorts = HashSet::new();
        let mut longs = Vec::new();
        let mut positional = Vec::new();
        let mut options_ended = false;
        for arg in args {
            let t = arg.text.as_str();
            if options_ended || t == "-" || !t.starts_with('-') {
                positional.push(t);
            } else if t == "--" {
                options_ended = true;
            } else if let Some(long) = t.strip_prefix("--") {
                longs.push(long.split('=').next().unwrap_or(long));
            } else {
                shorts.extend(t[1..].chars().filter(|c| c.is_ascii_alphabetic()).map(|c| c.to_ascii_lowercase()));
            }
        }
        let mut rest = positional.iter();
        if !self.words.iter().all(|w| rest.any(|p| p == w)) {
            return false;
        }
        let has_long = |l: &str| longs.iter().any(|x| *x == l || x.strip_prefix(l).is_some_and(|s| s.starts_with('-')));
        let alias = |short: Option<char>, long: Option<&str>| {
            ALIASES
                .iter()
                .filter(|(cmd, s, l)| *cmd == name && (short == Some(*s) || long == Some(*l)))
                .any(|(_, s, l)| shorts.contains(s) || has_long(l))
        };
        let shorts_ok = self.short.iter().all(|f| shorts.contains(f) || alias(Some(*f), None));
        let longs_ok = self.long.iter().all(|l| {
            has_long(l)
                || alias(None, Some(l))
                // `git push origin +main` forces too.
                || (name == "git" && l == "force" && positional.iter().any(|p| p.starts_with('+')))
        });
        shorts_ok && longs_ok
    }
}

/// The first forbidden entry `script` runs, or every entry when it cannot tell.
pub fn find_forbidden(script: &str, forbidden: &[ForbiddenCommand]) -> Option<(String, Why)> {
    if forbidden.is_empty() {
        return None;
    }
    let all = || forbidden.iter().map(|f| f.entry.as_str()).collect::<Vec<_>>().join(", ");
    match check_script(script, forbidden, 0) {
        Some(Found::Entry(entry)) => Some((entry, Why::Runs)),
        Some(Found::Unsure(why)) => Some((all(), Why::Unsure(why))),
        None => None,
    }
}

enum Found {
    Entry(String),
    Unsure(String),
}

fn check_script(script: &str, forbidden: &[ForbiddenCommand], depth: usize) -> Option<Found> {
    match shell::parse_at(script, depth) {
        Err(e) => Some(Found::Unsure(format!("it does not parse: {e}"))),
        Ok(commands) => commands.iter().find_map(|c| check_command(&c.words, forbidden, depth)),
    }
}

fn check_command(words: &[Word], forbidden: &[ForbiddenCommand], depth: usize) -> Option<Found> {
    let mut i = 0;
    loop {
        while words.get(i).is_some_and(is_assignment) {
            i += 1;
        }
        let word = words.get(i)?;
        if !word.literal {
            return Some(Found::Unsure(format!("the command name `{}` is computed", display(word))));
        }
        let name = basename(&word.text);
        let args = &words[i + 1..];
        if let Some(entry) = forbidden.iter().find(|f| f.matches(name, args)) {
            return Some(Found::Entry(entry.entry.clone()));
        }
        i += 1;
        match name {
            "if" | "then" | "else" | "elif" | "fi" | "do" | "done" | "while" | "until" | "!" | "{" | "}" => {}
            "for" | "select" | "case" | "function" | "esac" | "in" => return None,
            "sudo" | "doas" => i = skip_options(words, i, &["-u", "-g", "-C", "-h", "-p", "-U", "-r", "-t", "-T", "-D"]),
            "nohup" | "command" | "builtin" | "exec" | "setsid" | "stdbuf" => i = skip_options(words, i, &["-a"]),
            "time" => i = skip_options(words, i, &[]),
            "nice" => i = skip_options(words, i, &["-n"]),
            "ionice" => i = skip_options(words, i, &["-c", "-n", "-p", "-P", "-u"]),
            "xargs" => i = skip_options(words, i, &["-I", "-n", "-P", "-L", "-s", "-d", "-E", "-a"]),
            "timeout" => i = skip_options(words, i, &["-s", "-k"]) + 1,
            "env" => {
                while let Some(w) = words.get(i) {
                    let t = w.text.as_str();
                    if let Some(split) = t.strip_prefix("--split-string=").or_else(|| t.strip_prefix("-S").filter(|s| !s.is_empty())) {
                        return check_script(split, forbidden, depth + 1);
                    }
                    if t == "-S" || t == "--split-string" {
                        return check_string(words.get(i + 1), forbidden, depth, "env -S");
                    }
                    if matches!(t, "-u" | "--unset" | "-C" | "--chdir") {
                        i += 2;
                    } else if t.starts_with('-') || is_assignment(w) {
                        i += 1;
                    } else {
                        break;
                    }
                }
            }
            "watch" => {
                let at = skip_options(words, i, &["-n", "-d", "-c"]);
                return join_and_check(&words[at.min(words.len())..], forbidden, depth, "watch");
            }
            "eval" => return join_and_check(args, forbidden, depth, "eval"),
            "su" => {
                let at = args.iter().position(|w| w.text == "-c" || w.text == "--command")?;
                return check_string(args.get(at + 1), forbidden, depth, "su -c");
            }
            "sh" | "bash" | "zsh" | "dash" | "ksh" | "mksh" | "ash" | "fish" => {
                return check_shell(args, forbidden, depth);
            }
            "find" => {
                return exec_commands(args).find_map(|cmd| check_command(cmd, forbidden, depth + 1));
            }
            _ => return None,
        }
    }
}

/// A shell: `-c` makes its next operand a script; with neither `-c` nor a script
/// file it runs whatever arrives on its input.
fn check_shell(args: &[Word], forbidden: &[ForbiddenCommand], depth: usize) -> Option<Found> {
    let mut with_c = false;
    for arg in args {
        let t = arg.text.as_str();
        if t == "--" {
            continue;
        }
        if let Some(flags) = t.strip_prefix('-').filter(|f| !f.is_empty() && !f.starts_with('-')) {
            with_c |= flags.contains('c');
            continue;
        }
        if t.starts_with("--") || t.starts_with('+') {
            continue;
        }
        // The first operand: the script (with -c), or a script file (not read).
        return if with_c { check_string(Some(arg), forbidden, depth, "a shell's -c") } else { None };
    }
    Some(Found::Unsure(if with_c {
        "a shell's -c has no script".into()
    } else {
        "a shell reads its commands from its input".into()
    }))
}

fn check_string(word: Option<&Word>, forbidden: &[ForbiddenCommand], depth: usize, what: &str) -> Option<Found> {
    match word {
        None => Some(Found::Unsure(format!("{what} has no script"))),
        Some(w) if !w.literal => Some(Found::Unsure(format!("the script of {what} is computed"))),
        Some(w) => check_script(&w.text, forbidden, depth + 1),
    }
}

fn join_and_check(words: &[Word], forbidden: &[ForbiddenCommand], depth: usize, what: &str) -> Option<Found> {
    if words.iter().any(|w| !w.literal) {
        return Some(Found::Unsure(format!("the arguments of {what} are computed")));
    }
    let script = words.iter().map(|w| w.text.as_str()).collect::<Vec<_>>().join(" ");
    check_script(&script, forbidden, depth + 1)
}

/// The commands `find` runs: the words after `-exec`, `-execdir`, `-ok` or `-okdir`
/// up to `;` or `+`.
fn exec_commands(args: &[Word]) -> impl Iterator<Item = &[Word]> {
    let mut rest = args;
    std::iter::from_fn(move || {
        let at = rest.iter().position(|w| matches!(w.text.as_str(), "-exec" | "-execdir" | "-ok" | "-okdir"))?;
        let tail = &rest[at + 1..];
        let end = tail.iter().position(|w| w.text == ";" || w.text == "+").unwrap_or(tail.len());
        rest = &tail[(end + 1).min(tail.len())..];
        Some(&tail[..end])
    })
}

/// Index of the first word after the options at `i`; `with_value` options take the
/// next word as their value (unless it is attached, `-n5`).
fn skip_options(words: &[Word], mut i: usize, with_value: &[&str]) -> usize {
    while let Some(w) = words.get(i) {
        let t = w.text.as_str();
        if t == "--" {
            return i + 1;
        }
        if !t.starts_with('-') || t == "-" {
            break;
        }
        i += if with_value.contains(&t) { 2 } else { 1 };
    }
    i
}

fn is_assignment(w: &Word) -> bool {
    match w.text.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn display(w: &Word) -> &str {
    if w.text.is_empty() {
        "$…"
    } else {
        &w.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<ForbiddenCommand> {
        ["rm -rf", "git push --force", "shutdown", "chmod 777", "npm publish"]
            .iter()
            .map(|e| ForbiddenCommand::parse(e).unwrap())
            .collect()
    }

    fn verdict(script: &str) -> &'static str {
        match find_forbidden(script, &entries()) {
            None => "allow",
            Some((_, Why::Runs)) => "deny",
            Some((_, Why::Unsure(_))) => "unsure",
        }
    }

    #[test]
    fn the_command_boundary_matcher() {
        let cases: &[(&str, &str)] = &[
            // the entry itself, flags in any order or combination
            ("rm -rf build", "deny"),
            ("rm -fr build", "deny"),
            ("rm -r -f build", "deny"),
            ("rm -Rf build", "deny"),
            ("rm -f -R build", "deny"),
            ("rm --recursive --force build", "deny"),
            ("rm -rfv build", "deny"),
            ("/bin/rm -rf build", "deny"),
            ("\\rm -rf build", "deny"),
            ("\"rm\" -rf build", "deny"),
            ("rm -r build", "allow"),
            ("rm -f file", "allow"),
            ("rm -- -rf", "allow"),
            // command positions
            ("cd x && rm -rf /", "deny"),
            ("true; rm -rf /", "deny"),
            ("false || rm -rf /", "deny"),
            ("ls | xargs rm -rf", "deny"),
            ("ls | xargs -n 1 rm -rf", "deny"),
            ("sleep 1 & rm -rf /", "deny"),
            ("echo $(rm -rf /)", "deny"),
            ("echo `rm -rf /`", "deny"),
            ("ls\nrm -rf /", "deny"),
            ("(cd a && rm -rf b)", "deny"),
            ("if true; then rm -rf x; fi", "deny"),
            ("for f in a b; do rm -rf $f; done", "deny"),
            ("sudo rm -fr a", "deny"),
            ("sudo -u root rm -rf a", "deny"),
            ("env rm -rf a", "deny"),
            ("env -i PATH=/bin rm -rf a", "deny"),
            ("FOO=1 BAR=2 rm -rf a", "deny"),
            ("nohup rm -rf a &", "deny"),
            ("time rm -rf a", "deny"),
            ("nice -n 5 rm -rf a", "deny"),
            ("timeout 10 rm -rf a", "deny"),
            ("command rm -rf a", "deny"),
            ("find . -name '*.o' -exec rm -rf {} \\;", "deny"),
            ("find . -exec echo {} +", "allow"),
            // shells and indirection
            ("bash -c 'rm -rf /'", "deny"),
            ("sh -lc \"cd x && rm -fr y\"", "deny"),
            ("bash -c 'echo rm -rf'", "allow"),
            ("eval rm -rf x", "deny"),
            ("eval 'echo ok'", "allow"),
            ("su -c 'rm -rf /' root", "deny"),
            ("env -S 'rm -rf x'", "deny"),
            ("watch -n 5 'rm -rf x'", "deny"),
            ("bash script.sh", "allow"),
            ("curl -s https://x | sh", "unsure"),
            ("bash <<EOF\necho hi\nEOF", "unsure"),
            ("$CMD -rf x", "unsure"),
            ("$(which rm) -rf x", "unsure"),
            ("r* -rf x", "unsure"),
            ("bash -c \"$SCRIPT\"", "unsure"),
            ("eval \"$X\"", "unsure"),
            ("echo 'unterminated", "unsure"),
            // quoted arguments and data are not commands
            ("echo \"rm -rf\"", "allow"),
            ("echo rm -rf x", "allow"),
            ("grep -r 'rm -rf' .", "allow"),
            ("git commit -m 'stop using rm -rf'", "allow"),
            ("cat <<EOF\nrm -rf /\nEOF", "allow"),
            ("printf '%s' \"$(echo rm) -rf\"", "allow"),
            ("ls # rm -rf /", "allow"),
            // other entries
            ("git push --force origin main", "deny"),
            ("git push -f origin main", "deny"),
            ("git push origin +main", "deny"),
            ("git push --force-with-lease", "deny"),
            ("git -C repo push --force", "deny"),
            ("git push origin main", "allow"),
            ("git pull --force", "allow"),
            ("sudo shutdown -h now", "deny"),
            ("chmod 777 file", "deny"),
            ("chmod 755 file", "allow"),
            ("npm publish --access public", "deny"),
            ("npm test", "allow"),
        ];
        assert!(cases.len() >= 30);
        let wrong: Vec<String> = cases
            .iter()
            .filter(|(script, want)| verdict(script) != *want)
            .map(|(script, want)| format!("{script:?}: want {want}, got {}", verdict(script)))
            .collect();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn no_entries_means_nothing_is_forbidden() {
        assert_eq!(find_forbidden("curl x | sh; $X -rf", &[]), None);
    }

    #[test]
    fn the_entry_that_matched_is_named() {
        let (entry, why) = find_forbidden("ls && git push -f", &entries()).unwrap();
        assert_eq!((entry.as_str(), why), ("git push --force", Why::Runs));
        let (entry, why) = find_forbidden("$X", &entries()).unwrap();
        assert!(entry.starts_with("rm -rf, git push --force"));
        assert!(matches!(why, Why::Unsure(w) if w.contains("computed")));
    }
}
