//! Workflow files in GitHub Actions syntax, so existing workflows run unchanged.
//!
//! - [`load::load`]: YAML bytes to a validated [`model::Workflow`], or diagnostics with line and
//!   column for everything wrong;
//! - [`expr`]: the expression language (`${{ … }}`), checked against GitHub's own test vectors;
//! - [`trigger::push_triggers`]: whether a push starts a workflow (branch, tag and path filters);
//! - [`plan::plan`]: the job instances to run (matrices expanded) in dependency order.
//!
//! What it must never do: I/O of any kind (files, network, clock) or async; callers hand it bytes
//! and contexts, and inject what needs the outside world (`hashFiles`) through [`expr::Context`].

#![forbid(unsafe_code)]

pub mod action;
pub mod call;
pub mod cron;
pub mod diag;
pub mod expr;
pub mod glob;
pub mod load;
pub mod matrix;
pub mod model;
pub mod plan;
pub mod refs;
pub mod template;
pub mod trigger;
pub mod yaml;

pub use diag::{Diagnostic, Pos};
pub use load::load;
pub use model::Workflow;

/// Where workflow files live in a repository, in order of preference: the first folder that
/// exists is used.
pub const WORKFLOW_DIRS: [&str; 2] = [".gitstratum/workflows", ".github/workflows"];

/// Whether a file name is a workflow file (`.yml` or `.yaml`).
pub fn is_workflow_file(name: &str) -> bool {
    name.ends_with(".yml") || name.ends_with(".yaml")
}
