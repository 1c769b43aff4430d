//! Action metadata files (`action.yml` / `action.yaml`): what an action takes, gives and runs,
//! validated with positioned diagnostics as workflow files are.
//!
//! GitHub's schema (`action_yaml.json` of its runner) decides what is accepted: `name`,
//! `description`, `author`, `branding` and unknown top-level keys are kept loosely; `inputs`
//! (`description`, `required`, `default`, `deprecationMessage`), `outputs` (`value` for composite
//! actions) and `runs` are checked. `runs.using` is `composite`, `node12`/`node16`/`node20`/
//! `node24` (JavaScript) or `docker`.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::diag::{Diagnostic, Pos};
use crate::load::{Loader, places};
use crate::model::Step;
use crate::yaml::{self, Node};

/// The file names an action's metadata may have, in GitHub's order of preference.
pub const ACTION_FILES: [&str; 2] = ["action.yml", "action.yaml"];

/// The JavaScript runtimes an action may name; older ones run on the newest Node.js the runner
/// host has, as GitHub now does.
pub const NODE_RUNTIMES: [&str; 4] = ["node12", "node16", "node20", "node24"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub name: String,
    pub description: String,
    pub inputs: IndexMap<String, ActionInput>,
    pub outputs: IndexMap<String, ActionOutput>,
    pub runs: ActionRuns,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionInput {
    pub description: String,
    /// Documentation only: GitHub's runner does not enforce it (the toolkit's `getInput` does).
    pub required: bool,
    /// A template evaluated where the action runs, when the step gives no value.
    pub default: Option<String>,
    pub deprecation_message: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionOutput {
    pub description: String,
    /// Composite actions: a template over the action's steps; JavaScript actions set outputs
    /// through `$GITHUB_OUTPUT` instead.
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ActionRuns {
    Composite {
        steps: Vec<Step>,
    },
    Node {
        using: String,
        main: String,
        pre: Option<String>,
        /// Conditions as expressions (without `${{ }}`), GitHub's default `always()`.
        pre_if: Option<String>,
        post: Option<String>,
        post_if: Option<String>,
    },
    Docker {
        image: String,
    },
}

/// `owner/repo[/path]@ref`: an action of another repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAction {
    pub owner: String,
    pub repo: String,
    /// The action's directory in the repository (empty: its root).
    pub path: String,
    pub git_ref: String,
}

impl RemoteAction {
    /// Parses a `uses:` naming another repository's action; `None` for anything else (`./path`,
    /// `docker://…`, a malformed reference) or a name no repository can have.
    pub fn parse(reference: &str) -> Option<RemoteAction> {
        let (full, git_ref) = reference.split_once('@')?;
        let mut parts = full.splitn(3, '/');
        let (owner, repo) = (parts.next()?, parts.next()?);
        let path = parts.next().unwrap_or_default().trim_matches('/');
        let name_ok = |n: &str| {
            !n.is_empty() && n != "." && n != ".." && n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        let path_ok = path.split('/').all(|p| p != ".." && p != ".") && !path.contains('\\');
        let ref_ok = !git_ref.is_empty() && git_ref.len() <= 255 && !git_ref.chars().any(char::is_control);
        (name_ok(owner) && name_ok(repo) && path_ok && ref_ok).then(|| RemoteAction {
            owner: owner.to_owned(),
            repo: repo.trim_end_matches(".git").to_owned(),
            path: path.to_owned(),
            git_ref: git_ref.to_owned(),
        })
    }

    /// `owner/repo@ref`, as logs name it.
    pub fn shown(&self) -> String {
        format!("{}/{}@{}", self.owner, self.repo, self.git_ref)
    }
}

/// Parses and validates an action's metadata file.
pub fn load_action(source: &str) -> Result<Action, Vec<Diagnostic>> {
    let root = yaml::parse(source).map_err(|d| vec![d])?;
    let mut loader = Loader { diags: Vec::new(), composite: true };
    let action = action(&mut loader, &root);
    match action {
        Some(action) if loader.diags.is_empty() => Ok(action),
        _ => {
            if loader.diags.is_empty() {
                loader.diags.push(Diagnostic::new(root.pos, "the action has no 'runs' section"));
            }
            loader.diags.sort_by_key(|d| d.pos);
            Err(loader.diags)
        }
    }
}

fn action(l: &mut Loader, root: &Node) -> Option<Action> {
    if root.as_map().is_none() {
        l.error(root.pos, format!("an action must be a mapping with 'name' and 'runs', found {}", root.describe()));
        return None;
    }
    let mut out = Action {
        name: String::new(),
        description: String::new(),
        inputs: IndexMap::new(),
        outputs: IndexMap::new(),
        runs: ActionRuns::Composite { steps: Vec::new() },
    };
    let mut runs = None;
    for (key, value) in l.mapping(root, "the action", &[]) {
        match key.as_scalar().unwrap_or_default() {
            "name" => out.name = l.string(value, "name", None).unwrap_or_default(),
            "description" => out.description = l.string(value, "description", None).unwrap_or_default(),
            "inputs" if !value.is_null() => out.inputs = inputs(l, value),
            "outputs" if !value.is_null() => out.outputs = outputs(l, value),
            "runs" => runs = Some((key.pos, value)),
            _ => {} // author, branding and anything else GitHub lets pass
        }
    }
    let Some((pos, node)) = runs else {
        l.error(root.pos, "the action has no 'runs' section");
        return None;
    };
    out.runs = self::runs(l, node, pos)?;
    if !matches!(out.runs, ActionRuns::Composite { .. })
        && let Some((id, _)) = out.outputs.iter().find(|(_, o)| o.value.is_some())
    {
        // GitHub ignores it; saying so beats a silently empty output.
        let pos = root.get("outputs").map_or(root.pos, |n| n.pos);
        l.error(pos, format!("outputs.{id}.value: only a composite action gives its outputs by 'value'"));
    }
    Some(out)
}

fn inputs(l: &mut Loader, node: &Node) -> IndexMap<String, ActionInput> {
    let mut out = IndexMap::new();
    for (key, value) in l.mapping(node, "inputs", &[]) {
        let id = key.as_scalar().unwrap_or_default().to_owned();
        let what = format!("inputs.{id}");
        let mut input = ActionInput::default();
        if !value.is_null() {
            for (k, v) in l.mapping(value, &what, &[]) {
                let field = format!("{what}.{}", k.as_scalar().unwrap_or_default());
                match k.as_scalar().unwrap_or_default() {
                    "description" => input.description = l.string(v, &field, None).unwrap_or_default(),
                    "required" => match v.as_bool().or_else(|| v.as_scalar().map(|s| s.eq_ignore_ascii_case("true"))) {
                        Some(b) => input.required = b,
                        None => l.error(v.pos, format!("{field} must be true or false, found {}", v.describe())),
                    },
                    "default" => input.default = l.string(v, &field, Some(places::ACTION_INPUT_DEFAULT)),
                    "deprecationMessage" => input.deprecation_message = l.string(v, &field, None),
                    _ => {}
                }
            }
        }
        if out.keys().any(|k: &String| k.eq_ignore_ascii_case(&id)) {
            l.error(key.pos, format!("input '{id}' is defined twice (input names are case-insensitive)"));
        }
        out.insert(id, input);
    }
    out
}

fn outputs(l: &mut Loader, node: &Node) -> IndexMap<String, ActionOutput> {
    let mut out = IndexMap::new();
    for (key, value) in l.mapping(node, "outputs", &[]) {
        let id = key.as_scalar().unwrap_or_default().to_owned();
        let what = format!("outputs.{id}");
        let mut output = ActionOutput::default();
        if !value.is_null() {
            for (k, v) in l.mapping(value, &what, &["description", "value"]) {
                let field = format!("{what}.{}", k.as_scalar().unwrap_or_default());
                match k.as_scalar().unwrap_or_default() {
                    "description" => output.description = l.string(v, &field, None).unwrap_or_default(),
                    "value" => output.value = l.string(v, &field, Some(places::ACTION_OUTPUT)),
                    _ => {}
                }
            }
        }
        out.insert(id, output);
    }
    out
}

fn runs(l: &mut Loader, node: &Node, pos: Pos) -> Option<ActionRuns> {
    if node.as_map().is_none() {
        l.error(node.pos, format!("runs must be a mapping with 'using', found {}", node.describe()));
        return None;
    }
    let Some(using_node) = node.get("using") else {
        l.error(pos, "runs has no 'using': say 'composite', 'node20' or 'docker'");
        return None;
    };
    let using = l.string(using_node, "runs.using", None)?;
    let text = |l: &mut Loader, key: &str| -> Option<String> {
        node.get(key).and_then(|v| l.string(v, &format!("runs.{key}"), None)).filter(|s| !s.is_empty())
    };
    match using.to_ascii_lowercase().as_str() {
        "composite" => {
            l.mapping(node, "runs", &["using", "steps"]);
            let Some(steps) = node.get("steps") else {
                l.error(pos, "a composite action needs 'runs.steps'");
                return None;
            };
            let steps = l.steps(steps, "runs.steps");
            Some(ActionRuns::Composite { steps })
        }
        runtime if NODE_RUNTIMES.contains(&runtime) => {
            l.mapping(node, "runs", &["using", "main", "pre", "pre-if", "post", "post-if"]);
            let Some(main) = text(l, "main") else {
                l.error(pos, format!("a {runtime} action needs 'runs.main', the script it runs"));
                return None;
            };
            let condition = |l: &mut Loader, key: &str| -> Option<String> {
                node.get(key).and_then(|v| l.condition(v, &format!("runs.{key}"), places::ACTION_STEP_IF))
            };
            Some(ActionRuns::Node {
                using: runtime.to_owned(),
                main,
                pre: text(l, "pre"),
                pre_if: condition(l, "pre-if"),
                post: text(l, "post"),
                post_if: condition(l, "post-if"),
            })
        }
        "docker" => {
            let image = text(l, "image").unwrap_or_default();
            if image.is_empty() {
                l.error(pos, "a docker action needs 'runs.image'");
            }
            Some(ActionRuns::Docker { image })
        }
        other => {
            l.error(
                using_node.pos,
                format!("runs.using '{other}' is not supported; use 'composite', 'node20', 'node24' or 'docker'"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StepAction;

    #[test]
    fn a_composite_action_loads_with_inputs_outputs_and_steps() {
        let a = load_action(
            "name: Greet\ninputs:\n  who:\n    description: whom\n    required: true\n    default: ${{ github.actor }}\noutputs:\n  said:\n    value: ${{ steps.say.outputs.text }}\nruns:\n  using: composite\n  steps:\n    - id: say\n      run: echo \"text=hi ${{ inputs.who }}\" >> \"$GITHUB_OUTPUT\"\n      shell: bash\n    - uses: ./other\n",
        )
        .expect("loads");
        assert_eq!(a.name, "Greet");
        assert!(a.inputs["who"].required);
        assert_eq!(a.inputs["who"].default.as_deref(), Some("${{ github.actor }}"));
        assert_eq!(a.outputs["said"].value.as_deref(), Some("${{ steps.say.outputs.text }}"));
        let ActionRuns::Composite { steps } = &a.runs else { panic!("composite") };
        assert_eq!(steps.len(), 2);
        assert!(matches!(&steps[1].action, StepAction::Other { reference, .. } if reference == "./other"));
    }

    #[test]
    fn javascript_and_docker_actions_load() {
        let a = load_action(
            "name: x\nruns:\n  using: node20\n  main: dist/index.js\n  post: dist/post.js\n  post-if: success()\n",
        )
        .expect("loads");
        assert_eq!(
            a.runs,
            ActionRuns::Node {
                using: "node20".into(),
                main: "dist/index.js".into(),
                pre: None,
                pre_if: None,
                post: Some("dist/post.js".into()),
                post_if: Some("success()".into()),
            }
        );
        let d = load_action("name: x\nruns:\n  using: docker\n  image: Dockerfile\n").expect("loads");
        assert_eq!(d.runs, ActionRuns::Docker { image: "Dockerfile".into() });
    }

    #[test]
    fn remote_references_parse_as_github_writes_them() {
        let r = RemoteAction::parse("actions/setup-node@v4").expect("parses");
        assert_eq!(
            (r.owner.as_str(), r.repo.as_str(), r.path.as_str(), r.git_ref.as_str()),
            ("actions", "setup-node", "", "v4")
        );
        let r = RemoteAction::parse("org/tools/lint/rust@releases/v1").expect("parses");
        assert_eq!((r.path.as_str(), r.git_ref.as_str()), ("lint/rust", "releases/v1"));
        for bad in ["nope", "a@v1", "a/b", "../x@v1", "a/b/../../c@v1", "a b/c@v1", "a/b@", "./x@v1"] {
            assert!(RemoteAction::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn mistakes_are_reported_where_they_are() {
        let errors = |src: &str| load_action(src).expect_err("refused");
        let e = errors("name: x\nruns:\n  using: composite\n  steps:\n    - run: echo hi\n");
        assert!(e[0].message.contains("'shell' is required"), "{e:?}");
        assert_eq!(e[0].pos.line, 5);
        let e = errors("name: x\nruns:\n  using: node8\n  main: a.js\n");
        assert!(e[0].message.contains("'node8' is not supported"), "{e:?}");
        assert_eq!(e[0].pos, Pos { line: 3, col: 10 });
        let e = errors(
            "name: x\nruns:\n  using: composite\n  steps:\n    - run: echo ${{ secrets.X }}\n      shell: bash\n",
        );
        assert!(e[0].message.contains("secrets"), "{e:?}");
        let e = errors("name: x\n");
        assert!(e[0].message.contains("no 'runs'"), "{e:?}");
        let e = errors("name: x\nruns:\n  using: node20\n");
        assert!(e[0].message.contains("runs.main"), "{e:?}");
        let e = errors("- a\n");
        assert!(e[0].message.contains("must be a mapping"), "{e:?}");
    }
}
