//! The CI engine: from a push to runs, jobs and steps.
//!
//! - [`ingest`]: the ingestor, a consumer of the ref-change log. For each push it loads the
//!   workflow files at the new commit ([`source`]), matches their `on.push` filters against the
//!   ref and the changed paths, plans the jobs, and creates every run with its jobs and steps in
//!   one transaction with its cursor, so a crash creates nothing twice and loses nothing.
//! - [`store`]: runs, jobs and steps in the platform database (SQLite or PostgreSQL), as state
//!   machines whose transitions are guarded updates.
//! - [`orchestrate`]: runners lease, acknowledge and keep jobs; completing a job releases its
//!   dependents and completes the run; expired leases re-queue.
//! - [`logs`]: job logs per step, appended by byte offset so a resent frame is harmless.
//! - [`artifacts`]: artifacts and caches: chunked uploads, checked archives, retention, LRU
//!   eviction; their archives rest in a [`blob::BlobStore`].
//! - [`usage`]: usage metering (a row per attempt that ran) and log retention.
//! - [`payload`]: GitHub's event payloads (webhooks, and `$GITHUB_EVENT_PATH` for jobs).
//! - [`upstream`]: actions of upstream sources (the seam the server fetches them through).
//! - [`state`]: the states, and GitHub's status/conclusion vocabulary shown for them.
//!
//! What it must never do: know HTTP (the API crate serves runs) or run anything itself (runners
//! do).

#![forbid(unsafe_code)]

pub mod artifacts;
pub use gitstratum_store::blob;
pub mod events;
pub mod ingest;
pub mod logs;
pub mod orchestrate;
pub mod payload;
pub mod references;
pub mod source;
pub mod state;
pub mod store;
#[cfg(feature = "testing")]
pub use gitstratum_store::testing;
pub mod upstream;
pub mod usage;

pub use artifacts::{Artifact, ArtifactConfig, ArtifactError, Artifacts, Cache};
pub use ingest::Ingestor;
pub use logs::LogStore;
pub use orchestrate::{Beat, JobToken, Lease, Runner, StepReport};
pub use state::{Conclusion, JobState, RunState};
pub use store::{
    Annotation, CiStore, Job, JobAction, NewJob, NewRun, RetryPolicy, Run, RunFilter, RunPage, RunStatus, Step,
    TenantLimits,
};
