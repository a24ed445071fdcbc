//! Passwords checked by an on-premises LDAP directory: the real binary
//! against Debian's OpenLDAP `slapd` on loopback, over HTTP and through
//! `ldap test`, and the rule that only one source of authentication is
//! active.

use std::path::{Path, PathBuf};
use std::process::Output;

use reqwest::StatusCode;

use crate::cli::assert_fails_with;
use crate::harness::{Broker, Options, PASSWORD, run_cli, totp_now};
use crate::http_login::WebClient;
use crate::peers::slapd::{self, GONE, JANE, Slapd, TWIN};
use crate::saml_builder::ENTRA_CERT;
use crate::saml_flow::serve_until_exit;

const WRONG_CREDENTIALS: &str = "The email address, login ID or password is incorrect.";
const DIRECTORY_UNAVAILABLE: &str =
    "The sign-in service cannot reach the company directory right now. Try again in a few minutes.";
const SINGLE_SOURCE: &str = "only one source of authentication may be active";

/// Excludes entries marked `employeeType: disabled`, such as [`GONE`].
const USER_FILTER: &str = "(&(objectClass=inetOrgPerson)(!(employeeType=disabled)))";

/// How the broker reaches slapd.
#[derive(Clone, Copy)]
enum Transport {
    Ldaps,
    StartTls,
    Plain,
}

/// Returns an `[ldap]` table for `slapd`, with the service password in a
/// file under `dir`. `extra` is appended inside the table.
fn ldap_table(slapd: &Slapd, dir: &Path, transport: Transport, extra: &str) -> String {
    let password_file = dir.join("ldap-bind-password");
    std::fs::write(&password_file, format!("{}\n", slapd::SERVICE_PASSWORD))
        .expect("write the bind password file");
    let (url, starttls) = match transport {
        Transport::Ldaps => (slapd.ldaps_url(), false),
        Transport::StartTls => (slapd.ldap_url(), true),
        Transport::Plain => (slapd.ldap_url(), false),
    };
    format!(
        r#"[ldap]
url = "{url}"
starttls = {starttls}
ca_file = "{ca}"
bind_dn = "{bind_dn}"
bind_password_file = "{password_file}"
base_dn = "{base}"
user_filter = "{USER_FILTER}"
connect_timeout_seconds = 2
timeout_seconds = 3
{extra}
"#,
        ca = slapd.ca_file().display(),
        bind_dn = slapd::SERVICE_DN,
        password_file = password_file.display(),
        base = slapd::BASE_DN,
    )
}

/// A broker whose `[ldap]` table points at a running slapd.
struct LdapSetup {
    broker: Broker,
    slapd: Slapd,
}

/// Starts slapd and a broker that uses it, with each `(login_id, email)`
/// of `users` added to the broker. Returns `None` when slapd cannot run
/// here outside CI.
fn setup(
    test: &str,
    options: Options,
    transport: Transport,
    extra: &str,
    users: &[(&str, &str)],
) -> Option<LdapSetup> {
    let slapd = Slapd::start(test)?;
    let mut broker = Broker::prepare(options);
    broker.append_config(&ldap_table(&slapd, broker.data_dir(), transport, extra));
    for (login_id, email) in users {
        broker.add_user(login_id, email);
    }
    broker.serve();
    Some(LdapSetup { broker, slapd })
}

/// The broker users of most tests: each directory user under its uid, and
/// one user the directory does not have.
const USERS: &[(&str, &str)] = &[
    ("jane", "jane@example.com"),
    ("twin", "twin@example.com"),
    ("gone", "gone@example.com"),
    ("nobody", "nobody@example.com"),
];

fn default_setup(test: &str) -> Option<LdapSetup> {
    setup(test, Options::default(), Transport::Ldaps, "", USERS)
}

fn assert_wrong_credentials(page: &crate::http_login::Page, case: &str) {
    assert_eq!(
        page.status,
        StatusCode::UNAUTHORIZED,
        "{case}: {}",
        page.body
    );
    assert!(
        page.body.contains(WRONG_CREDENTIALS),
        "{case}: {}",
        page.body
    );
}

#[tokio::test]
async fn ldap_password_signs_in() {
    let Some(setup) = default_setup("ldap_password_signs_in") else {
        return;
    };

    let by_email = WebClient::new(&setup.broker);
    let done = by_email.sign_in("Jane@Example.com", JANE.password).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.location(), "/account");
    let account = by_email.get("/account").await;
    assert!(account.body.contains("jane"), "{}", account.body);

    let by_login_id = WebClient::new(&setup.broker);
    let done = by_login_id.sign_in("jane", JANE.password).await;
    assert_eq!(done.location(), "/account", "{}", done.body);
}

#[tokio::test]
async fn local_password_stops_working() {
    let Some(setup) = default_setup("local_password_stops_working") else {
        return;
    };
    let client = WebClient::new(&setup.broker);
    let page = client.sign_in("jane", PASSWORD).await;
    assert_wrong_credentials(&page, "the broker's own password");
}

#[tokio::test]
async fn failed_ldap_sign_ins_look_alike() {
    let Some(setup) = default_setup("failed_ldap_sign_ins_look_alike") else {
        return;
    };
    let cases = [
        ("wrong password", "jane@example.com", "ldap-jane-46-harboR"),
        ("empty password", "jane@example.com", ""),
        (
            "user absent from the directory",
            "nobody@example.com",
            JANE.password,
        ),
        ("two matching entries", TWIN.mail, TWIN.password),
        ("entry excluded by user_filter", GONE.mail, GONE.password),
        (
            "identifier unknown to the broker",
            "ghost@example.com",
            JANE.password,
        ),
    ];
    for (case, identifier, password) in cases {
        let client = WebClient::new(&setup.broker);
        let page = client.sign_in(identifier, password).await;
        assert_wrong_credentials(&page, case);
    }

    let log = setup.broker.log();
    assert!(
        log.contains("found 2 entries, but exactly one must match"),
        "the ambiguous entry is logged for the administrator: {log}"
    );
    assert!(
        !log.contains("CL_CONNECT_FAILURE"),
        "no alarm for wrong passwords: {log}"
    );
}

#[tokio::test]
async fn wrong_ldap_password_counts_for_lockout() {
    let options = Options {
        lockout_threshold: 2,
        ..Options::default()
    };
    let Some(setup) = setup(
        "wrong_ldap_password_counts_for_lockout",
        options,
        Transport::Ldaps,
        "",
        USERS,
    ) else {
        return;
    };
    let client = WebClient::new(&setup.broker);
    client.identify("jane").await;
    let first = client.password("not-the-ldap-password").await;
    assert_wrong_credentials(&first, "first failure");
    let second = client.password("not-the-ldap-password").await;
    assert!(second.body.contains("locked"), "{}", second.body);
    let right = client.password(JANE.password).await;
    assert_eq!(
        right.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        right.body
    );
}

#[tokio::test]
async fn totp_still_follows_ldap_password() {
    let Some(setup) = default_setup("totp_still_follows_ldap_password") else {
        return;
    };
    let (secret, _codes) = setup.broker.enroll_totp("jane");

    let client = WebClient::new(&setup.broker);
    let after_password = client.sign_in("jane", JANE.password).await;
    assert_eq!(
        after_password.location(),
        "/login/otp",
        "{}",
        after_password.body
    );
    let code = totp_now(&secret);
    let done = client
        .submit("/login/otp", "/login/otp", &[("code", &code)])
        .await;
    assert_eq!(done.location(), "/account", "{}", done.body);
}

#[tokio::test]
async fn unreachable_directory_raises_alarm_once() {
    let options = Options {
        lockout_threshold: 2,
        ..Options::default()
    };
    let Some(mut setup) = setup(
        "unreachable_directory_raises_alarm_once",
        options,
        Transport::Ldaps,
        "",
        USERS,
    ) else {
        return;
    };
    setup.slapd.stop();

    // More attempts than the lockout threshold: none of them may count.
    let client = WebClient::new(&setup.broker);
    client.identify("jane").await;
    for attempt in 1..=3 {
        let page = client.password(JANE.password).await;
        assert_eq!(
            page.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "attempt {attempt}: {}",
            page.body
        );
        assert!(
            page.body.contains(DIRECTORY_UNAVAILABLE),
            "attempt {attempt}: {}",
            page.body
        );
        assert!(
            !page.body.contains(WRONG_CREDENTIALS),
            "attempt {attempt}: {}",
            page.body
        );
    }
    let unknown = WebClient::new(&setup.broker);
    let page = unknown.sign_in("ghost@example.com", "any-password").await;
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "unknown identifier: {}",
        page.body
    );

    let log = setup.broker.log();
    assert_eq!(log.matches("alarm raised").count(), 1, "raised once: {log}");
    let raised = log
        .lines()
        .find(|line| line.contains("alarm raised"))
        .unwrap_or_default();
    assert!(raised.contains("\"CL_CONNECT_FAILURE\""), "{raised}");
    assert!(
        raised.contains("LDAP directory"),
        "names the directory as the source: {raised}"
    );
    assert_eq!(log.matches("alarm cleared").count(), 0, "{log}");

    setup.slapd.restart();
    let page = client.password(JANE.password).await;
    assert_eq!(
        page.status,
        StatusCode::SEE_OTHER,
        "not locked after the outage: {}",
        page.body
    );
    assert_eq!(page.location(), "/account");
    let again = WebClient::new(&setup.broker);
    again.sign_in("jane", JANE.password).await;

    let log = setup.broker.log();
    assert_eq!(log.matches("alarm raised").count(), 1, "{log}");
    assert_eq!(
        log.matches("alarm cleared").count(),
        1,
        "cleared once: {log}"
    );
}

#[tokio::test]
async fn filter_injection_is_escaped() {
    // Matching on login IDs against uid: a broker user named "ja*" would
    // sign in as uid=jane if the asterisk reached the filter as a wildcard.
    let extra = "user_attribute = \"uid\"\nmatch_on = \"login_id\"";
    let users = [
        ("jane", "jane@example.com"),
        ("ja*", "jastar@example.com"),
        ("*)(uid=*", "star@example.com"),
    ];
    let Some(setup) = setup(
        "filter_injection_is_escaped",
        Options::default(),
        Transport::Ldaps,
        extra,
        &users,
    ) else {
        return;
    };

    let client = WebClient::new(&setup.broker);
    let jane = client.sign_in("jane", JANE.password).await;
    assert_eq!(
        jane.location(),
        "/account",
        "login ID matching works: {}",
        jane.body
    );

    for identifier in ["ja*", "*)(uid=*", "star@example.com"] {
        let client = WebClient::new(&setup.broker);
        let page = client.sign_in(identifier, JANE.password).await;
        assert_wrong_credentials(&page, identifier);
    }
    let slapd_log = setup.slapd.log();
    assert!(
        slapd_log.contains("(uid=ja\\2A)") || slapd_log.contains("(uid=ja\\2a)"),
        "slapd received the escaped value: {slapd_log}"
    );
}

#[tokio::test]
async fn starttls_and_loopback_plain_sign_in() {
    for (name, transport) in [
        ("StartTLS", Transport::StartTls),
        ("plain loopback", Transport::Plain),
    ] {
        let Some(setup) = setup(
            "starttls_and_loopback_plain_sign_in",
            Options::default(),
            transport,
            "",
            USERS,
        ) else {
            return;
        };
        let client = WebClient::new(&setup.broker);
        let done = client.sign_in("jane", JANE.password).await;
        assert_eq!(done.location(), "/account", "{name}: {}", done.body);
    }
}

/// Writes a config with `[ldap]` and `extra` TOML into a fresh folder and
/// returns the folder and the config's path. The `[ldap]` table needs no
/// running directory, because these tests stop before any connection.
fn config_with_ldap(extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let password_file = dir.path().join("ldap-bind-password");
    std::fs::write(&password_file, "service-password\n").expect("write the bind password file");
    let config = format!(
        r#"listen = "127.0.0.1:{port}"
database_url = "sqlite://{db}"

[password]
memory_kib = 1024

[ldap]
url = "ldaps://dc1.example.com"
bind_dn = "cn=broker,dc=example,dc=com"
bind_password_file = "{password_file}"
base_dn = "dc=example,dc=com"

{extra}
"#,
        port = crate::harness::free_port(),
        db = dir.path().join("broker.db").display(),
        password_file = password_file.display(),
    );
    let path = dir.path().join("unified-login.toml");
    std::fs::write(&path, config).expect("write config");
    (dir, path)
}

/// Asserts that `serve` exited with status 1 and exactly one stderr line
/// that contains every part of `expected`.
fn assert_serve_fails(output: &Output, expected: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "serve exit status; stderr: {stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    for part in expected {
        assert!(stderr.contains(part), "expected '{part}' in: {stderr}");
    }
}

#[test]
fn ldap_with_oidc_fails_start() {
    let (dir, config) = config_with_ldap(
        "[oidc]\nname = \"Contoso\"\nissuer = \"https://idp.example/\"\nclient_id = \"broker\"\nclient_secret = \"s\"\n",
    );
    let output = serve_until_exit(&config, dir.path());
    assert_serve_fails(&output, &[SINGLE_SOURCE, "remove [ldap]", "[oidc]"]);
}

#[test]
fn ldap_with_saml_idp_table_fails_start() {
    let pem = ENTRA_CERT.replace('\n', "\\n");
    let (dir, config) = config_with_ldap(&format!(
        "[saml.idp]\nname = \"Contoso\"\nsso_url = \"https://idp.example/sso\"\nentity_id = \"https://idp.example/\"\ncertificates_pem = \"{pem}\"\n"
    ));
    let output = serve_until_exit(&config, dir.path());
    assert_serve_fails(&output, &[SINGLE_SOURCE, "[saml.idp]"]);
}

/// Saves SAML IdP settings with `saml set`, as an administrator would.
fn save_saml_idp(config: &Path, dir: &Path) -> Output {
    let certificates = dir.join("idp.pem");
    std::fs::write(&certificates, ENTRA_CERT).expect("write the IdP certificate");
    run_cli(
        config,
        dir,
        &[
            "saml",
            "set",
            "--name",
            "Contoso",
            "--sso-url",
            "https://idp.example/sso",
            "--entity-id",
            "https://idp.example/",
            "--certificates",
            certificates.to_str().expect("UTF-8 path"),
        ],
        "",
    )
}

#[test]
fn saved_saml_idp_fails_ldap_start() {
    let broker = Broker::prepare(Options::default());
    let saved = save_saml_idp(&broker.config_path, broker.data_dir());
    assert!(
        saved.status.success(),
        "{}",
        String::from_utf8_lossy(&saved.stderr)
    );

    let password_file = broker.data_dir().join("ldap-bind-password");
    std::fs::write(&password_file, "service-password\n").unwrap();
    broker.append_config(&format!(
        "[ldap]\nurl = \"ldaps://dc1.example.com\"\nbind_dn = \"cn=broker,dc=example,dc=com\"\nbind_password_file = \"{}\"\nbase_dn = \"dc=example,dc=com\"\n",
        password_file.display()
    ));
    let output = serve_until_exit(&broker.config_path, broker.data_dir());
    assert_serve_fails(
        &output,
        &[SINGLE_SOURCE, "https://idp.example/", "saml remove"],
    );

    let removed = broker.cli(&["saml", "remove"], "");
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    let again = broker.cli(&["saml", "remove"], "");
    assert_fails_with(&again, "nothing to remove");
}

#[test]
fn cl_auth_commands_fail_with_ldap() {
    let (dir, config) = config_with_ldap("");
    let add = run_cli(
        &config,
        dir.path(),
        &[
            "user",
            "add",
            "--login-id",
            "jane",
            "--email",
            "jane@example.com",
            "--first-name",
            "Jane",
            "--last-name",
            "Doe",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );

    let enable = run_cli(&config, dir.path(), &["cl-auth", "enable", "jane"], "");
    assert_fails_with(&enable, "Failed to enable CloudLink Authentication.");
    assert_fails_with(&enable, SINGLE_SOURCE);
    assert_eq!(enable.status.code(), Some(1));
    let show_output = run_cli(&config, dir.path(), &["user", "show", "jane"], "");
    let show_output = String::from_utf8_lossy(&show_output.stdout);
    assert!(
        show_output.contains("CL Auth:        no"),
        "nothing changed: {show_output}"
    );

    let set = save_saml_idp(&config, dir.path());
    assert_fails_with(&set, SINGLE_SOURCE);
    assert_fails_with(&set, "remove [ldap]");

    let metadata = dir.path().join("metadata.xml");
    std::fs::write(&metadata, "<EntityDescriptor/>").unwrap();
    let import = run_cli(
        &config,
        dir.path(),
        &[
            "saml",
            "import-metadata",
            metadata.to_str().unwrap(),
            "--name",
            "Contoso",
        ],
        "",
    );
    assert_fails_with(&import, SINGLE_SOURCE);

    let show = run_cli(&config, dir.path(), &["saml", "show"], "");
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.contains("No IdP is configured"),
        "nothing was saved: {show}"
    );
}

/// Runs `ldap test` for `user` with `password` on standard input.
fn ldap_test(config: &Path, dir: &Path, user: &str, password: &str) -> Output {
    run_cli(
        config,
        dir,
        &["ldap", "test", user],
        &format!("{password}\n"),
    )
}

/// Writes a copy of the broker's config with `from` replaced by `to`, and
/// returns its path.
fn config_variant(broker: &Broker, name: &str, from: &str, to: &str) -> PathBuf {
    let config = std::fs::read_to_string(&broker.config_path).expect("read config");
    assert!(
        config.contains(from),
        "'{from}' is not in the config:\n{config}"
    );
    let path = broker.data_dir().join(name);
    std::fs::write(&path, config.replace(from, to)).expect("write config");
    path
}

#[test]
fn ldap_test_names_failed_step() {
    let Some(mut setup) = default_setup("ldap_test_names_failed_step") else {
        return;
    };
    let broker = &setup.broker;
    let (config, dir) = (broker.config_path.clone(), broker.data_dir().to_path_buf());

    let works = ldap_test(&config, &dir, "Jane@Example.com", JANE.password);
    let stdout = String::from_utf8_lossy(&works.stdout);
    assert!(
        works.status.success(),
        "{}",
        String::from_utf8_lossy(&works.stderr)
    );
    assert!(stdout.contains("LDAP sign-in works for jane"), "{stdout}");
    assert!(
        stdout.contains("uid=jane,ou=people,dc=example,dc=com"),
        "{stdout}"
    );

    let cases = [
        ("jane", "wrong-password", "failed at the user bind step"),
        (
            "jane",
            "",
            "failed at the user bind step: the password is empty",
        ),
        ("nobody", JANE.password, "failed at the search step"),
        ("twin", TWIN.password, "found 2 entries"),
        ("gone", GONE.password, "found no entry"),
        (
            "ghost",
            JANE.password,
            "no user has the login ID or email 'ghost'",
        ),
    ];
    for (user, password, expected) in cases {
        let output = ldap_test(&config, &dir, user, password);
        assert_fails_with(&output, expected);
    }

    let wrong_service = config_variant(
        broker,
        "wrong-service.toml",
        "ldap-bind-password",
        "wrong-bind-password",
    );
    std::fs::write(
        dir.join("wrong-bind-password"),
        "not-the-service-password\n",
    )
    .unwrap();
    assert_fails_with(
        &ldap_test(&wrong_service, &dir, "jane", JANE.password),
        "failed at the service bind step: the directory rejected the service account cn=broker",
    );

    let other_ca = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(dir.join("other-ca.pem"), other_ca.cert.pem()).unwrap();
    let untrusted = config_variant(
        broker,
        "untrusted.toml",
        &setup.slapd.ca_file().display().to_string(),
        &dir.join("other-ca.pem").display().to_string(),
    );
    assert_fails_with(
        &ldap_test(&untrusted, &dir, "jane", JANE.password),
        "failed at the TLS step",
    );

    setup.slapd.stop();
    assert_fails_with(
        &ldap_test(&config, &dir, "jane", JANE.password),
        "failed at the connect step",
    );
}

#[tokio::test]
async fn silent_directory_times_out() {
    // The kernel completes TCP handshakes for a listener that never
    // accepts, so the broker connects and then waits for a response.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = silent.local_addr().expect("listener address").port();
    let mut broker = Broker::prepare(Options::default());
    let password_file = broker.data_dir().join("ldap-bind-password");
    std::fs::write(&password_file, "service-password\n").unwrap();
    broker.append_config(&format!(
        "[ldap]\nurl = \"ldap://127.0.0.1:{port}\"\nbind_dn = \"{}\"\nbind_password_file = \"{}\"\n\
         base_dn = \"{}\"\ntimeout_seconds = 1\n",
        slapd::SERVICE_DN,
        password_file.display(),
        slapd::BASE_DN,
    ));
    broker.add_user("jane", "jane@example.com");

    let output = broker.cli(&["ldap", "test", "jane"], "any-password\n");
    assert_fails_with(
        &output,
        "failed at the service bind step: the directory did not respond to the service bind",
    );

    broker.serve();
    let client = WebClient::new(&broker);
    let page = client.sign_in("jane", "any-password").await;
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        page.body
    );
    assert!(page.body.contains(DIRECTORY_UNAVAILABLE), "{}", page.body);
    let log = broker.log();
    assert_eq!(log.matches("alarm raised").count(), 1, "{log}");
    drop(silent);
}

#[test]
fn ldap_test_without_ldap_table_fails() {
    let broker = Broker::prepare(Options::default());
    let output = broker.cli(&["ldap", "test", "jane"], "password\n");
    assert_fails_with(&output, "no LDAP directory is configured");
}

#[test]
fn bad_ldap_table_is_one_line() {
    let (dir, config) = config_with_ldap("");
    let text = std::fs::read_to_string(&config).unwrap();
    let cases = [
        (
            "ldaps://dc1.example.com",
            "ldap://dc1.example.com",
            "unencrypted",
        ),
        (
            "base_dn = \"dc=example,dc=com\"",
            "base_dn = \"\"",
            "ldap.base_dn is empty",
        ),
        (
            "[ldap]",
            "[ldap]\nuser_filter = \"objectClass=user\"",
            "not an LDAP filter",
        ),
        (
            "[ldap]",
            "[ldap]\nstarttls = \"yes\"",
            "invalid configuration",
        ),
    ];
    for (from, to, expected) in cases {
        std::fs::write(&config, text.replace(from, to)).unwrap();
        let output = serve_until_exit(&config, dir.path());
        assert_fails_with(&output, expected);
        let output = run_cli(&config, dir.path(), &["user", "list"], "");
        assert_fails_with(&output, expected);
    }
}
