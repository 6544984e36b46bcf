//! The master key: required on Postgres, a different one refused, and rotated while serving.

use super::*;

/// The finding this guards against: on Postgres the key used to default to
/// `./lethe-data/master.key` in whatever directory `lethe` ran. Now without
/// `LETHE_MASTER_KEY_FILE` every command that needs the key refuses, naming the variable and
/// the flag; `--dev-master-key` opts in, and the same flag in another directory (another
/// development key) is refused naming both fingerprints, while `history` there still shows
/// every event with the subject sealed, and `verify`, `show` and `audit export` need no key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_needs_an_explicit_master_key() {
    let t = support::postgres().await;
    let url = t.database_url();
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    for args in [
        vec!["submit", "--subject", "user_id=1", "--database-url", &url],
        vec!["serve", "--listen", "127.0.0.1:0", "--database-url", &url],
    ] {
        let refused = run_without_key(here.path(), &args).await.expect(1);
        assert!(
            refused.stderr.contains("LETHE_MASTER_KEY_FILE")
                && refused.stderr.contains("--dev-master-key"),
            "{refused:?}"
        );
    }
    assert!(!here.path().join("lethe-data").exists(), "no key was made");

    let dev = |dir: &Path, args: &[&str]| {
        let mut all = vec!["--dev-master-key", "--database-url", &url];
        all.extend_from_slice(args);
        let all: Vec<String> = all.into_iter().map(ToOwned::to_owned).collect();
        let dir = dir.to_owned();
        async move {
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            run_without_key(&dir, &all).await
        }
    };
    let submitted = dev(here.path(), &["submit", "--subject", "user_id=7", "--json"])
        .await
        .ok();
    let id = submitted.json()["id"].as_str().unwrap().to_owned();
    let here_key = fingerprint(&here.path().join("lethe-data/master.key"));
    dev(here.path(), &["history", &id, "--json"]).await.ok();

    let refused = dev(there.path(), &["submit", "--subject", "user_id=8"])
        .await
        .expect(1);
    let there_key = fingerprint(&there.path().join("lethe-data/master.key"));
    assert_ne!(here_key, there_key);
    assert!(
        refused.stderr.contains(&here_key) && refused.stderr.contains(&there_key),
        "{refused:?}"
    );
    let history = dev(there.path(), &["history", &id, "--json"]).await.ok();
    let json = history.json();
    assert_eq!(json["subject"], "sealed", "{history:?}");
    assert_eq!(json["verified"], true, "{history:?}");
    assert_eq!(json["events"][0]["type"], "Received", "{history:?}");
    assert!(history.stderr.contains(&here_key), "{history:?}");
    let history = run_without_key(there.path(), &["history", &id, "--database-url", &url])
        .await
        .ok();
    assert!(history.stdout.contains("Subject: sealed"), "{history:?}");
    assert!(
        history.stdout.contains("Hash chain: verified"),
        "{history:?}"
    );
    run_without_key(there.path(), &["verify", "--database-url", &url])
        .await
        .ok();
    // Commands on a request's state need no key; a result typed by hand does (its detail is
    // scrubbed of the subject's identifiers, so the subject must open).
    run_without_key(
        there.path(),
        &["hold", &id, "--reason", "audit", "--database-url", &url],
    )
    .await
    .ok();
    let refused = run_without_key(
        there.path(),
        &["confirm", &id, "archive", "--database-url", &url],
    )
    .await
    .expect(1);
    assert!(
        refused.stderr.contains("LETHE_MASTER_KEY_FILE"),
        "{refused:?}"
    );
    run_without_key(there.path(), &["show", &id, "--database-url", &url])
        .await
        .ok();
    let today = Utc::now().date_naive().to_string();
    let export = run_without_key(
        there.path(),
        &[
            "audit",
            "export",
            "--from",
            &today,
            "--to",
            &today,
            "--database-url",
            &url,
        ],
    )
    .await
    .ok();
    assert!(export.stdout.contains(&id), "{export:?}");
}

/// A key other than the one the database records is refused by `submit` and `serve`, naming
/// both fingerprints; `history` with it still shows every event and the verdict, with the
/// subject sealed (and a warning naming both fingerprints); with the right key it opens.
async fn a_different_key_is_refused_and_reads_show_the_subject_sealed(t: TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = t.database_url();
    let right = support::binary::key_file(dir.path());
    let wrong = support::binary::write_key(dir.path(), "wrong.key", [0x77; 32]);
    let wrong_env = [("LETHE_MASTER_KEY_FILE", wrong.to_str().unwrap())];
    let submitted = run(
        dir.path(),
        &[
            "submit",
            "--subject",
            "user_id=9",
            "--json",
            "--database-url",
            &url,
        ],
    )
    .await
    .ok();
    let id = submitted.json()["id"].as_str().unwrap().to_owned();
    let (right_key, wrong_key) = (fingerprint(&right), fingerprint(&wrong));

    for args in [
        vec!["submit", "--subject", "user_id=10", "--database-url", &url],
        vec!["serve", "--listen", "127.0.0.1:0", "--database-url", &url],
    ] {
        let refused = run_with_env(dir.path(), &args, &wrong_env).await.expect(1);
        assert!(
            refused.stderr.contains(&right_key) && refused.stderr.contains(&wrong_key),
            "{refused:?}"
        );
    }
    let history = run_with_env(
        dir.path(),
        &["history", &id, "--json", "--database-url", &url],
        &wrong_env,
    )
    .await
    .ok();
    let json = history.json();
    assert_eq!(json["subject"], "sealed", "{history:?}");
    assert_eq!(json["verified"], true, "{history:?}");
    assert_eq!(json["events"].as_array().unwrap().len(), 1, "{history:?}");
    assert!(
        history.stderr.contains(&right_key) && history.stderr.contains(&wrong_key),
        "{history:?}"
    );
    let history = run(
        dir.path(),
        &["history", &id, "--json", "--database-url", &url],
    )
    .await
    .ok();
    assert_eq!(history.json()["subject"]["identifiers"]["user_id"], "9");
    let status = run(dir.path(), &["keys", "status", "--database-url", &url])
        .await
        .ok();
    assert!(
        status
            .stdout
            .contains(&format!("database key:   {right_key} current")),
        "{status:?}"
    );
}

/// `lethe keys rotate` while `lethe serve` (started with the old key) keeps taking
/// submissions: it finishes, the server learned the new key from the database (every subject
/// opens, lookups by subject and external id still answer with the first request, new cancel
/// tokens come from the new key), a cancel link from before the rotation still cancels, every
/// data key is under the new key alone, and the old key is refused from then on. SQLite is
/// for a single process (docs/OPERATIONS.md): there the server is stopped for the rotation
/// and started again with the new key (the in-process rotation in `key_rotation.rs` covers
/// serving during a rotation on both backends).
async fn keys_rotate_while_serving(t: TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = t.database_url();
    let old = support::binary::key_file(dir.path());
    let new = support::binary::write_key(dir.path(), "new.key", [0x42; 32]);
    let new_env = [("LETHE_MASTER_KEY_FILE", new.to_str().unwrap())];
    let while_serving = t.is_postgres();
    let mut serving = Some(Server::spawn(lethe(dir.path()), &["--database-url", &url]).await);
    let log = |serving: &Option<Server>| serving.as_ref().map(Server::log).unwrap_or_default();
    let client = http_client();
    let base = serving.as_ref().unwrap().url("");
    let mut requests = Vec::new();
    for n in 0..6 {
        let external = (n == 0).then_some("crm-rotate");
        let (status, body) = submit_as(&client, &base, format!("before-{n}"), external).await;
        assert_eq!(status, 201, "{body}");
        requests.push((format!("before-{n}"), body));
    }

    if !while_serving {
        serving.take().unwrap().kill().await;
    }
    let mut rotate = spawn_rotation(dir.path(), &new, &url);
    // Submissions while the rotation runs (bounded).
    let mut n = 0;
    let rotated = loop {
        if !while_serving {
            break rotate.wait().await.unwrap();
        }
        if let Some(status) = rotate.try_wait().unwrap() {
            break status;
        }
        assert!(n < 2_000, "the rotation did not finish:\n{}", log(&serving));
        let user = format!("during-{n}");
        let (status, body) = submit_as(&client, &base, user.clone(), None).await;
        assert_eq!(status, 201, "{body}\n{}", log(&serving));
        requests.push((user, body));
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let output = rotate.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        rotated.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (old_key, new_key) = (fingerprint(&old), fingerprint(&new));
    assert!(
        stdout.contains(&format!("rotated from {old_key} to {new_key}")),
        "{stdout}"
    );
    let server = match serving {
        Some(server) => {
            assert!(n > 0, "some submissions ran during the rotation");
            server
        }
        None => {
            let mut command = lethe(dir.path());
            command.envs(new_env);
            Server::spawn(command, &["--database-url", &url]).await
        }
    };

    every_subject_opens_under_the_new_key(&t, &client, &server, &requests, &new_key).await;
    lookups_and_cancel_links_still_answer(&client, &server, &requests, &new).await;
    server.kill().await;

    let refused = run(
        dir.path(),
        &["submit", "--subject", "user_id=1", "--database-url", &url],
    )
    .await
    .expect(1);
    assert!(
        refused.stderr.contains(&old_key) && refused.stderr.contains(&new_key),
        "{refused:?}"
    );
    let id = requests[2].1["id"].as_str().unwrap();
    let history = run_with_env(
        dir.path(),
        &["history", id, "--json", "--database-url", &url],
        &new_env,
    )
    .await
    .ok();
    assert_eq!(
        history.json()["subject"]["identifiers"]["user_id"],
        "before-2"
    );
}

/// A `lethe submit` over HTTP for `user` (with an external id if given): status and body.
async fn submit_as(
    client: &reqwest::Client,
    base: &str,
    user: String,
    external: Option<&'static str>,
) -> (u16, Value) {
    let url = format!("{base}/v1/requests");
    let mut body = serde_json::json!({"subject": {"user_id": user}});
    if let Some(external) = external {
        body["external_id"] = external.into();
    }
    let response = client.post(url).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json::<Value>().await.unwrap())
}

/// `lethe keys rotate` to the key in `new`, two keys a batch.
fn spawn_rotation(dir: &Path, new: &Path, url: &str) -> Child {
    lethe(dir)
        .args([
            "keys",
            "rotate",
            "--new-key-file",
            new.to_str().unwrap(),
            "--batch",
            "2",
            "--database-url",
            url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Every data key is under the new key, and every subject submitted opens.
async fn every_subject_opens_under_the_new_key(
    t: &TestStore,
    client: &reqwest::Client,
    server: &Server,
    requests: &[(String, Value)],
    new_key: &str,
) {
    let left = t
        .fetch_integers(&format!(
            "SELECT COUNT(*) FROM request_keys WHERE wrapped_key NOT LIKE '{new_key}:%'"
        ))
        .await;
    assert_eq!(left, [0], "every data key is under the new key");
    for (user, body) in requests {
        let id = body["id"].as_str().unwrap();
        let history: Value = client
            .get(server.url(&format!("/v1/requests/{id}/history")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            history["subject"]["identifiers"]["user_id"],
            *user,
            "{history}\n{}",
            server.log()
        );
    }
}

/// After the rotation, lookups by subject and external id answer with the first request, new
/// cancel tokens come from the new key, and a cancel link from before still cancels.
async fn lookups_and_cancel_links_still_answer(
    client: &reqwest::Client,
    server: &Server,
    requests: &[(String, Value)],
    new: &Path,
) {
    let base = server.url("");
    let submit = |user: &str, external| submit_as(client, &base, user.to_owned(), external);
    let (status, again) = submit("before-3", None).await;
    assert_eq!(
        (status, &again["id"]),
        (200, &requests[3].1["id"]),
        "{again}"
    );
    let (status, again) = submit("someone", Some("crm-rotate")).await;
    assert_eq!(
        (status, &again["id"]),
        (200, &requests[0].1["id"]),
        "{again}"
    );
    let (status, fresh) = submit("after", None).await;
    assert_eq!(status, 201);
    let fresh_id: RequestId = fresh["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        fresh["cancel_token"],
        MasterKey::read(new).unwrap().cancel_token(fresh_id)
    );

    let (_, first) = &requests[1];
    let cancelled = client
        .post(server.url(&format!(
            "/v1/requests/{}/cancel?token={}",
            first["id"].as_str().unwrap(),
            first["cancel_token"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200, "{}", server.log());
}
support::backends!(
    a_different_key_is_refused_and_reads_show_the_subject_sealed,
    keys_rotate_while_serving,
);
