//! Loading, validating, triggering and planning whole workflow files.

use gitstratum_workflow::expr::{Dict, Value};
use gitstratum_workflow::model::{BoolOrExpr, BuiltinAction, NumberOrExpr, RunsOn, StepAction};
use gitstratum_workflow::plan::{PlanContext, plan};
use gitstratum_workflow::trigger::{PullRequestEvent, PushEvent, pull_request_triggers, push_triggers};
use gitstratum_workflow::{Workflow, load};

const CI: &str = r#"
name: CI
run-name: CI for ${{ github.ref }}
on:
  push:
    branches: [main, 'release/**']
    paths-ignore: ['docs/**']
  workflow_dispatch:
    inputs:
      level:
        type: choice
        options: [low, high]
        default: low
  schedule:
    - cron: '0 3 * * 1-5'
env:
  CARGO_TERM_COLOR: always
concurrency:
  group: ci-${{ github.ref }}
  cancel-in-progress: true
permissions:
  contents: read
jobs:
  build:
    name: Build
    runs-on: ${{ matrix.os }}
    concurrency: build-${{ matrix.os }}-${{ matrix.rust }}
    timeout-minutes: 30
    strategy:
      fail-fast: false
      matrix:
        os: [ubuntu-latest, self-hosted]
        rust: [stable, 1.95]
        exclude:
          - os: self-hosted
            rust: 1.95
        include:
          - os: ubuntu-latest
            experimental: true
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-depth: 0
      - id: build
        name: Build ${{ matrix.rust }}
        run: |
          cargo build
          echo "sha=$(git rev-parse HEAD)" >> "$GITHUB_OUTPUT"
        env:
          RUSTFLAGS: -D warnings
      - if: failure()
        run: echo failed
    outputs:
      sha: ${{ steps.build.outputs.sha }}
  test:
    needs: build
    runs-on: [self-hosted, linux]
    continue-on-error: ${{ github.event_name == 'schedule' }}
    if: github.ref == 'refs/heads/main'
    retry:
      max-attempts: 3
      delay-seconds: 5
      backoff: exponential
    steps:
      - run: cargo test
        timeout-minutes: 20
  report:
    needs: [build, test]
    if: ${{ always() }}
    runs-on: ubuntu-latest
    steps:
      - run: echo "${{ needs.build.outputs.sha }}"
"#;

fn github(reference: &str) -> Value {
    let mut d = Dict::new();
    d.insert("ref", Value::from(reference));
    d.insert("event_name", Value::from("push"));
    Value::object(d)
}

#[test]
fn a_realistic_workflow_loads_round_trips_and_plans() {
    let wf = load(CI).unwrap_or_else(|d| panic!("{d:?}"));
    assert_eq!(wf.name.as_deref(), Some("CI"));
    assert_eq!(wf.jobs.keys().collect::<Vec<_>>(), ["build", "test", "report"]);
    let build = &wf.jobs["build"];
    assert_eq!(build.runs_on, RunsOn::Expr("matrix.os".into()));
    assert_eq!(build.timeout_minutes, NumberOrExpr::Value(30.0));
    assert!(
        matches!(&build.steps[0].action, StepAction::Uses { action: BuiltinAction::Checkout, version, .. } if version == "v4")
    );
    assert_eq!(build.steps[2].condition.as_deref(), Some("failure()"));
    let test = &wf.jobs["test"];
    assert_eq!(test.continue_on_error, BoolOrExpr::Expr("github.event_name == 'schedule'".into()));
    assert_eq!(
        test.condition.as_deref(),
        Some("success() && (github.ref == 'refs/heads/main')"),
        "GitHub's implied success()"
    );
    assert_eq!(test.retry.as_ref().map(|r| (r.max_attempts, r.exponential)), Some((3, true)));
    assert_eq!(wf.jobs["report"].condition.as_deref(), Some("always()"));
    assert_eq!(wf.on.schedule.len(), 1);
    assert!(wf.on.workflow_dispatch.as_ref().is_some_and(|d| d.inputs.contains_key("level")));

    // The model serializes, so a run can keep the exact spec it started with.
    let stored = serde_json::to_string(&wf).expect("serializes");
    let back: Workflow = serde_json::from_str(&stored).expect("deserializes");
    assert_eq!(back, wf);

    let ctx = PlanContext { github: github("refs/heads/main"), ..Default::default() };
    let planned = plan(&wf, &ctx).expect("plans");
    assert_eq!(planned.run_name.as_deref(), Some("CI for refs/heads/main"));
    assert_eq!(
        planned.concurrency.as_ref().map(|c| (c.group.as_str(), c.cancel_in_progress)),
        Some(("ci-refs/heads/main", true))
    );
    let jobs = planned.jobs;
    let names: Vec<&str> = jobs.iter().map(|j| j.display_name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Build (ubuntu-latest, stable, true)",
            "Build (ubuntu-latest, 1.95, true)",
            "Build (self-hosted, stable)",
            "test",
            "report"
        ]
    );
    assert_eq!(jobs[0].runs_on.as_deref(), Some(&["ubuntu-latest".to_owned()][..]));
    assert_eq!(jobs[2].runs_on.as_deref(), Some(&["self-hosted".to_owned()][..]));
    assert_eq!(jobs[3].runs_on.as_deref(), Some(&["self-hosted".to_owned(), "linux".to_owned()][..]));
    assert_eq!(jobs[4].needs, ["build", "test"]);
    assert_eq!(jobs[1].concurrency.as_ref().map(|c| c.group.as_str()), Some("build-ubuntu-latest-1.95"));
    assert_eq!(jobs[3].concurrency, None);
}

#[test]
fn a_matrix_from_needs_is_planned_later() {
    let wf = load(
        "on: push\njobs:\n  setup:\n    runs-on: x\n    steps: [{run: echo}]\n    outputs: {m: '${{ steps.s.outputs.m }}'}\n  fan:\n    needs: setup\n    runs-on: x\n    strategy:\n      matrix: ${{ fromJSON(needs.setup.outputs.m) }}\n    steps: [{run: echo}]\n",
    )
    .unwrap_or_else(|d| panic!("{d:?}"));
    let jobs = plan(&wf, &PlanContext::default()).expect("plans").jobs;
    assert_eq!(jobs.len(), 2);
    assert!(jobs[1].deferred && jobs[1].matrix.is_none());
}

#[test]
fn fail_fast_and_max_parallel_may_be_expressions() {
    let wf = load(
        "on: push\njobs:\n  a:\n    runs-on: x\n    strategy:\n      fail-fast: ${{ github.ref != 'refs/heads/main' }}\n      max-parallel: ${{ github.ref == 'refs/heads/main' && 2 || 5 }}\n      matrix: {n: [1, 2, 3]}\n    steps: [{run: echo}]\n  b:\n    runs-on: x\n    strategy:\n      matrix: {n: [1]}\n    steps: [{run: echo}]\n  c:\n    runs-on: x\n    strategy:\n      max-parallel: ${{ 'lots' }}\n      matrix: {n: [1]}\n    steps: [{run: echo}]\n",
    )
    .unwrap_or_else(|d| panic!("{d:?}"));
    let on = |git_ref: &str| PlanContext { github: github(git_ref), ..PlanContext::default() };
    let jobs = |wf: &Workflow, git_ref: &str| {
        let mut wf = wf.clone();
        wf.jobs.shift_remove("c");
        plan(&wf, &on(git_ref)).expect("plans").jobs
    };
    let main = jobs(&wf, "refs/heads/main");
    assert_eq!((main[0].fail_fast, main[0].max_parallel), (false, Some(2)));
    assert_eq!((main[3].fail_fast, main[3].max_parallel), (true, None), "the defaults");
    let topic = jobs(&wf, "refs/heads/topic");
    assert_eq!((topic[0].fail_fast, topic[0].max_parallel), (true, Some(5)));
    // A job that cannot be planned fails alone, saying why; the others run.
    let planned = plan(&wf, &on("refs/heads/main")).expect("plans");
    let c = planned.jobs.iter().find(|j| j.job_id == "c").expect("c");
    let err = c.failure.as_deref().expect("c fails");
    assert!(err.contains("job 'c'") && err.contains("max-parallel"), "{err}");
}

/// Each invalid file, the line and column of the first diagnostic, and what it must say.
const INVALID: &[(&str, u32, u32, &str)] = &[
    ("on: push\njobs:\n  a:\n    runs-on: x\n    stepz: []\n", 5, 5, "unknown key 'stepz' in job 'a'"),
    (
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps: [{run: echo}]\n  a:\n    runs-on: x\n",
        6,
        3,
        "duplicate key \"a\" (first at line 3)",
    ),
    (
        "on: push\njobs:\n  1bad:\n    runs-on: x\n    steps: [{run: echo}]\n",
        3,
        3,
        "The identifier '1bad' is invalid. IDs may only contain alphanumeric characters",
    ),
    (
        "on: push\njobs:\n  a:\n    needs: nope\n    runs-on: x\n    steps: [{run: echo}]\n",
        3,
        3,
        "job 'a' needs 'nope', which is not a job",
    ),
    (
        "on: push\njobs:\n  a:\n    needs: c\n    runs-on: x\n    steps: [{run: echo}]\n  b:\n    needs: a\n    runs-on: x\n    steps: [{run: echo}]\n  c:\n    needs: b\n    runs-on: x\n    steps: [{run: echo}]\n",
        3,
        3,
        "cycle: a -> c -> b -> a",
    ),
    (
        "on: push\njobs:\n  a:\n    runs-on: x\n    strategy:\n      matrix:\n        os: []\n    steps: [{run: echo}]\n",
        7,
        13,
        "matrix vector 'os' does not contain any values",
    ),
    (
        "on:\n  schedule:\n    - cron: '61 * * * *'\njobs:\n  a:\n    runs-on: x\n    steps: [{run: echo}]\n",
        3,
        13,
        "minute field \"61\": 61 is outside 0-59",
    ),
    (
        "on:\n  push:\n    branches: ['[abc']\njobs:\n  a:\n    runs-on: x\n    steps: [{run: echo}]\n",
        3,
        15,
        "invalid pattern \"[abc\": unclosed '['",
    ),
    ("on: push\njobs:\n  a:\n    steps: [{run: echo}]\n", 3, 3, "job 'a' has neither 'runs-on' nor 'uses'"),
    (
        "on: push\njobs:\n  a:\n    runs-on: ${{ secrets.X }}\n    steps: [{run: echo}]\n",
        4,
        14,
        "Unrecognized named-value: 'secrets'",
    ),
    (
        "on: push\njobs:\n  ${{ x }}:\n    runs-on: x\n    steps: [{run: echo}]\n",
        3,
        3,
        "The identifier '${{ x }}' is invalid",
    ),
    ("on: push\njobs:\n  __a:\n    runs-on: x\n", 3, 3, "IDs starting with '__' are reserved"),
    ("on: push\njobs:\n  build:\n    runs-on: x\n  BUILD:\n    runs-on: x\n", 5, 3, "'BUILD' is already defined"),
    (
        "on: push\njobs:\n  a:\n    runs-on: !!bool test\n",
        4,
        14,
        "The value 'test' on line 4 and column 14 is invalid for the type 'tag:yaml.org,2002:bool'",
    ),
    (
        "on: push\njobs:\n  a:\n    runs-on: x\n    container:\n      options: --cpus 1\n",
        6,
        7,
        "Container image cannot be empty",
    ),
    (
        "on:\n  workflow_call:\n    inputs:\n      x:\n        required: true\n",
        5,
        9,
        "required property is missing: type",
    ),
    (
        "on: push\njobs:\n  a:\n    runs-on: x\n    env:\n      A: \"bad ${{ insert }}\"\n",
        6,
        10,
        "The directive 'insert' is not allowed in this context",
    ),
    ("on: push\njobs:\n  a:\n    runs-on: x\n    secrets: inhrit\n", 5, 14, "must be 'inherit' or a mapping"),
    ("on: push\njobs:\n  a:\n    runs-on: {group: ent/org/g}\n", 4, 22, "Invalid runs-on group name 'ent/org/g'"),
    (
        "on: push\njobs:\n  a:\n    needs: ${{ x }}\n    runs-on: x\n    steps: [{run: echo}]\n",
        4,
        12,
        "expressions are not allowed in job 'a': needs",
    ),
    (
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - uses: badrepo@v1\n",
        6,
        15,
        "Expected format {org}/{repo}[/path]@ref. Actual 'badrepo@v1'",
    ),
    (
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo\n        uses: actions/checkout@v4\n",
        6,
        9,
        "has both 'run' and 'uses'",
    ),
    (
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo ${{ github.\n",
        6,
        14,
        "'${{' is not closed with '}}'",
    ),
    (
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo ${{ github. }}\n",
        6,
        14,
        "Unexpected symbol: 'EOF'. Located at position 8 within expression: github.",
    ),
    (
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - if: ${{ }}\n        run: echo\n",
        6,
        13,
        "An expression was expected",
    ),
    (
        "on: push\njobs:\n  a:\n    runs-on: x\n    timeout-minutes: soon\n    steps: [{run: echo}]\n",
        5,
        22,
        "must be a number or an expression, found a string",
    ),
    ("jobs:\n  a:\n    runs-on: x\n    steps: [{run: echo}]\n", 1, 1, "no 'on' section"),
    ("on: push\njobs: {}\n", 2, 7, "at least one job"),
    ("- just\n- a list\n", 1, 1, "must be a mapping with 'on' and 'jobs'"),
    (
        "on: push\njobs:\n  a: &x\n    runs-on: x\n    steps: [{run: echo}]\n  b:\n    <<: *x\n",
        7,
        5,
        "merge keys (<<) are not supported",
    ),
    ("on: push\n---\njobs: {}\n", 2, 1, "exactly one YAML document"),
    (
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps: [{run: echo, id: s}, {run: echo, id: s}]\n",
        5,
        33,
        "step id 's' is used twice",
    ),
    (
        "on:\n  push:\n    branches: [main]\n    branches-ignore: [dev]\njobs:\n  a:\n    runs-on: x\n    steps: [{run: echo}]\n",
        3,
        5,
        "cannot use both 'branches' and 'branches-ignore'",
    ),
    ("on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - uses: actions/checkout\n", 6, 15, "needs a version"),
];

#[test]
fn invalid_files_get_precise_diagnostics() {
    for (source, line, col, needle) in INVALID {
        let diags = load(source).expect_err(source);
        let first = &diags[0];
        assert!(
            diags.iter().any(|d| d.message.contains(needle)),
            "{source:?}: no diagnostic says {needle:?}; got {diags:#?}"
        );
        let hit = diags.iter().find(|d| d.message.contains(needle)).unwrap_or(first);
        assert_eq!((hit.pos.line, hit.pos.col), (*line, *col), "{source:?}: {hit}");
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let diags = load("on: push\njobs:\n  a:\n    runs-on: x\n    bogus: 1\n    steps: [{run: echo}]\n  b:\n    needs: zz\n    steps: [{run: echo}]\n").expect_err("invalid");
    assert!(diags.len() >= 3, "{diags:#?}");
    let rendered = diags[0].display_in(".github/workflows/ci.yml").to_string();
    assert!(rendered.starts_with(".github/workflows/ci.yml:5:5: unknown key 'bogus'"), "{rendered}");
}

fn push(wf: &Workflow, git_ref: &str, paths: Option<&[&str]>) -> bool {
    let owned: Option<Vec<String>> = paths.map(|p| p.iter().map(|s| (*s).to_owned()).collect());
    push_triggers(wf, &PushEvent { git_ref, changed_paths: owned.as_deref(), deleted: false })
}

#[test]
fn push_filters_follow_githubs_rules() {
    let steps = "jobs:\n  a:\n    runs-on: x\n    steps: [{run: echo}]\n";
    let wf = |on: &str| load(&format!("{on}\n{steps}")).unwrap_or_else(|d| panic!("{on}: {d:?}"));

    let any = wf("on: push");
    assert!(push(&any, "refs/heads/x", None) && push(&any, "refs/tags/v1", None));
    assert!(!push(&any, "refs/notes/x", None));
    assert!(!push_triggers(&any, &PushEvent { git_ref: "refs/heads/x", changed_paths: None, deleted: true }));
    assert!(!push(&wf("on: workflow_dispatch"), "refs/heads/main", None));

    let branches = wf("on:\n  push:\n    branches: [main, 'release/**', '!release/old/**']");
    assert!(push(&branches, "refs/heads/main", None) && push(&branches, "refs/heads/release/1/2", None));
    assert!(!push(&branches, "refs/heads/release/old/1", None) && !push(&branches, "refs/heads/dev", None));
    assert!(!push(&branches, "refs/tags/v1", None), "only branch filters: tags do not run");

    let tags = wf("on:\n  push:\n    tags: ['v[0-9]+.*']");
    assert!(push(&tags, "refs/tags/v12.0", None) && !push(&tags, "refs/tags/x", None));
    assert!(!push(&tags, "refs/heads/main", None), "only tag filters: branches do not run");

    let ignore = wf("on:\n  push:\n    branches-ignore: ['dependabot/**']");
    assert!(push(&ignore, "refs/heads/main", None) && !push(&ignore, "refs/heads/dependabot/npm/x", None));

    let paths = wf("on:\n  push:\n    paths: ['src/**', '!src/**/*.md']");
    assert!(push(&paths, "refs/heads/main", Some(&["README.md", "src/lib.rs"])));
    assert!(!push(&paths, "refs/heads/main", Some(&["README.md", "src/notes.md"])));
    assert!(push(&paths, "refs/heads/main", None), "unknown paths let the push through");
    assert!(push(&paths, "refs/tags/v1", Some(&["README.md"])), "paths are not evaluated for tags");

    let paths_ignore = wf("on:\n  push:\n    paths-ignore: ['docs/**', '*.md']");
    assert!(!push(&paths_ignore, "refs/heads/main", Some(&["docs/a.md", "README.md"])));
    assert!(push(&paths_ignore, "refs/heads/main", Some(&["docs/a.md", "src/x.rs"])));
}

fn pr(wf: &Workflow, action: &str, base: &str, paths: Option<&[&str]>) -> bool {
    let owned: Option<Vec<String>> = paths.map(|p| p.iter().map(|s| (*s).to_owned()).collect());
    let event = PullRequestEvent { action, base_branch: base, changed_paths: owned.as_deref() };
    pull_request_triggers(wf, false, &event)
}

/// `on.pull_request` as GitHub documents it: default activity types, `types`, branch filters on
/// the base branch, path filters on the changed files; `pull_request_target` apart.
#[test]
fn pull_request_filters_follow_githubs_rules() {
    let steps = "jobs:
  a:
    runs-on: x
    steps: [{run: echo}]
";
    let wf = |on: &str| {
        load(&format!(
            "{on}
{steps}"
        ))
        .unwrap_or_else(|d| panic!("{on}: {d:?}"))
    };

    let any = wf("on: pull_request");
    for action in ["opened", "synchronize", "reopened"] {
        assert!(pr(&any, action, "main", None), "{action} runs by default");
    }
    assert!(!pr(&any, "closed", "main", None) && !pr(&any, "edited", "main", None));
    assert!(!pr(&wf("on: push"), "opened", "main", None));
    assert!(!pull_request_triggers(
        &any,
        true,
        &PullRequestEvent { action: "opened", base_branch: "main", changed_paths: None }
    ));
    let target = wf("on: pull_request_target");
    assert!(pull_request_triggers(
        &target,
        true,
        &PullRequestEvent { action: "opened", base_branch: "main", changed_paths: None }
    ));
    assert!(!pr(&target, "opened", "main", None), "pull_request_target is not pull_request");

    let types = wf("on:
  pull_request:
    types: [closed, labeled]");
    assert!(pr(&types, "closed", "main", None) && !pr(&types, "opened", "main", None));
    assert!(
        pr(
            &wf("on:
  pull_request:
    types: edited"),
            "edited",
            "x",
            None
        ),
        "one type as a string"
    );

    let branches = wf("on:
  pull_request:
    branches: [main, 'releases/**']");
    assert!(pr(&branches, "opened", "main", None) && pr(&branches, "opened", "releases/1/x", None));
    assert!(!pr(&branches, "opened", "dev", None), "branches filter the base branch");
    let ignore = wf("on:
  pull_request:
    branches-ignore: [gh-pages]");
    assert!(!pr(&ignore, "opened", "gh-pages", None) && pr(&ignore, "opened", "main", None));

    let paths = wf("on:
  pull_request:
    paths: ['src/**']");
    assert!(pr(&paths, "opened", "main", Some(&["README.md", "src/lib.rs"])));
    assert!(!pr(&paths, "opened", "main", Some(&["README.md"])));
    let paths_ignore = wf("on:
  pull_request:
    paths-ignore: ['*.md']");
    assert!(!pr(&paths_ignore, "synchronize", "main", Some(&["README.md"])));

    for (on, needle) in [
        (
            "on:
  pull_request:
    types: [opend]",
            "'opend' is not an activity type of pull_request",
        ),
        (
            "on:
  pull_request:
    branches: [a]
    branches-ignore: [b]",
            "cannot use both 'branches' and 'branches-ignore'",
        ),
        (
            "on:
  pull_request:
    tags: [v1]",
            "unknown key 'tags'",
        ),
    ] {
        let diags = load(&format!("{on}\n{steps}")).expect_err(on);
        assert!(diags.iter().any(|d| d.message.contains(needle)), "{on}: {diags:#?}");
    }
}

/// Forms GitHub's own parser accepts (from its published parser tests and documentation), each
/// of which this parser once refused.
#[test]
fn forms_github_accepts_load() {
    for source in [
        // A job without steps; a strategy without a matrix; keys GitHub added.
        "on: push\ndescription: nightly\njobs:\n  a:\n    runs-on: x\n    cancel-timeout-minutes: 5\n    strategy:\n      fail-fast: false\n    snapshot: my-image\n",
        "on: push\njobs:\n  a:\n    runs-on: x\n    concurrency:\n      group: g\n      queue: max\n    environment:\n      name: prod\n      deployment: false\n",
        // Actions other than the built-in ones are valid; running them is another matter.
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - uses: actions/setup-node@v4\n      - uses: docker://alpine:3.8\n      - uses: ./.github/actions/mine\n      - uses: octo/repo/path@main\n",
        // Text around an expression in `if:` is a string (always true), as on GitHub.
        "on: push\njobs:\n  a:\n    if: false || ${{ true }}\n    runs-on: x\n",
        // A job's status functions may name jobs.
        "on: push\njobs:\n  a:\n    runs-on: x\n  b:\n    needs: a\n    if: success('a') || failure('a')\n    runs-on: x\n",
        // workflow_dispatch inputs left empty, unknown keys ignored.
        "on:\n  workflow_dispatch:\n    inputs:\n    unknown-key: x\njobs:\n  a:\n    runs-on: x\n",
        "on:\n  workflow_dispatch:\n    inputs:\n      i:\njobs:\n  a:\n    runs-on: x\n",
        // Reusable workflow calls pass secrets.
        "on: push\njobs:\n  a:\n    uses: o/r/.github/workflows/w.yml@v1\n    secrets:\n      token: ${{ secrets.T }}\n  b:\n    uses: ./.github/workflows/w.yml\n    secrets: inherit\n",
        "on:\n  workflow_call:\n    inputs:\n      x: {type: string, required: true}\n    secrets:\n      s:\n    outputs:\n      o: {value: '${{ jobs.a.outputs.o }}'}\njobs:\n  a:\n    runs-on: x\n",
        // Any number is a number.
        "on: push\njobs:\n  a:\n    runs-on: x\n    timeout-minutes: 99999999999999999999999999999\n",
        // `${{ insert }}` in env, and container credentials that read env.
        "on: push\njobs:\n  a:\n    runs-on: x\n    env:\n      ${{ insert }}: ${{ fromJSON('{}') }}\n    container:\n      image: alpine\n      credentials:\n        username: ${{ env.U }}\n        password: ${{ secrets.P }}\n",
        // Tags of the core schema.
        "on: push\njobs:\n  a:\n    runs-on: !!str ubuntu\n    timeout-minutes: !!int 5\n",
        // Folded scalars and timestamp-like values are strings.
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - uses: actions/setup-python@v4\n        with:\n          python-version: >-\n            3.10\n          not-before: 2022-10-26T00:00:00Z\n",
        // Group names with GitHub's prefixes.
        "on: push\njobs:\n  a:\n    runs-on:\n      group: org/my group\n",
    ] {
        if let Err(diagnostics) = load(source) {
            panic!("{source}\nrefused: {diagnostics:?}");
        }
    }
    // The implied `success() &&` is what the model keeps, so every consumer sees GitHub's meaning.
    let wf = load("on: push\njobs:\n  a:\n    if: false || ${{ true }}\n    runs-on: x\n").expect("loads");
    assert_eq!(wf.jobs["a"].condition.as_deref(), Some("success() && (format('false || {0}', true))"));
    let wf = load("on: push\njobs:\n  a:\n    if: always() && x == 1\n    runs-on: x\n").expect_err("x");
    assert!(wf[0].message.contains("Unrecognized named-value: 'x'"));
}

/// Matrices as GitHub's template evaluator builds them: an item that is one expression giving a
/// list is spliced in, `${{ insert }}` merges an object, and a matrix from `needs` waits for them.
#[test]
fn matrices_splice_insert_and_wait_for_needs() {
    let source = "on: push\njobs:\n  a:\n    runs-on: x\n    strategy:\n      matrix:\n        v:\n          - env:\n              k1: one\n              ${{ insert }}: {k2: two}\n          - ${{ fromJSON('[{\"env\":{\"k3\":\"three\"}},{\"env\":{\"k4\":\"four\"}}]') }}\n        ${{ insert }}: ${{ fromJSON('{\"os\":[\"l\",\"m\"]}') }}\n";
    let wf = load(source).expect("loads");
    let planned = plan(&wf, &PlanContext::default()).expect("plans");
    let values: Vec<String> = planned
        .jobs
        .iter()
        .map(|j| serde_json::Value::Object(j.matrix.clone().expect("matrix").into_iter().collect()).to_string())
        .collect();
    assert_eq!(values.len(), 6, "3 spliced values of v times 2 inserted values of os: {values:?}");
    assert_eq!(values[0], r#"{"v":{"env":{"k1":"one","k2":"two"}},"os":"l"}"#);
    assert_eq!(values[2], r#"{"v":{"env":{"k3":"three"}},"os":"l"}"#);

    let source = "on: push\njobs:\n  setup:\n    runs-on: x\n  build:\n    needs: setup\n    runs-on: x\n    strategy:\n      matrix: ${{ fromJSON(needs.setup.outputs.m) }}\n";
    let wf = load(source).expect("loads");
    let planned = plan(&wf, &PlanContext::default()).expect("plans");
    assert!(planned.jobs[1].deferred && planned.jobs[1].runs_on.is_none());
    let mut needs = Dict::new();
    needs.insert(
        "setup",
        Value::from_json(serde_json::json!({"result": "success", "outputs": {"m": "{\"n\": [1, 2]}"}})),
    );
    let ctx = PlanContext { needs: Value::object(needs.clone()), ..Default::default() };
    let instances = gitstratum_workflow::plan::plan_deferred(&wf, "build", &ctx).expect("expands");
    assert_eq!(instances.iter().map(|j| j.display_name.as_str()).collect::<Vec<_>>(), ["build (1)", "build (2)"]);
    // An empty matrix fails the job with GitHub's message.
    needs.set("setup", Value::from_json(serde_json::json!({"result": "success", "outputs": {"m": "{}"}})));
    let ctx = PlanContext { needs: Value::object(needs), ..Default::default() };
    let err = gitstratum_workflow::plan::plan_deferred(&wf, "build", &ctx).expect_err("empty");
    assert!(err.contains("Matrix must define at least one vector"), "{err}");
}
