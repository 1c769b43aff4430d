//! Ships a job's log to the server as it is written: frames addressed by byte offset, resent
//! until acknowledged, so a lost request or response loses nothing and doubles nothing.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::protocol::{Client, LogReply};

/// The most sent in one frame.
const FRAME: usize = 256 * 1024;
/// How long output may wait before it is sent.
const LINGER: Duration = Duration::from_millis(100);

/// The writing end; dropping every clone lets the shipper send what is left and finish. Every
/// line goes through the job's masks (values registered with `::add-mask::`) before it leaves the
/// runner.
#[derive(Clone)]
pub struct LogWriter {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    masks: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// A line longer than this is logged in pieces (a process that never prints a newline cannot make
/// the runner buffer without limit).
pub const MAX_LINE: usize = 64 * 1024;

impl LogWriter {
    /// Masks `value` (and, from now on, every occurrence of it) in this job's log.
    pub fn add_mask(&self, value: &str) {
        let value = value.trim();
        if value.is_empty() {
            return;
        }
        if let Ok(mut masks) = self.masks.lock()
            && !masks.iter().any(|m| m == value)
        {
            masks.push(value.to_owned());
            // Longest first, so a value containing another is masked whole.
            masks.sort_by_key(|m| std::cmp::Reverse(m.len()));
        }
    }

    fn masked(&self, text: &str) -> String {
        let mut text = text.to_owned();
        if let Ok(masks) = self.masks.lock() {
            for mask in masks.iter() {
                if text.contains(mask.as_str()) {
                    text = text.replace(mask.as_str(), "***");
                }
            }
        }
        text
    }

    /// A line of the runner's own.
    pub fn line(&self, text: &str) {
        let _ = self.tx.send(format!("{}\n", self.masked(text)).into_bytes());
    }

    /// A line a step printed: workflow commands it understands are applied (`::add-mask::` is
    /// not logged at all); the rest is masked and logged.
    pub fn step_line(&self, line: &str) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(value) = line.strip_prefix("::add-mask::") {
            self.add_mask(value);
            return;
        }
        self.line(line);
    }
}

/// Starts shipping; await the handle (after dropping the writers) to know everything was sent.
pub fn start(client: Client, runner: i64, job: i64, attempt: i64) -> (LogWriter, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let task = tokio::spawn(async move {
        // The whole log stays here until acknowledged (the server caps a log's size anyway).
        let mut log: Vec<u8> = Vec::new();
        let mut acked: u64 = 0;
        let mut open = true;
        let mut failures = 0u32;
        // When the oldest unsent output arrived: it waits at most LINGER, however busy the step.
        let mut since: Option<tokio::time::Instant> = None;
        loop {
            if open {
                let wait = since.map_or(LINGER, |t| LINGER.saturating_sub(t.elapsed()));
                match tokio::time::timeout(wait, rx.recv()).await {
                    Ok(Some(bytes)) => {
                        log.extend_from_slice(&bytes);
                        since.get_or_insert_with(tokio::time::Instant::now);
                        let due = since.is_some_and(|t| t.elapsed() >= LINGER);
                        if log.len() as u64 - acked < FRAME as u64 && !due {
                            continue;
                        }
                    }
                    Ok(None) => open = false,
                    Err(_) => {} // linger passed: send what there is
                }
            }
            since = None;
            let start = usize::try_from(acked).unwrap_or(usize::MAX).min(log.len());
            if start == log.len() {
                if open {
                    continue;
                }
                return;
            }
            let end = (start + FRAME).min(log.len());
            match client.log(runner, job, attempt, acked, log[start..end].to_vec()).await {
                Ok(LogReply::Stored(offset)) => {
                    acked = offset;
                    failures = 0;
                }
                Ok(LogReply::Gap) => acked = 0,
                Ok(LogReply::LeaseLost) => return,
                Err(e) => {
                    failures += 1;
                    if failures > 30 {
                        tracing::warn!(job, error = %e, "runner: giving up on shipping the log");
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    (LogWriter { tx, masks: std::sync::Arc::default() }, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_apply_to_every_later_line_and_add_mask_is_not_logged() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let log = LogWriter { tx, masks: std::sync::Arc::default() };
        log.step_line("before: hunter2");
        log.step_line("::add-mask::hunter2");
        log.step_line("after: hunter2 and hunter2\r");
        log.add_mask("hunter");
        log.line("runner says hunter2, hunter");
        let mut got = Vec::new();
        while let Ok(bytes) = rx.try_recv() {
            got.push(String::from_utf8(bytes).expect("utf-8"));
        }
        assert_eq!(got, ["before: hunter2\n", "after: *** and ***\n", "runner says ***, ***\n"]);
    }
}
