//! Webhook delivery: a background task that turns ref-change events into `push` deliveries and
//! platform events into `repository` deliveries (one transaction per batch with the consumer's
//! cursor on each log, so each event is enqueued exactly once), for the repository's hooks and its
//! organization's, and sends due deliveries, signed as GitHub signs them (`X-Hub-Signature-256`),
//! retrying failures with exponential backoff. Pushes never wait for it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gitstratum_ci::payload::{push_payload, repository_json};
use gitstratum_core::Clock;
use gitstratum_platform::webhooks::delivery_guid;
use gitstratum_platform::{AttemptOutcome, Delivery, NewDelivery, PlatformEvent, PlatformStore, Repo, Webhook};
use gitstratum_store::RefStore;
use serde_json::json;
use sha2::{Digest, Sha256};

/// The dispatcher's singleton lock over its log consumers ([`gitstratum_platform::db::Db::try_singleton`]).
const SINGLETON: i32 = 2;

/// How long a claimed delivery attempt is this server's (longer than a delivery's timeout).
const CLAIM_MS: i64 = 120_000;

/// The cursor's name on the ref-change log.
const CURSOR: &str = "webhooks";
/// The cursor's name on the platform event log.
const PLATFORM_CURSOR: &str = "webhooks.platform";
/// The cursor's name on the CI run event log.
const CI_CURSOR: &str = "webhooks.ci";
const POLL: Duration = Duration::from_millis(250);
const EVENTS_PER_BATCH: usize = 200;
const DELIVERIES_PER_ROUND: u64 = 16;
const TIMEOUT: Duration = Duration::from_secs(10);

/// HMAC-SHA256 (RFC 2104), hex: what `X-Hub-Signature-256` carries after `sha256=`.
pub fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    let outer = Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

/// GitHub's `repository` payload: `created`, `deleted`, `publicized` or `privatized`.
fn repository_payload(event: &PlatformEvent, public_url: &str) -> serde_json::Value {
    json!({
        "action": event.action,
        "repository": repository_json(&event.repo, public_url),
        "sender": {"login": event.actor},
    })
}

/// GitHub's `workflow_run` payload; status and conclusion as of the event.
fn workflow_run_payload(
    event: &gitstratum_ci::events::RunEvent,
    run: &gitstratum_ci::Run,
    repo: &Repo,
    public_url: &str,
) -> serde_json::Value {
    json!({
        "action": event.action,
        "workflow_run": {
            "id": run.id,
            "name": run.workflow_name,
            "display_title": run.title,
            "path": run.workflow_path,
            "run_number": run.run_number,
            "event": run.event,
            "status": event.status,
            "conclusion": event.conclusion,
            "head_branch": run.ref_name(),
            "head_sha": run.commit_sha,
            "actor": {"login": run.actor},
            "created_at": run.created_at.to_rfc3339(),
            "updated_at": event.created_at.to_rfc3339(),
            "url": format!("{public_url}/api/v1/runs/{}", run.id),
        },
        "repository": repository_json(repo, public_url),
        "sender": {"login": run.actor},
    })
}

/// GitHub's `workflow_job` payload; status and conclusion as of the event.
fn workflow_job_payload(
    event: &gitstratum_ci::events::RunEvent,
    job: &gitstratum_ci::Job,
    run: &gitstratum_ci::Run,
    repo: &Repo,
    public_url: &str,
) -> serde_json::Value {
    json!({
        "action": event.action,
        "workflow_job": {
            "id": job.id,
            "run_id": run.id,
            "run_attempt": job.attempt,
            "workflow_name": run.workflow_name,
            "name": job.name,
            "head_branch": run.ref_name(),
            "head_sha": run.commit_sha,
            "status": event.status,
            "conclusion": event.conclusion,
            "labels": job.runs_on.clone().unwrap_or_default(),
            "created_at": job.created_at.to_rfc3339(),
            "started_at": job.started_at.map(|t| t.to_rfc3339()),
            "completed_at": job.completed_at.map(|t| t.to_rfc3339()),
            "url": format!("{public_url}/api/v1/jobs/{}/logs", job.id),
            "run_url": format!("{public_url}/api/v1/runs/{}", run.id),
        },
        "repository": repository_json(repo, public_url),
        "sender": {"login": run.actor},
    })
}

fn subscribed(hook: &Webhook, event: &str) -> bool {
    hook.active && hook.events.iter().any(|e| e == event || e == "*")
}

pub struct Dispatcher {
    pub store: PlatformStore,
    pub ci: gitstratum_ci::CiStore,
    pub refs: Arc<dyn RefStore>,
    pub clock: Arc<dyn Clock>,
    pub public_url: String,
    /// Built by `http::webhook_client`: it connects only where `destinations` permits.
    pub http: reqwest::Client,
    /// Non-public destinations deliveries may go to anyway.
    pub destinations: gitstratum_core::Destinations,
    /// Opens the hooks' signing secrets.
    pub secrets_key: gitstratum_platform::SecretKey,
}

impl Dispatcher {
    /// Runs until `stop` fires.
    pub async fn run(self, mut stop: tokio::sync::oneshot::Receiver<()>) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stop => break,
            }
            // Servers sharing a database take turns at the logs (their cursors' compare-and-swap
            // keeps each event's deliveries exactly-once regardless).
            match self.store.db().try_singleton(SINGLETON).await {
                Ok(Some(_turn)) => {
                    if let Err(e) = self.enqueue().await {
                        tracing::warn!(error = %e, "webhooks: reading the ref-change log failed");
                    }
                    if let Err(e) = self.enqueue_platform().await {
                        tracing::warn!(error = %e, "webhooks: reading the platform event log failed");
                    }
                    if let Err(e) = self.enqueue_ci().await {
                        tracing::warn!(error = %e, "webhooks: reading the CI run event log failed");
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "webhooks: cannot take the log consumers' turn"),
            }
            if let Err(e) = self.deliver().await {
                tracing::warn!(error = %e, "webhooks: delivering failed");
            }
        }
    }

    /// Turns new ref-change events into deliveries, moving the cursor in the same transaction.
    async fn enqueue(&self) -> anyhow_lite::Result<()> {
        let after = self.store.log_cursor(CURSOR).await?;
        let refs = self.refs.clone();
        let events = tokio::task::spawn_blocking(move || refs.events_after(after, EVENTS_PER_BATCH)).await??;
        let Some(last) = events.last().map(|e| e.seq) else { return Ok(()) };
        let mut deliveries = Vec::new();
        // A push of many refs is many events of one repository: look it and its hooks up once.
        let mut repos: HashMap<i64, Option<(Repo, Vec<Webhook>)>> = HashMap::new();
        for event in &events {
            let id = event.repo.0;
            if let Entry::Vacant(slot) = repos.entry(id) {
                let found = match self.store.get_repo_by_id(id).await? {
                    Some(repo) => {
                        let hooks = self.store.hooks_hearing(repo.id, repo.owner_id).await?;
                        Some((repo, hooks))
                    }
                    None => None,
                };
                slot.insert(found);
            }
            let Some(Some((repo, hooks))) = repos.get(&id) else { continue };
            for hook in hooks.iter().filter(|h| subscribed(h, "push")) {
                let payload = push_payload(event, repo, &self.public_url, None).to_string();
                let guid = delivery_guid()?;
                deliveries.push(NewDelivery { webhook_id: hook.id, guid, event: "push".into(), payload });
            }
        }
        self.store.enqueue_deliveries(CURSOR, after, last, &deliveries, self.clock.now()).await?;
        Ok(())
    }

    /// Turns new platform events (repositories created, deleted, made public or private; pull
    /// requests and their reviews) into `repository`, `pull_request` and `pull_request_review`
    /// deliveries, moving that log's cursor in the same transaction.
    async fn enqueue_platform(&self) -> anyhow_lite::Result<()> {
        let after = self.store.log_cursor(PLATFORM_CURSOR).await?;
        let events = self.store.platform_events_after(after, EVENTS_PER_BATCH as u64).await?;
        let Some(last) = events.last().map(|e| u64::try_from(e.id).unwrap_or(0)) else { return Ok(()) };
        let mut deliveries = Vec::new();
        for event in &events {
            // A deleted repository's own hooks went with it; its organization's still hear it.
            let hooks = self.store.hooks_hearing(event.repo.id, event.repo.owner_id).await?;
            let hearing: Vec<i64> = hooks.iter().filter(|h| subscribed(h, &event.event)).map(|h| h.id).collect();
            if hearing.is_empty() {
                continue;
            }
            let payload = match &event.pull {
                Some(_) => {
                    match gitstratum_ci::payload::pull_event_payload(&self.store, event, &self.public_url).await? {
                        Some(payload) => payload,
                        None => continue, // the pull request is gone with its repository
                    }
                }
                None => repository_payload(event, &self.public_url),
            }
            .to_string();
            for webhook_id in hearing {
                let guid = delivery_guid()?;
                deliveries.push(NewDelivery { webhook_id, guid, event: event.event.clone(), payload: payload.clone() });
            }
        }
        self.store.enqueue_deliveries(PLATFORM_CURSOR, after, last, &deliveries, self.clock.now()).await?;
        Ok(())
    }

    /// Turns run events (requested, in progress, completed) into `workflow_run` deliveries and job
    /// events (queued, in progress, completed) into `workflow_job` deliveries, moving that log's
    /// cursor in the same transaction.
    async fn enqueue_ci(&self) -> anyhow_lite::Result<()> {
        let after = self.store.log_cursor(CI_CURSOR).await?;
        let events = self.ci.run_events_after(after, EVENTS_PER_BATCH as u64).await?;
        let Some(last) = events.last().map(|e| u64::try_from(e.id).unwrap_or(0)) else { return Ok(()) };
        let mut deliveries = Vec::new();
        for event in &events {
            let (Some(run), Some(repo)) =
                (self.ci.get_run(event.run_id).await?, self.store.get_repo_by_id(event.repo_id).await?)
            else {
                continue; // gone with its repository
            };
            let hooks = self.store.hooks_hearing(repo.id, repo.owner_id).await?;
            let (name, payload) = match event.job_id {
                None => ("workflow_run", workflow_run_payload(event, &run, &repo, &self.public_url)),
                Some(job_id) => {
                    let Some(job) = self.ci.get_job(job_id).await? else { continue };
                    ("workflow_job", workflow_job_payload(event, &job, &run, &repo, &self.public_url))
                }
            };
            let payload = payload.to_string();
            for hook in hooks.iter().filter(|h| subscribed(h, name)) {
                let guid = delivery_guid()?;
                deliveries.push(NewDelivery {
                    webhook_id: hook.id,
                    guid,
                    event: name.into(),
                    payload: payload.clone(),
                });
            }
        }
        self.store.enqueue_deliveries(CI_CURSOR, after, last, &deliveries, self.clock.now()).await?;
        Ok(())
    }

    async fn deliver(&self) -> anyhow_lite::Result<()> {
        for delivery in self.store.due_deliveries(self.clock.now(), DELIVERIES_PER_ROUND).await? {
            // Servers sharing the database deliver each attempt once: the one that claims it.
            if !self.store.claim_delivery(&delivery, self.clock.now(), CLAIM_MS).await? {
                continue;
            }
            let outcome = match self.store.get_webhook(delivery.webhook_id).await? {
                Some(hook) => match hook.signing_secret(&self.secrets_key) {
                    Ok(secret) => self.send(&delivery, &hook.url, secret.as_deref(), hook.id).await,
                    Err(e) => AttemptOutcome {
                        status_code: None,
                        error: Some(format!("cannot open the webhook's secret: {e}")),
                        duration_ms: 0,
                        success: false,
                    },
                },
                None => continue,
            };
            let result = if outcome.success { "delivered" } else { "failed" };
            metrics::counter!("gitstratum_webhook_deliveries_total", "result" => result).increment(1);
            metrics::histogram!("gitstratum_webhook_delivery_duration_seconds")
                .record(outcome.duration_ms as f64 / 1000.0);
            self.store.record_attempt(&delivery, &outcome, self.clock.now()).await?;
        }
        Ok(())
    }

    async fn send(&self, delivery: &Delivery, url: &str, secret: Option<&str>, hook_id: i64) -> AttemptOutcome {
        let started = Instant::now();
        // A name is checked by the client's resolver as it connects; an address written in the
        // URL (in any of its spellings, which the URL parser normalizes) is checked here.
        if let Some(refused) = literal_address_refused(url, &self.destinations) {
            return AttemptOutcome { status_code: None, error: Some(refused), duration_ms: 0, success: false };
        }
        let mut request = self
            .http
            .post(url)
            .timeout(TIMEOUT)
            .header("content-type", "application/json")
            .header("x-github-event", &delivery.event)
            .header("x-github-delivery", &delivery.guid)
            .header("x-github-hook-id", hook_id.to_string())
            .body(delivery.payload.clone());
        if let Some(secret) = secret {
            let signature = hmac_sha256_hex(secret.as_bytes(), delivery.payload.as_bytes());
            request = request.header("x-hub-signature-256", format!("sha256={signature}"));
        }
        let result = request.send().await;
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        match result {
            Ok(response) => {
                let status = response.status();
                AttemptOutcome {
                    status_code: Some(i64::from(status.as_u16())),
                    error: (!status.is_success()).then(|| format!("HTTP {status}")),
                    duration_ms,
                    success: status.is_success(),
                }
            }
            Err(e) => {
                // The whole story goes to the server's log; the delivery log says what a receiver's
                // owner can act on, without details of the server's network.
                tracing::info!(hook = hook_id, error = %error_chain(&e), "webhook delivery failed");
                AttemptOutcome { status_code: None, error: Some(failure_reason(&e)), duration_ms, success: false }
            }
        }
    }
}

/// Why a delivery failed, in words that tell nothing of the server's network: refused by the
/// destination policy, timed out, a certificate problem (with its kind), or no connection.
fn failure_reason(error: &reqwest::Error) -> String {
    let chain = error_chain(error);
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = source {
        if e.is::<crate::http::DestinationRefused>() {
            return e.to_string();
        }
        source = e.source();
    }
    if error.is_timeout() {
        "the delivery timed out".to_owned()
    } else if let Some(at) = chain.find("invalid peer certificate") {
        format!("TLS: {}", &chain[at..])
    } else if error.is_connect() {
        "could not connect to the destination".to_owned()
    } else {
        "the delivery failed before a response arrived".to_owned()
    }
}

/// The refusal of a URL whose host is an address the policy does not permit.
fn literal_address_refused(url: &str, destinations: &gitstratum_core::Destinations) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    let addr: std::net::IpAddr = host.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    (!destinations.permits(host, addr)).then(|| crate::http::DestinationRefused.to_string())
}

/// An error with its causes ("error sending request: … : invalid peer certificate: UnknownIssuer"),
/// so the delivery log says why a delivery failed, not only that it did.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A small boxed error for the task's internal steps (logged, never returned to anyone).
mod anyhow_lite {
    pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;
}

#[cfg(test)]
mod tests {
    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231, test case 2.
        assert_eq!(
            super::hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            super::hmac_sha256_hex(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First"),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
