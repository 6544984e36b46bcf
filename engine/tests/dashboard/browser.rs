//! In a browser: Debian's headless Chromium sees the statistics.

use super::*;

const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

/// Debian's Chromium: `/usr/bin/chromium`, or `chromium` on the PATH.
pub(crate) fn chromium() -> PathBuf {
    installed("chromium", "chromium")
}

/// The program `name` of Debian's package `package`: `/usr/bin/<name>`, or on the PATH;
/// the test fails saying how to install it when it is neither.
pub(crate) fn installed(name: &str, package: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(name));
    std::iter::once(Path::new("/usr/bin").join(name))
        .chain(on_path)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is needed for the dashboard's browser tests and is not installed: run \
                 scripts/test.sh (which installs Debian's {package} package), or \
                 `apt-get install -y {package}`"
            )
        })
}

/// Runs headless Chromium with `args` (a fresh profile, no network beyond the page), at most
/// [`CHROMIUM_TIMEOUT`]: on timeout the browser process is killed (`kill_on_drop`; its helper
/// processes end with it). Returns its stdout.
async fn run_chromium(args: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().unwrap();
    // Dropping the unfinished future drops the child, which kills it.
    let Ok(output) = tokio::time::timeout(CHROMIUM_TIMEOUT, child.wait_with_output()).await else {
        panic!("Chromium did not finish within {CHROMIUM_TIMEOUT:?}: {args:?}");
    };
    let output = output.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Chromium failed ({}): {args:?}\n{stderr}",
        output.status
    );
    assert!(
        !stderr.contains("Content Security Policy"),
        "the page broke its own CSP:\n{stderr}"
    );
    stdout
}

pub(crate) fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("test-artifacts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_sees_the_stats() {
    let browser = chromium();
    let store = support::sqlite().await;
    let (app, seeded) = seeded(&store, config_with_tokens()).await;
    let (base, server) = support::serve_router(app).await;

    // The browser opens the address with the token, is redirected, and shows the page with
    // the cookie: the whole sign-in flow.
    let url = format!("{base}/dashboard?token={READER}");
    let dom = run_chromium(&[
        "--enable-logging=stderr".into(),
        "--dump-dom".into(),
        url.clone(),
    ])
    .await;
    assert!(
        dom.contains("data-stat=\"total\""),
        "Chromium did not get the dashboard ({}):\n{dom}",
        browser.display()
    );
    let stats: Value = reqwest::Client::new()
        .get(format!("{base}/v1/stats"))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_known_workload(&stats);
    assert_page_matches_stats(&dom, &stats);
    assert_eq!(listed(&dom, "overdue"), [seeded.overdue.to_string()]);

    let dir = artifacts_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    run_chromium(&[
        format!("--screenshot={}", png.display()),
        "--window-size=1280,1600".into(),
        url,
    ])
    .await;
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 20_000,
        "not a plausible screenshot: {} bytes",
        bytes.len()
    );
    println!(
        "dashboard screenshot: {}",
        png.canonicalize().unwrap_or(png).display()
    );
    server.abort();
}

/// The subject's cancel link in a browser: the page renders within its CSP, shows the
/// confirmation and one button, and loading it (as a mail scanner would) cancels nothing.
/// Pressing the button needs a script or a debugging protocol, which this test does not
/// drive: the form's POST is covered over HTTP by `tests/cancel_link.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_opens_the_cancel_link_and_nothing_changes() {
    chromium();
    let store = support::sqlite().await;
    let database = store.database();
    let requests = engine(&database, config_with_tokens());
    let submitted = requests
        .submit(
            Submission {
                subject: [("user_id".to_owned(), "mail-reader".to_owned())].into(),
                ..Submission::default()
            },
            None,
            "test",
        )
        .await
        .unwrap();
    let id = submitted.loaded.request.id;
    let key = MasterKey::from_bytes([7; 32]);
    let app = router(AppState {
        requests: requests.clone(),
        key: key.clone(),
    });
    let (base, server) = support::serve_router(app).await;

    let url = format!(
        "{base}/v1/requests/{id}/cancel?token={}",
        key.cancel_token(id)
    );
    let dom = run_chromium(&["--enable-logging=stderr".into(), "--dump-dom".into(), url]).await;
    assert!(dom.contains("data-outcome=\"confirm\""), "{dom}");
    assert!(dom.contains("<button type=\"submit\">"), "{dom}");
    assert!(!dom.contains("mail-reader"), "{dom}");
    let view = requests.show(id).await.unwrap();
    assert_eq!(view.status.to_string(), "pending");
    assert_eq!(view.version, 1, "a GET appended an event");
    server.abort();
}
