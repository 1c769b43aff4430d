//! Property tests: matrix expansion invariants, plans that respect `needs`, and no panic on any
//! input to the YAML loader or the expression parser and evaluator.

use gitstratum_workflow::expr::{self, Dict, DictContext, ParseOptions, Value};
use gitstratum_workflow::glob::Pattern;
use gitstratum_workflow::load;
use gitstratum_workflow::matrix::{Combination, MatrixValues, expand};
use gitstratum_workflow::plan::{PlanContext, plan};
use proptest::prelude::*;
use serde_json::{Value as Json, json};

fn axes_strategy() -> impl Strategy<Value = Vec<(String, Vec<i64>)>> {
    prop::collection::vec(prop::collection::btree_set(0i64..6, 1..4), 1..4).prop_map(|axes| {
        axes.into_iter().enumerate().map(|(i, values)| (format!("axis{i}"), values.into_iter().collect())).collect()
    })
}

fn product(axes: &[(String, Vec<i64>)]) -> Vec<Combination> {
    let mut out: Vec<Combination> = vec![Combination::new()];
    for (name, values) in axes {
        out = out
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut next = c.clone();
                    next.insert(name.clone(), json!(v));
                    next
                })
            })
            .collect();
    }
    out
}

fn matches_all(entry: &Combination, combo: &Combination) -> bool {
    entry.iter().all(|(k, v)| combo.get(k) == Some(v))
}

proptest! {
    #[test]
    fn matrix_product_exclude_and_include(
        axes in axes_strategy(),
        exclude_picks in prop::collection::vec((0usize..64, 0usize..3), 0..3),
        include_picks in prop::collection::vec((0usize..64, prop::bool::ANY, 0i64..3), 0..4),
    ) {
        let full = product(&axes);
        // Excludes: a subset of the keys of some existing combination.
        let exclude: Vec<Combination> = exclude_picks.iter().map(|(i, keep)| {
            let c = &full[i % full.len()];
            c.iter().take(keep + 1).map(|(k, v)| (k.clone(), v.clone())).collect()
        }).collect();
        // Includes: an extra key, sometimes pinned to an axis value (existing or new).
        let include: Vec<Combination> = include_picks.iter().map(|(i, pin, extra)| {
            let mut e = Combination::new();
            if *pin {
                let (name, _) = &axes[i % axes.len()];
                e.insert(name.clone(), json!(i % 7));
            }
            e.insert("extra".into(), json!(extra));
            e
        }).collect();
        let m = MatrixValues { axes: axes.iter().map(|(k, v)| (k.clone(), v.iter().map(|x| json!(x)).collect())).collect(), include: include.clone(), exclude: exclude.clone() };
        let got = expand(&m).expect("small matrices expand");

        let originals: Vec<&Combination> = full.iter().filter(|c| !exclude.iter().any(|e| matches_all(e, c))).collect();
        // The original combinations come first, in product order, their axis values untouched.
        for (orig, result) in originals.iter().zip(&got) {
            for (k, v) in orig.iter() {
                prop_assert_eq!(result.get(k), Some(v));
            }
        }
        // No excluded combination survives among the originals.
        for result in got.iter().take(originals.len()) {
            prop_assert!(!exclude.iter().any(|e| matches_all(e, result)));
        }
        // Each include that fits no original combination adds exactly one job, equal to itself.
        let unmatched: Vec<&Combination> = include.iter().filter(|inc| !originals.iter().any(|o| inc.iter().all(|(k, v)| o.get(k).is_none_or(|ov| ov == v)))).collect();
        prop_assert_eq!(got.len(), originals.len() + unmatched.len());
        for (added, inc) in got[originals.len()..].iter().zip(&unmatched) {
            prop_assert_eq!(added, *inc);
        }
    }

    #[test]
    fn plans_put_every_job_after_what_it_needs(edges in prop::collection::vec(prop::collection::vec(prop::bool::ANY, 0..8), 1..8), order_seed in 0u64..1000) {
        // Job i may need any job j < i: a DAG. Write the jobs in a scrambled order.
        let n = edges.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|i| (*i as u64).wrapping_mul(2654435761).wrapping_add(order_seed) % 1009);
        let mut yaml = String::from("on: push\njobs:\n");
        for &i in &order {
            let needs: Vec<String> = edges[i].iter().enumerate().filter(|(j, e)| **e && *j < i).map(|(j, _)| format!("j{j}")).collect();
            yaml.push_str(&format!("  j{i}:\n    runs-on: x\n    needs: [{}]\n    steps: [{{run: echo}}]\n", needs.join(", ")));
        }
        let wf = load(&yaml).map_err(|d| TestCaseError::fail(format!("{d:?}")))?;
        let planned = plan(&wf, &PlanContext::default()).map_err(TestCaseError::fail)?.jobs;
        prop_assert_eq!(planned.len(), n);
        for (pos, job) in planned.iter().enumerate() {
            for need in &job.needs {
                let at = planned.iter().position(|j| &j.job_id == need);
                prop_assert!(at.is_some_and(|at| at < pos), "{} runs before {}", job.job_id, need);
            }
        }
    }

    #[test]
    fn a_back_edge_is_reported_as_a_cycle(len in 2usize..8) {
        let mut yaml = String::from("on: push\njobs:\n");
        for i in 0..len {
            let need = (i + len - 1) % len;
            yaml.push_str(&format!("  j{i}:\n    runs-on: x\n    needs: j{need}\n    steps: [{{run: echo}}]\n"));
        }
        let diags = load(&yaml).expect_err("a ring of needs");
        prop_assert!(diags.iter().any(|d| d.message.contains("cycle")), "{:?}", diags);
    }

    #[test]
    fn escaped_literals_match_only_themselves(text in "[a-z0-9/._*?+\\[\\]-]{0,12}") {
        let escaped: String = text.chars().flat_map(|c| if "*?+[]\\".contains(c) { vec!['\\', c] } else { vec![c] }).collect();
        let p = Pattern::new(&escaped).expect("escaped text is a valid pattern");
        prop_assert!(p.matches(&text));
        let longer = format!("{text}x");
        prop_assert!(!p.matches(&longer));
    }

    #[test]
    fn the_loader_never_panics(source in "(on|jobs|runs-on|steps|run|needs|matrix|if|\\$\\{\\{|\\}\\}|:|-|\\[|\\]|\\{|\\}|,|&a|\\*a|'|\"| |\n|  |[a-z0-9]){0,80}") {
        let _ = load(&source);
    }

    #[test]
    fn expressions_never_panic(source in "(github|x|\\.|\\*|\\[|\\]|\\(|\\)|,|!|==|!=|<|<=|>|>=|&&|\\|\\||'a'|''|0x1F|1e3|-|\\+|null|true|NaN|format|fromJSON|toJSON|contains|join|case| |[a-z0-9{}]){0,40}") {
        let mut names = Dict::new();
        names.insert("github", Value::from_json(json!({"ref": "refs/heads/main", "list": [1, "two", {"x": null}]})));
        names.insert("x", Value::from_json(Json::Null));
        if let Ok(parsed) = expr::parse(&source, &ParseOptions { named_values: &["github", "x"], extra_functions: &[] }) {
            let _ = expr::evaluate(&parsed, &DictContext(names), &source);
        }
    }

    #[test]
    fn mutated_workflows_never_panic(edits in prop::collection::vec((0usize..2000, 0u8..128), 1..6)) {
        let mut bytes = VALID.as_bytes().to_vec();
        for (at, byte) in edits {
            let at = at % bytes.len();
            bytes[at] = byte;
        }
        if let Ok(text) = String::from_utf8(bytes)
            && let Ok(wf) = load(&text)
        {
            let _ = plan(&wf, &PlanContext::default());
        }
    }
}

const VALID: &str = "name: CI\non:\n  push:\n    branches: [main, 'r/**']\n    paths: ['src/**']\njobs:\n  build:\n    runs-on: ${{ matrix.os }}\n    strategy:\n      matrix:\n        os: [a, b]\n        n: [1, 2]\n        include: [{os: a, extra: x}]\n        exclude: [{os: b, n: 2}]\n    steps:\n      - run: echo ${{ matrix.n }}\n        if: success() && matrix.n > 1\n  test:\n    needs: build\n    runs-on: [x, y]\n    steps: [{uses: actions/checkout@v4, with: {fetch-depth: 1}}]\n";
