//! The real `gitstratum serve` process: first start, the initial admin token, the API, SIGTERM,
//! restart, log formats and configuration errors.

use std::os::unix::fs::PermissionsExt;

use common::spawn;
use serde_json::{Value, json};

mod common;

async fn create_repo(base: &str, token: Option<&str>, name: &str) -> (u16, Value) {
    let mut req = gitstratum_server::http::client()
        .expect("client")
        .post(format!("{base}/api/v1/repos"))
        .json(&json!({"name": name}));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json body"))
}

#[tokio::test]
async fn first_start_serves_and_stops_cleanly() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let mut server = spawn(&data, &[], &[]);
    let base = server.base_url();

    // The one-time token: printed to stderr and written to a 0600 file, the same value.
    let token_file = data.join("initial-admin-token");
    let token = std::fs::read_to_string(&token_file).expect("token file").trim().to_owned();
    assert!(token.starts_with("gst_"));
    assert_eq!(std::fs::metadata(&token_file).expect("meta").permissions().mode() & 0o777, 0o600);
    assert!(server.stderr.iter().any(|l| l.trim() == token), "token printed on stderr");
    for part in ["git", "blobs", "platform.db", "config.toml", "secrets.key"] {
        assert!(data.join(part).exists(), "{part} missing from the data dir");
    }

    let health = gitstratum_server::http::client()
        .expect("client")
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(create_repo(&base, Some(&token), "demo").await.0, 201);
    assert_eq!(create_repo(&base, None, "demo2").await.0, 401);
    assert_eq!(create_repo(&base, Some(&token), "bad name").await.0, 422);
    assert_eq!(create_repo(&base, Some(&token), "demo").await.0, 409);

    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0; stderr:\n{}", server.stderr.join("\n"));
    assert!(server.stderr.iter().any(|l| l.contains("shut down cleanly")));

    // Second start: no new admin, no token printed; the old token and the repository remain.
    let mut again = spawn(&data, &[], &[]);
    let base = again.base_url();
    assert!(!again.stderr.iter().any(|l| l.contains("gst_")), "no second token");
    assert_eq!(std::fs::read_to_string(&token_file).expect("token").trim(), token);
    let resp = gitstratum_server::http::client()
        .expect("client")
        .get(format!("{base}/api/v1/repos/admin/demo"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(again.terminate().code(), Some(0));

    // The audit log recorded the bootstrap, the repository, and the embedded runner's token (made at
    // each start, the previous one revoked), and its chain verifies offline.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gitstratum"))
        .args(["admin", "audit", "verify", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("5 entries, hash chain verified"), "{stdout}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gitstratum"))
        .args(["admin", "audit", "verify", "--data-dir"])
        .arg(tmp.path().join("nowhere"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no platform.db"), "{:?}", out);
    assert!(!tmp.path().join("nowhere").exists(), "verify never creates a data directory");
}

#[tokio::test]
async fn json_logs_from_the_environment_and_flags_win() {
    let tmp = tempfile::tempdir().expect("temp dir");
    // The file asks for text on a fixed port; the environment asks for JSON; the flag sets port 0.
    std::fs::create_dir_all(tmp.path()).expect("dir");
    std::fs::write(tmp.path().join("config.toml"), "[server]\nlisten = \"127.0.0.1:1\"\n[log]\nformat = \"text\"\n")
        .expect("config");
    let mut server = spawn(tmp.path(), &[], &[("GITSTRATUM_LOG_FORMAT", "json")]);
    let line = server.wait_for("listening on");
    let parsed: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(parsed["level"], "INFO");
    let base = server.base_url_from(&line);
    let resp = gitstratum_server::http::client()
        .expect("client")
        .get(format!("{base}/healthz"))
        .header("x-request-id", "abc")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.headers()["x-request-id"], "abc");
    // (The embedded runner's requests are logged too; find the one we made.)
    let logged = loop {
        let line = server.wait_for("request finished");
        if line.contains("/healthz") {
            break line;
        }
    };
    let logged: Value = serde_json::from_str(&logged).expect("json");
    assert_eq!(logged["span"]["id"], "abc", "{logged}");
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn bad_configuration_exits_with_a_clear_message() {
    let tmp = tempfile::tempdir().expect("temp dir");
    for (args, env, expected) in [
        (vec!["--log-format", "yaml"], vec![], "log_format"),
        (vec![], vec![("GITSTRATUM_DATABASE_URL", "mysql://x")], "database_url"),
        (vec!["--log-level", "loud!"], vec![], "log_level"),
    ] {
        let mut p = spawn(tmp.path(), &args, &env);
        let status = p.wait();
        assert_eq!(status.code(), Some(1), "{args:?} {env:?}");
        let stderr = p.stderr.join("\n");
        assert!(stderr.contains(expected), "{expected:?} not in:\n{stderr}");
    }
}
