//! Settings fail loudly: every bad setting stops the server before it listens, with a message
//! that says what was expected, and a non-zero exit; good ones (host names) work.

use std::process::{Output, Stdio};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::PATIENCE;

/// Runs the server with `args` (and `env`) until it exits; its output.
async fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> Output {
    let data = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_livechat"));
    command
        .env("LIVECHAT_DATA_DIR", data.path())
        .env("LIVECHAT_BIND", "127.0.0.1:0")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(PATIENCE, command.output())
        .await
        .expect("a bad setting stops the server at once")
        .expect("run livechat")
}

/// Flags, environment, and what the refusal must say.
type BadSetting = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[tokio::test]
async fn a_bad_setting_stops_the_server_before_it_listens() {
    let cases: [BadSetting; 9] = [
        (&["--rate-burst", "5"], &[], "without LIVECHAT_RATE_LIMIT"),
        (
            &[],
            &[("LIVECHAT_RATE_LIMIT", "5/s"), ("LIVECHAT_RATE_BURST", "0")],
            "1 or more",
        ),
        (&["--bind", "8003"], &[], "HOST:PORT"),
        (&[], &[("REDIS_URL", "http://nope")], "expected redis://"),
        (&["--log", "livechat=loud"], &[], "not a log filter"),
        (
            &["--max-message-bytes", "18446744073709551615"],
            &[],
            "not a size",
        ),
        (
            &["--ping-interval", "99999999999999999999d"],
            &[],
            "duration",
        ),
        (&["--auth", "required"], &[], "LIVECHAT_JWT_SECRET"),
        (&["--data-dir", "/proc/livechat"], &[], "data directory"),
    ];
    for (args, env, expected) in cases {
        let output = run_to_exit(args, env).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{args:?} {env:?} started: {stderr}"
        );
        assert!(stderr.contains(expected), "{args:?} {env:?}: {stderr}");
        assert!(
            !stderr.contains("listening on"),
            "{args:?}: listened first: {stderr}"
        );
    }
}

#[tokio::test]
async fn host_names_bind_and_json_logs_are_one_object_a_line() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_livechat"))
        .arg("--data-dir")
        .arg(data.path())
        .env("LIVECHAT_BIND", "localhost:0")
        .env("LIVECHAT_LOG_FORMAT", "json")
        .env("LIVECHAT_JWT_SECRET", "do-not-log-me")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start livechat");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    let listening = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.expect("read") {
            let entry: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            seen.push(line);
            if entry["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("listening on http://"))
            {
                return true;
            }
        }
        false
    })
    .await
    .expect("listening in time");
    assert!(listening, "{seen:?}");
    let start = seen
        .iter()
        .find(|line| line.contains("livechat ready"))
        .expect("a start-up line with the settings");
    assert!(
        start.contains("jwt_secret=set") && start.contains("version"),
        "{start}"
    );
    assert!(!seen.iter().any(|line| line.contains("do-not-log-me")));
}

/// `livechat token --ttl 0` would print a token that is refused at once: it is refused itself.
#[tokio::test]
async fn a_token_that_would_expire_at_once_is_not_minted() {
    let output = Command::new(env!("CARGO_BIN_EXE_livechat"))
        .args(["token", "--sub", "alice", "--ttl", "0"])
        .env("LIVECHAT_JWT_SECRET", "a-secret-long-enough-for-hs256-use")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--ttl must be more than 0"));
    assert!(output.stdout.is_empty());
}
