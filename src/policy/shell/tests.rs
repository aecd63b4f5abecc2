//! Tests of `shell`.

use super::*;

fn commands(script: &str) -> Vec<Vec<String>> {
    parse(script)
        .unwrap()
        .into_iter()
        .map(|c| c.words.into_iter().map(|w| w.text).collect())
        .collect()
}

#[test]
fn splits_at_operators_and_newlines() {
    assert_eq!(
        commands("cd x && rm -rf /; ls | wc -l || true & echo a\nnext one"),
        [vec!["cd", "x"], vec!["rm", "-rf", "/"], vec!["ls"], vec!["wc", "-l"], vec!["true"], vec!["echo", "a"], vec!["next", "one"]]
    );
}

#[test]
fn removes_quotes_and_joins_continuations() {
    assert_eq!(commands(r#"echo "rm -rf" 'a b' c\ d"#), [vec!["echo", "rm -rf", "a b", "c d"]]);
    assert_eq!(commands("rm \\\n  -rf x"), [vec!["rm", "-rf", "x"]]);
    assert_eq!(commands(r#""r"m -"rf" x"#), [vec!["rm", "-rf", "x"]]);
}

#[test]
fn substitutions_are_commands_too() {
    assert_eq!(commands("echo $(rm -rf a) `sudo reboot`"), [vec!["echo", "", ""], vec!["rm", "-rf", "a"], vec!["sudo", "reboot"]]);
    assert_eq!(commands(r#"echo "$(rm -rf a)""#), [vec!["echo", ""], vec!["rm", "-rf", "a"]]);
    assert_eq!(commands("diff <(rm -rf a) b"), [vec!["diff", "", "b"], vec!["rm", "-rf", "a"]]);
    let words = &parse("echo $(date) $HOME plain").unwrap()[0].words;
    assert_eq!(words.iter().map(|w| w.literal).collect::<Vec<_>>(), [true, false, false, true]);
}

#[test]
fn redirections_are_not_arguments() {
    assert_eq!(commands("cat < in > out 2>&1 >> log &> all"), [vec!["cat"]]);
    assert_eq!(commands("echo hi 2> /dev/null"), [vec!["echo", "hi"]]);
    assert_eq!(commands("grep x <<< 'rm -rf /'"), [vec!["grep", "x"]]);
}

#[test]
fn heredocs_are_data_unless_they_substitute() {
    assert_eq!(commands("cat <<EOF\nrm -rf /\nEOF\nls"), [vec!["cat"], vec!["ls"]]);
    assert_eq!(commands("cat <<'EOF'\n$(rm -rf /)\nEOF"), [vec!["cat"]]);
    assert_eq!(commands("cat <<EOF\n$(rm -rf /)\nEOF"), [vec!["cat"], vec!["rm", "-rf", "/"]]);
    assert!(parse("cat <<EOF\nnever closed").is_err());
}

#[test]
fn comments_and_subshells() {
    assert_eq!(commands("ls # rm -rf /\n(cd a; rm -rf b)"), [vec!["ls"], vec!["cd", "a"], vec!["rm", "-rf", "b"]]);
    assert_eq!(commands("echo a#b"), [vec!["echo", "a#b"]]);
}

#[test]
fn unreadable_scripts_are_errors() {
    for bad in ["echo 'open", "echo \"open", "echo $(open", "echo `open", "echo ${open"] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}
