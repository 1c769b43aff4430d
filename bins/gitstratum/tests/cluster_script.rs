//! `scripts/cluster.sh`: a whole cluster on this machine (a database of its own, three Garage
//! nodes, three frontends, one runner), used as its README says — then stopped, every process it
//! started gone and its database dropped.

use std::path::Path;
use std::process::Command;

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cluster.sh")
}

fn alive(pid: i64) -> bool {
    Command::new("kill").arg("-0").arg(pid.to_string()).status().is_ok_and(|s| s.success())
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("HOME", dir)
        .env("GIT_AUTHOR_NAME", "A")
        .env("GIT_AUTHOR_EMAIL", "a@example.com")
        .env("GIT_COMMITTER_NAME", "C")
        .env("GIT_COMMITTER_EMAIL", "c@example.com")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_script_starts_and_stops_a_whole_cluster() {
    if std::env::var_os("GITSTRATUM_TEST_POSTGRES_URL").is_none() {
        assert!(std::env::var_os("CI").is_none(), "CI is set but GITSTRATUM_TEST_POSTGRES_URL is not");
        eprintln!("note: GITSTRATUM_TEST_POSTGRES_URL is not set; skipping");
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("cluster");
    let up = Command::new("bash")
        .arg(script())
        .arg("up")
        .arg(&dir)
        .env("GITSTRATUM_BIN", env!("CARGO_BIN_EXE_gitstratum"))
        .output()
        .expect("run cluster.sh");
    if up.status.code() == Some(3) || String::from_utf8_lossy(&up.stderr).contains("no Garage binary") {
        assert!(std::env::var_os("CI").is_none(), "CI needs Garage: {}", String::from_utf8_lossy(&up.stderr));
        return;
    }
    assert!(up.status.success(), "cluster.sh up: {}", String::from_utf8_lossy(&up.stderr));
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("cluster.json")).expect("cluster.json")).expect("JSON");
    let frontends = info["frontends"].as_array().expect("frontends").clone();
    let nodes = info["object_nodes"].as_array().expect("object nodes").clone();
    let runners = info["runners"].as_array().expect("runners").clone();
    assert_eq!((frontends.len(), nodes.len(), runners.len()), (3, 3, 1), "{info}");
    let pids: Vec<i64> =
        frontends.iter().chain(&nodes).chain(&runners).map(|p| p["pid"].as_i64().expect("pid")).collect();
    assert!(pids.iter().all(|p| alive(*p)), "every process runs: {info}");
    let token = info["admin_token"].as_str().expect("token").to_owned();
    let database_url = info["database_url"].as_str().expect("database url").to_owned();

    // Used as the README says: a repository made on one frontend, pushed through another,
    // cloned through the third.
    let url = |i: usize| frontends[i]["url"].as_str().expect("url").to_owned();
    let created = gitstratum_server::http::client()
        .expect("client")
        .post(format!("{}/api/v1/repos", url(0)))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "app"}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status().as_u16(), 201);
    let remote = |i: usize| format!("http://x:{token}@{}/admin/app.git", url(i).trim_start_matches("http://"));
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir_all(&src).expect("dir");
    git(&src, &["init", "-q", "-b", "main"]);
    std::fs::write(src.join("a.txt"), "hello\n").expect("write");
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "first"]);
    git(&src, &["push", "-q", &remote(1), "main"]);
    git(tmp.path(), &["clone", "-q", &remote(2), dst.to_str().expect("utf-8")]);
    assert_eq!(git(&dst, &["rev-parse", "HEAD"]), git(&src, &["rev-parse", "HEAD"]));

    let down = Command::new("bash").arg(script()).arg("down").arg(&dir).output().expect("run cluster.sh");
    assert!(down.status.success(), "cluster.sh down: {}", String::from_utf8_lossy(&down.stderr));
    assert!(pids.iter().all(|p| !alive(*p)), "every process it started is gone");
    let db = database_url.rsplit('/').next().expect("database name").to_owned();
    let server = std::env::var("GITSTRATUM_TEST_POSTGRES_URL").expect("url");
    let listed = Command::new("psql")
        .arg(&server)
        .arg("-Atqc")
        .arg(format!("SELECT count(*) FROM pg_database WHERE datname = '{db}'"))
        .output()
        .expect("psql");
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "0", "its database is dropped");
}
