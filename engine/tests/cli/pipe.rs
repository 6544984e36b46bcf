//! Output into a pipe whose reader stops early (`lethe submit | head -1`): the command still
//! does its work and ends without a word, with the status of a Unix tool ended by `SIGPIPE`.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_early_ends_the_command_quietly_and_the_submission_stands() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["submit", "--subject", "user_id=pipe-1"][..],
        &["submit", "--subject", "user_id=pipe-1", "--json"][..],
    ] {
        let mut child = lethe(dir.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reading end is closed before `lethe` has written a byte: every write fails.
        drop(child.stdout.take());
        let output = timeout(COMMAND_DEADLINE, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("lethe {args:?} did not finish"))
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(141), "lethe {args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("error"),
            "lethe {args:?}: {stderr}"
        );
    }
    // The first one was recorded: the second found it as the subject's open request.
    let again = run(dir.path(), &["submit", "--subject", "user_id=pipe-1"])
        .await
        .ok();
    assert!(
        again
            .stdout
            .lines()
            .next()
            .unwrap()
            .ends_with(" already submitted"),
        "{again:?}"
    );
}
