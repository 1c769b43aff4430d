//! Background maintenance of Git storage: every so often, each repository whose small packs no
//! longer form a geometric progression has them rolled into one, and each repository that
//! changed since its last full repack (at most once per `full_repack_after`) is repacked whole,
//! pruning what no ref has reached for the grace period (see `gitstratum_store::rocks`'s
//! `maintain`).
//!
//! CPU budget: one repository at a time on one blocking thread, and after each run a pause as
//! long as the run took, so maintenance uses at most half of one core and clones and pushes
//! keep the rest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gitstratum_core::Clock;
use gitstratum_store::RepoId;
use gitstratum_store::rocks::{Maintenance, RocksStore};

use crate::config::GitMaintenance;

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Looks at every repository once, maintaining those that need it.
async fn pass(store: &Arc<RocksStore>, settings: &GitMaintenance, clock: &Arc<dyn Clock>, stop: &mut Stop) {
    let repos = {
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.repos_with_packs()).await {
            Ok(Ok(repos)) => repos,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "git maintenance: listing repositories failed");
                return;
            }
            Err(_) => return,
        }
    };
    for (repo, _) in repos {
        if stop.requested() {
            return;
        }
        let (s, settings_copy, now_ms) = (store.clone(), *settings, clock.now().0);
        let started = Instant::now();
        let run = tokio::task::spawn_blocking(move || maintain(&s, repo, &settings_copy, now_ms)).await;
        let took = started.elapsed();
        match run {
            Ok(Ok(true)) => {
                // The budget: rest as long as the work took.
                if stop.sleep(took).await {
                    return;
                }
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(repo = repo.0, error = %e, "git maintenance failed"),
            Err(e) => tracing::warn!(repo = repo.0, error = %e, "git maintenance panicked"),
        }
    }
}

/// Maintains one repository if it needs it; true when something was done.
fn maintain(
    store: &RocksStore,
    repo: RepoId,
    settings: &GitMaintenance,
    now_ms: i64,
) -> gitstratum_store::Result<bool> {
    let grace = millis(settings.prune_grace);
    let full = store.full_repack_due(repo, now_ms, millis(settings.full_repack_after), grace)?;
    if !full && !store.needs_roll_up(repo)? {
        return Ok(false);
    }
    let started = Instant::now();
    let report = store.maintain(repo, &Maintenance { full, prune_grace_ms: grace, now_ms })?;
    tracing::info!(
        repo = repo.0,
        full,
        took_ms = started.elapsed().as_millis() as u64,
        packs_before = report.packs_before,
        packs_after = report.packs_after,
        objects_written = report.objects_written,
        cruft = report.cruft,
        deltas_found = report.deltas_found,
        tip_whole = report.tip_whole,
        tip_reversed = report.tip_reversed,
        pruned = report.pruned,
        prune_deferred = report.prune_deferred,
        "git maintenance"
    );
    metrics::counter!("gitstratum_git_maintenance_runs_total", "kind" => if full { "full" } else { "roll_up" })
        .increment(1);
    metrics::counter!("gitstratum_git_pruned_objects_total").increment(report.pruned);
    Ok(true)
}

/// The stop signal, and sleeping until it.
pub(crate) struct Stop(tokio::sync::oneshot::Receiver<()>, bool);

impl Stop {
    fn requested(&mut self) -> bool {
        if !self.1 && !matches!(self.0.try_recv(), Err(tokio::sync::oneshot::error::TryRecvError::Empty)) {
            self.1 = true;
        }
        self.1
    }

    /// Sleeps for `d`; true when stopped meanwhile.
    async fn sleep(&mut self, d: Duration) -> bool {
        if self.1 {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = &mut self.0 => {
                self.1 = true;
                true
            }
        }
    }
}

/// Runs maintenance passes until `stop` fires (a pass in progress finishes its current
/// repository first).
pub(crate) async fn run(
    store: Arc<RocksStore>,
    settings: GitMaintenance,
    clock: Arc<dyn Clock>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let Some(every) = settings.every else { return };
    let mut stop = Stop(stop, false);
    loop {
        if stop.sleep(every).await {
            return;
        }
        pass(&store, &settings, &clock, &mut stop).await;
    }
}

/// A repository listing this many packs (one per push) is compacted into one (cluster mode).
const COMPACT_AT_PACKS: usize = 8;

/// Cluster mode's maintenance until `stop` fires: every `[git] maintenance_secs`, one frontend
/// at a time (a singleton lock in the database) rolls each repository's many pushed packs into
/// one, so a frontend with an empty cache downloads a few packs, not one per push.
pub(crate) async fn run_cluster(
    store: Arc<gitstratum_store::cluster::ClusterStore>,
    db: gitstratum_platform::db::Db,
    settings: GitMaintenance,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    /// The compaction pass's singleton lock ([`gitstratum_platform::db::Db::try_singleton`]).
    const SINGLETON: i32 = 3;
    let Some(every) = settings.every else { return };
    let mut stop = Stop(stop, false);
    loop {
        if stop.sleep(every).await {
            return;
        }
        let _turn = match db.try_singleton(SINGLETON).await {
            Ok(Some(turn)) => turn,
            Ok(None) => continue, // another frontend is compacting
            Err(e) => {
                tracing::warn!(error = %e, "cluster: cannot take the compaction's turn");
                continue;
            }
        };
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.compact_all(COMPACT_AT_PACKS)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(repositories = n, "cluster: compaction pass done"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cluster: the compaction pass failed"),
            Err(e) => tracing::warn!(error = %e, "cluster: the compaction pass failed"),
        }
    }
}
