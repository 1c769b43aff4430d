//! `gitstratum workflow validate|plan` as a user runs them.

use std::path::Path;
use std::process::{Command, Output};

const VALID: &str = "name: CI\non:\n  push:\n    branches: [main]\njobs:\n  build:\n    runs-on: ubuntu-latest\n    strategy:\n      matrix:\n        node: [18, 20]\n    steps:\n      - run: npm test\n  deploy:\n    needs: build\n    runs-on: [self-hosted]\n    steps:\n      - run: ./deploy\n";
const INVALID: &str = "on: push\njobs:\n  __a:\n    runs-on: x\n    stepz: []\n";

fn gitstratum(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gitstratum")).args(args).current_dir(dir).output().expect("run gitstratum")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn validate_discovers_the_repositorys_workflows_and_reports_positions() {
    let repo = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(repo.path().join(".git")).expect(".git");
    let dir = repo.path().join(".github/workflows");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("ci.yml"), VALID).expect("write");
    std::fs::write(dir.join("notes.txt"), "not a workflow").expect("write");

    let out = gitstratum(repo.path(), &["workflow", "validate"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout), "ok: .github/workflows/ci.yml (2 jobs)\n");

    std::fs::write(dir.join("bad.yaml"), INVALID).expect("write");
    let nested = repo.path().join("src");
    std::fs::create_dir_all(&nested).expect("dir");
    let out = gitstratum(&nested, &["workflow", "validate"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("bad.yaml:5:5: unknown key 'stepz' in job '__a'"), "{stdout}");
    assert!(
        stdout.contains("bad.yaml:3:3: The identifier '__a' is invalid. IDs starting with '__' are reserved."),
        "{stdout}"
    );
    assert!(text(&out.stderr).contains("2 problems in 2 files"), "{}", text(&out.stderr));

    // A .gitstratum folder takes precedence over .github.
    std::fs::create_dir_all(repo.path().join(".gitstratum/workflows")).expect("dir");
    std::fs::write(repo.path().join(".gitstratum/workflows/only.yml"), VALID).expect("write");
    let out = gitstratum(repo.path(), &["workflow", "validate"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "ok: .gitstratum/workflows/only.yml (2 jobs)\n");
}

#[test]
fn validate_outside_a_repository_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = gitstratum(dir.path(), &["workflow", "validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is not inside a Git repository"), "{}", text(&out.stderr));
}

#[test]
fn plan_shows_the_job_graph_or_why_nothing_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("ci.yml"), VALID).expect("write");
    let out = gitstratum(dir.path(), &["workflow", "plan", "ci.yml", "--event", "push", "--ref", "refs/heads/main"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("'CI' runs on push to refs/heads/main: 3 jobs\n"), "{stdout}");
    assert!(stdout.contains("build (18)") && stdout.contains("build (20)"), "{stdout}");
    assert!(stdout.contains("deploy") && stdout.contains("needs: build"), "{stdout}");

    let out = gitstratum(dir.path(), &["workflow", "plan", "ci.yml", "--ref", "refs/heads/feature"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "'CI' does not run on push to refs/heads/feature\n");

    std::fs::write(dir.path().join("bad.yml"), INVALID).expect("write");
    let out = gitstratum(dir.path(), &["workflow", "plan", "bad.yml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("bad.yml:5:5:"), "{}", text(&out.stdout));

    // A call of this repository's reusable workflow shows the jobs it brings in.
    let workflows = dir.path().join(".github/workflows");
    std::fs::create_dir_all(&workflows).expect("dir");
    std::fs::write(
        workflows.join("build.yml"),
        "on: workflow_call\njobs:\n  compile:\n    runs-on: ubuntu-latest\n    steps: [{run: make}]\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("calls.yml"),
        "on: push\njobs:\n  build:\n    uses: ./.github/workflows/build.yml\n  after:\n    needs: build\n    runs-on: x\n",
    )
    .expect("write");
    let out = gitstratum(dir.path(), &["workflow", "plan", "calls.yml"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("build / compile") && stdout.contains("needs: build/compile"), "{stdout}");
}
