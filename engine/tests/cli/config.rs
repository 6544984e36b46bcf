//! `lethe.toml`, the environment and flags, usage errors and their exit codes.

use super::*;

fn write_config(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[tokio::test]
async fn a_bad_duration_in_lethe_toml_fails_fast_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "lethe.toml",
        "[policy]\ngrace_period = \"soon\"\n",
    );
    let migrate = run(dir.path(), &["migrate"]).await.expect(1);
    assert!(migrate.stderr.contains("grace_period"), "{migrate:?}");
    assert!(migrate.stderr.contains("lethe.toml"), "{migrate:?}");
    assert!(
        !dir.path().join("lethe-data").exists(),
        "no database before the config is good"
    );
    // Every command reads the config first.
    let submit = run(dir.path(), &["submit", "--subject", "user_id=1"])
        .await
        .expect(1);
    assert!(submit.stderr.contains("grace_period"), "{submit:?}");
}

#[tokio::test]
async fn an_unknown_config_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "lethe.toml",
        "[policy]\ngrase_period = \"1d\"\n",
    );
    let migrate = run(dir.path(), &["migrate"]).await.expect(1);
    assert!(migrate.stderr.contains("grase_period"), "{migrate:?}");
}

#[tokio::test]
async fn a_reminder_after_the_grace_period_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "lethe.toml",
        "[policy]\ngrace_period = \"2d\"\nreminders = [\"1d\", \"3d\"]\n",
    );
    let migrate = run(dir.path(), &["migrate"]).await.expect(1);
    assert!(
        migrate.stderr.contains("policy.reminders[1]"),
        "{migrate:?}"
    );
}

#[tokio::test]
async fn a_missing_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let migrate = run(dir.path(), &["--config", "missing.toml", "migrate"])
        .await
        .expect(1);
    assert!(migrate.stderr.contains("missing.toml"), "{migrate:?}");
    let migrate = run_with_env(dir.path(), &["migrate"], &[("LETHE_CONFIG", "absent.toml")])
        .await
        .expect(1);
    assert!(migrate.stderr.contains("absent.toml"), "{migrate:?}");
    // Without a file and without asking for one, the defaults apply.
    run(dir.path(), &["migrate"]).await.ok();
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["submit"][..],
        &["submit", "--subject", "42"],
        &["frobnicate"],
        &["show"],
        &[],
    ] {
        let refused = run(dir.path(), args).await.expect(2);
        assert!(!refused.stderr.is_empty(), "{refused:?}");
    }
    let help = run(dir.path(), &["--help"]).await.ok();
    for command in ["serve", "migrate", "submit", "show", "history", "verify"] {
        assert!(help.stdout.contains(command), "{help:?}");
    }
}

#[tokio::test]
async fn unknown_and_malformed_request_ids_fail_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), &["migrate"]).await.ok();
    for command in ["show", "history", "verify"] {
        let malformed = run(dir.path(), &[command, "not-a-uuid"]).await.expect(1);
        assert!(malformed.stderr.contains("not-a-uuid"), "{malformed:?}");
        let unknown = uuid::Uuid::now_v7().to_string();
        let missing = run(dir.path(), &[command, &unknown]).await.expect(1);
        assert!(missing.stderr.contains("no request"), "{missing:?}");
        assert!(missing.stderr.contains(&unknown), "{missing:?}");
    }
}
#[tokio::test]
async fn reading_before_anything_was_submitted_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = uuid::Uuid::now_v7().to_string();
    let show = run(dir.path(), &["show", &unknown]).await.expect(1);
    assert!(show.stderr.contains("no request"), "{show:?}");
    let verify = run(dir.path(), &["verify"]).await.ok();
    assert!(verify.stdout.starts_with("ok"), "{verify:?}");
}

/// A config with a two-second grace period is honoured: the request is due two seconds after
/// receipt, and reminded one second before.
#[tokio::test]
async fn a_short_grace_period_from_lethe_toml_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "lethe.toml",
        "[policy]\ngrace_period = \"2s\"\nreminders = [\"1s\"]\n",
    );
    let submit = run(dir.path(), &["submit", "--subject", "user_id=7", "--json"])
        .await
        .ok();
    let id = submit.json()["id"].as_str().unwrap().to_owned();
    let show = run(dir.path(), &["show", &id, "--json"]).await.ok();
    let shown = show.json();
    let due_at = time(&shown["due_at"]);
    assert_eq!(
        due_at - time(&shown["received_at"]),
        TimeDelta::seconds(2),
        "{show:?}"
    );
    let reminders = shown["reminders"].as_array().unwrap();
    assert_eq!(reminders.len(), 1, "{show:?}");
    assert_eq!(time(&reminders[0]["at"]), due_at - TimeDelta::seconds(1));
    assert_eq!(shown["status"], "pending");
}

/// `LETHE_CONFIG` and `LETHE_DATABASE_URL` are honoured, and `--database-url` beats the
/// environment.
#[tokio::test]
async fn the_environment_overrides_the_defaults_and_flags_override_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let config = elsewhere.path().join("custom.toml");
    std::fs::write(&config, "[policy]\ngrace_period = \"5s\"\nreminders = []\n").unwrap();
    let env_db = elsewhere.path().join("env/lethe.db");
    let env_url = format!("sqlite://{}", env_db.display());
    let env = [
        ("LETHE_CONFIG", config.to_str().unwrap()),
        ("LETHE_DATABASE_URL", env_url.as_str()),
    ];

    let submit = run_with_env(
        dir.path(),
        &["submit", "--subject", "user_id=1", "--json"],
        &env,
    )
    .await
    .ok();
    let submitted = submit.json();
    assert_eq!(
        time(&submitted["due_at"]) - time(&submitted["received_at"]),
        TimeDelta::seconds(5)
    );
    assert!(
        env_db.is_file(),
        "the database named by LETHE_DATABASE_URL was used"
    );
    assert!(
        !dir.path().join("lethe-data/lethe.db").exists(),
        "not the default one"
    );

    let flag_db = elsewhere.path().join("flag/lethe.db");
    let flag_url = format!("sqlite://{}", flag_db.display());
    let id = submitted["id"].as_str().unwrap();
    run_with_env(dir.path(), &["show", id], &env).await.ok();
    run_with_env(dir.path(), &["migrate", "--database-url", &flag_url], &env)
        .await
        .ok();
    run_with_env(dir.path(), &["show", id, "--database-url", &flag_url], &env)
        .await
        .expect(1);
    assert!(flag_db.is_file());
}

/// With `LETHE_MASTER_KEY_FILE` the cancel token comes from that key, and no development key
/// is written; a malformed key file is refused, naming it.
#[tokio::test]
async fn the_master_key_file_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("master.key");
    let bytes = [0x42_u8; 32];
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&key_file, format!("{hex}\n")).unwrap();
    let env = [("LETHE_MASTER_KEY_FILE", key_file.to_str().unwrap())];

    let submit = run_with_env(
        dir.path(),
        &["submit", "--subject", "user_id=1", "--json"],
        &env,
    )
    .await
    .ok();
    let submitted = submit.json();
    let id: RequestId = submitted["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        submitted["cancel_token"],
        MasterKey::from_bytes(bytes).cancel_token(id)
    );
    assert!(!dir.path().join("lethe-data/master.key").exists());

    std::fs::write(&key_file, "not a key").unwrap();
    let refused = run_with_env(dir.path(), &["submit", "--subject", "user_id=1"], &env)
        .await
        .expect(1);
    assert!(refused.stderr.contains("master.key"), "{refused:?}");
}

#[tokio::test]
async fn serve_warns_of_inline_secrets_and_reads_the_others_from_files_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notifier-secret"), "n0tifier\n").unwrap();
    let cleaners =
        "[[cleaners]]\nname = \"billing\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\n\
                    secret = \"inline-whsec\"\n\
                    [[cleaners]]\nname = \"crm\"\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\n\
                    secret_env = \"LETHE_TEST_CRM_SECRET\"\n";
    write_config(
        dir.path(),
        "lethe.toml",
        &format!(
            "[notifier]\nurl = \"http://127.0.0.1:9/\"\nsecret_file = \"notifier-secret\"\n{cleaners}"
        ),
    );
    let mut command = lethe(dir.path());
    command.env("LETHE_TEST_CRM_SECRET", "crm-whsec");
    let server = Server::spawn(command, &[]).await;
    let log = server.log();
    assert!(
        log.contains("cleaners[0].secret_env or cleaners[0].secret_file"),
        "{log}"
    );
    assert!(!log.contains("cleaners[1].secret"), "{log}");
    assert!(!log.contains("notifier.secret"), "{log}");
    assert!(
        !log.contains("inline-whsec") && !log.contains("crm-whsec"),
        "{log}"
    );
    server.kill().await;

    // The variable unset: every command stops at once, naming the setting.
    let mut command = lethe(dir.path());
    command.env_remove("LETHE_TEST_CRM_SECRET");
    let run = run_command(command, &["serve"], &[]).await.expect(1);
    assert!(run.stderr.contains("cleaners[1].secret_env"), "{run:?}");
    assert!(
        run.stderr.contains("LETHE_TEST_CRM_SECRET is not set"),
        "{run:?}"
    );
}
