//! Ships a job's log to the server as it is written: frames addressed by byte offset, resent
//! until acknowledged, so a lost request or response loses nothing and doubles nothing.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::protocol::{Client, LogReply};

/// The most sent in one frame.
const FRAME: usize = 256 * 1024;
/// How long output may wait before it is sent.
const LINGER: Duration = Duration::from_millis(250);

/// The writing end; dropping every clone lets the shipper send what is left and finish.
#[derive(Clone)]
pub struct LogWriter {
    tx: mpsc::UnboundedSender<Vec<u8>>,
}

impl LogWriter {
    pub fn write(&self, bytes: &[u8]) {
        let _ = self.tx.send(bytes.to_vec());
    }

    pub fn line(&self, text: &str) {
        self.write(format!("{text}\n").as_bytes());
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
        loop {
            if open {
                match tokio::time::timeout(LINGER, rx.recv()).await {
                    Ok(Some(bytes)) => {
                        log.extend_from_slice(&bytes);
                        if log.len() as u64 - acked < FRAME as u64 {
                            continue;
                        }
                    }
                    Ok(None) => open = false,
                    Err(_) => {} // linger passed: send what there is
                }
            }
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
    (LogWriter { tx }, task)
}
