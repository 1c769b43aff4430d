//! `strategy.matrix` expansion, exactly as GitHub does it: the cartesian product of the axes (the
//! first axis varying slowest), minus `exclude` entries (an entry removes every combination it
//! matches on all of its keys), then `include` entries (merged into every original combination
//! whose original values they do not change, or added as a new combination when there is none).

use indexmap::IndexMap;
use serde_json::Value as Json;

/// Most jobs one matrix may produce (GitHub's limit).
pub const MAX_COMBINATIONS: usize = 256;

pub type Combination = IndexMap<String, Json>;

/// A matrix whose values are known (any expressions in it evaluated).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MatrixValues {
    pub axes: IndexMap<String, Vec<Json>>,
    pub include: Vec<Combination>,
    pub exclude: Vec<Combination>,
}

pub fn expand(matrix: &MatrixValues) -> Result<Vec<Combination>, String> {
    if matrix.axes.is_empty() && matrix.include.is_empty() {
        return Err("Matrix must define at least one vector".to_owned());
    }
    if let Some((name, _)) = matrix.axes.iter().find(|(_, values)| values.is_empty()) {
        return Err(format!("matrix vector '{name}' does not contain any values"));
    }
    let product_size = matrix.axes.values().try_fold(1usize, |n, v| n.checked_mul(v.len()));
    if product_size.is_none_or(|n| n > MAX_COMBINATIONS * 16) {
        return Err(format!("the matrix expands to more than {MAX_COMBINATIONS} jobs"));
    }

    // Each combination remembers which values came from the axes ("original" values).
    let mut combos: Vec<(Combination, Combination)> = Vec::new();
    if !matrix.axes.is_empty() {
        combos.push((Combination::new(), Combination::new()));
        for (name, values) in &matrix.axes {
            combos = combos
                .into_iter()
                .flat_map(|(original, _)| {
                    values.iter().map(move |v| {
                        let mut next = original.clone();
                        next.insert(name.clone(), v.clone());
                        (next.clone(), next)
                    })
                })
                .collect();
        }
    }
    combos.retain(|(original, _)| !matrix.exclude.iter().any(|ex| ex.iter().all(|(k, v)| original.get(k) == Some(v))));
    let mut added: Vec<Combination> = Vec::new();
    for include in &matrix.include {
        let mut merged = false;
        for (original, full) in &mut combos {
            if include.iter().all(|(k, v)| original.get(k).is_none_or(|o| o == v)) {
                for (k, v) in include {
                    full.insert(k.clone(), v.clone());
                }
                merged = true;
            }
        }
        if !merged {
            added.push(include.clone());
        }
    }
    let all: Vec<Combination> = combos.into_iter().map(|(_, full)| full).chain(added).collect();
    if all.len() > MAX_COMBINATIONS {
        return Err(format!("the matrix expands to {} jobs; at most {MAX_COMBINATIONS} are allowed", all.len()));
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn combo(v: Json) -> Combination {
        serde_json::from_value(v).expect("object")
    }

    fn axes(v: Json) -> IndexMap<String, Vec<Json>> {
        serde_json::from_value(v).expect("axes")
    }

    #[test]
    fn githubs_documented_example() {
        let m = MatrixValues {
            axes: axes(json!({"fruit": ["apple", "pear"], "animal": ["cat", "dog"]})),
            include: vec![
                combo(json!({"color": "green"})),
                combo(json!({"color": "pink", "animal": "cat"})),
                combo(json!({"fruit": "apple", "shape": "circle"})),
                combo(json!({"fruit": "banana"})),
                combo(json!({"fruit": "banana", "animal": "cat"})),
            ],
            exclude: vec![],
        };
        let got: Vec<Json> = expand(&m).expect("expands").into_iter().map(|c| json!(c)).collect();
        assert_eq!(
            got,
            vec![
                json!({"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"}),
                json!({"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"}),
                json!({"fruit": "pear", "animal": "cat", "color": "pink"}),
                json!({"fruit": "pear", "animal": "dog", "color": "green"}),
                json!({"fruit": "banana"}),
                json!({"fruit": "banana", "animal": "cat"}),
            ]
        );
    }

    #[test]
    fn exclude_matches_on_all_its_keys() {
        let m = MatrixValues {
            axes: axes(json!({"os": ["linux", "mac"], "node": [18, 20], "env": ["a", "b"]})),
            exclude: vec![combo(json!({"os": "mac", "node": 18}))],
            include: vec![],
        };
        let got = expand(&m).expect("expands");
        assert_eq!(got.len(), 6);
        assert!(!got.iter().any(|c| c["os"] == "mac" && c["node"] == 18));
    }

    #[test]
    fn include_only_and_limits() {
        let m = MatrixValues { include: vec![combo(json!({"a": 1})), combo(json!({"a": 2}))], ..Default::default() };
        assert_eq!(expand(&m).expect("expands").len(), 2);
        let m = MatrixValues { axes: axes(json!({"a": [], "b": [1]})), ..Default::default() };
        assert_eq!(expand(&m).expect_err("empty"), "matrix vector 'a' does not contain any values");
        let big: Vec<Json> = (0..17).map(Json::from).collect();
        let m = MatrixValues {
            axes: [("x".to_owned(), big.clone()), ("y".to_owned(), big)].into_iter().collect(),
            ..Default::default()
        };
        assert!(expand(&m).expect_err("too many").contains("289 jobs; at most 256"));
        let huge: Vec<Json> = (0..1000).map(Json::from).collect();
        let m = MatrixValues {
            axes: [("x".to_owned(), huge.clone()), ("y".to_owned(), huge)].into_iter().collect(),
            ..Default::default()
        };
        assert!(expand(&m).expect_err("far too many").contains("more than 256"), "refused before expanding");
    }
}
