//! The administrator's command line: good input works, bad input fails with
//! one clear line and changes nothing.

use std::path::Path;
use std::process::Output;

use crate::harness::{PASSWORD, run_cli};

struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "database_url = \"sqlite://{}\"\n[password]\nmemory_kib = 1024\n",
            dir.path().join("cli.db").display()
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        Self { dir }
    }

    fn run(&self, args: &[&str], stdin: &str) -> Output {
        run_cli(
            &self.dir.path().join("config.toml"),
            self.dir.path(),
            args,
            stdin,
        )
    }

    fn add(&self, login_id: &str, email: &str, password: &str) -> Output {
        self.run(
            &[
                "user",
                "add",
                "--login-id",
                login_id,
                "--email",
                email,
                "--first-name",
                "Jane",
                "--last-name",
                "Doe",
            ],
            &format!("{password}\n"),
        )
    }

    fn list(&self) -> String {
        let output = self.run(&["user", "list"], "");
        assert!(output.status.success());
        String::from_utf8(output.stdout).unwrap()
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn new_database_is_announced() {
    let cli = Cli::new();
    let database = cli.dir.path().join("cli.db");
    let first = cli.run(&["user", "list"], "");
    let note = stderr(&first);
    assert!(first.status.success(), "{note}");
    assert!(note.contains("created a new, empty database"), "{note}");
    assert!(
        note.contains(&database.display().to_string()),
        "the note does not name {}: {note}",
        database.display()
    );

    let second = cli.run(&["user", "list"], "");
    assert!(second.status.success());
    assert_eq!(stderr(&second), "", "a note on an existing database");
}

/// Asserts that the command failed with exactly one line containing `expected`.
pub(crate) fn assert_fails_with(output: &Output, expected: &str) {
    let message = stderr(output);
    assert!(
        !output.status.success(),
        "command succeeded; stderr: {message}"
    );
    assert_eq!(
        message.trim_end().lines().count(),
        1,
        "expected one line: {message}"
    );
    assert!(message.starts_with("error: "), "{message}");
    assert!(
        message.contains(expected),
        "expected '{expected}' in: {message}"
    );
}

#[test]
fn add_then_list_and_show() {
    let cli = Cli::new();
    let added = cli.add("jdoe", "Jane.Doe@Example.com", PASSWORD);
    assert!(added.status.success(), "{}", stderr(&added));
    assert!(String::from_utf8_lossy(&added.stdout).contains("Added user jdoe"));

    let list = cli.list();
    assert!(list.contains("jdoe"), "{list}");
    assert!(list.contains("Jane.Doe@Example.com"), "{list}");

    let shown = cli.run(&["user", "show", "jane.doe@example.com"], "");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success());
    assert!(text.contains("login ID:       jdoe"), "{text}");
    assert!(text.contains("TOTP:           no"), "{text}");
}

#[test]
fn add_rejects_duplicates() {
    let cli = Cli::new();
    assert!(
        cli.add("jdoe", "jane@example.com", PASSWORD)
            .status
            .success()
    );
    let before = cli.list();

    assert_fails_with(
        &cli.add("other", "JANE@example.com", PASSWORD),
        "--email 'JANE@example.com' is already used",
    );
    assert_fails_with(
        &cli.add("JDOE", "other@example.com", PASSWORD),
        "--login-id 'JDOE' is already used",
    );
    // A login ID may not take another user's email address either.
    assert_fails_with(
        &cli.add("jane@example.com", "x@example.com", PASSWORD),
        "already used",
    );
    assert_eq!(cli.list(), before);
}

#[test]
fn add_rejects_bad_input() {
    let cli = Cli::new();
    let before = cli.list();
    assert_fails_with(
        &cli.add("jdoe", "not-an-email", PASSWORD),
        "invalid --email",
    );
    assert_fails_with(&cli.add("jdoe", "jane@", PASSWORD), "invalid --email");
    assert_fails_with(
        &cli.add("j doe", "jane@example.com", PASSWORD),
        "cannot contain spaces",
    );
    assert_fails_with(
        &cli.add("", "jane@example.com", PASSWORD),
        "invalid --login-id",
    );
    assert_fails_with(
        &cli.add("jdoe", "jane@example.com", ""),
        "the password is empty",
    );
    assert_fails_with(
        &cli.add("jdoe", "jane@example.com", "short"),
        "shorter than 8",
    );
    assert_fails_with(
        &cli.add("jdoe", "jane@example.com", "password1"),
        "too easy to guess",
    );
    assert_fails_with(
        &cli.add("jdoe", "jane@example.com", "JaneDoe2024"),
        "too easy to guess",
    );
    assert_eq!(cli.list(), before, "a failed add must not create a user");
}

#[test]
fn unknown_user_fails_cleanly() {
    let cli = Cli::new();
    assert_fails_with(
        &cli.run(&["user", "show", "ghost"], ""),
        "no user has the login ID or email 'ghost'",
    );
    assert_fails_with(
        &cli.run(&["user", "set-password", "ghost"], &format!("{PASSWORD}\n")),
        "no user",
    );
    assert_fails_with(
        &cli.run(&["user", "totp", "enroll", "ghost"], ""),
        "no user",
    );
    assert_fails_with(&cli.run(&["user", "totp", "reset", "ghost"], ""), "no user");
}

#[test]
fn set_password_checks_strength() {
    let cli = Cli::new();
    assert!(
        cli.add("jdoe", "jane@example.com", PASSWORD)
            .status
            .success()
    );
    assert_fails_with(
        &cli.run(&["user", "set-password", "jdoe"], "qwerty123\n"),
        "too easy to guess",
    );
    let changed = cli.run(
        &["user", "set-password", "jdoe"],
        "harbor-violet-83-meadow\n",
    );
    assert!(changed.status.success(), "{}", stderr(&changed));
}

#[test]
fn totp_enroll_and_reset() {
    let cli = Cli::new();
    assert!(
        cli.add("jdoe", "jane@example.com", PASSWORD)
            .status
            .success()
    );

    let enrolled = cli.run(&["user", "totp", "enroll", "jdoe"], "");
    let text = String::from_utf8_lossy(&enrolled.stdout).into_owned();
    assert!(enrolled.status.success(), "{}", stderr(&enrolled));
    assert!(
        text.contains("otpauth://totp/unified-login:jane%40example.com?secret="),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|line| line.starts_with("  ")).count(),
        10,
        "{text}"
    );

    assert_fails_with(
        &cli.run(&["user", "totp", "enroll", "jdoe"], ""),
        "already has TOTP enrolled",
    );

    let reset = cli.run(&["user", "totp", "reset", "jdoe"], "");
    assert!(reset.status.success(), "{}", stderr(&reset));
    assert_fails_with(
        &cli.run(&["user", "totp", "reset", "jdoe"], ""),
        "has no TOTP enrolled",
    );
}

#[test]
fn bad_config_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "listen = \"not an address\"\n").unwrap();
    assert_fails_with(
        &run_cli(&config, dir.path(), &["user", "list"], ""),
        "invalid configuration",
    );
    assert_fails_with(
        &run_cli(
            Path::new("/nonexistent.toml"),
            dir.path(),
            &["user", "list"],
            "",
        ),
        "not found",
    );
}
