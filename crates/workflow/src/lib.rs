//! Workflow files in GitHub Actions syntax, so existing workflows run unchanged.
//!
//! Today: the expression language ([`expr`]). The workflow model, validation with positions,
//! matrix expansion and trigger matching follow.
//! What it must never do: I/O of any kind (files, network, clock) or async; callers hand it bytes
//! and contexts, and inject what needs the outside world (`hashFiles`) through [`expr::Context`].

#![forbid(unsafe_code)]

pub mod expr;
