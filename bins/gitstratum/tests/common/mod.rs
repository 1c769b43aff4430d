//! Running the real `gitstratum` binary in tests.

#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct Process {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub stderr: Vec<String>,
}

/// `gitstratum serve` on port 0 with a clean environment (no `GITSTRATUM_*` from the caller).
pub fn spawn(data_dir: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> Process {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gitstratum"));
    cmd.arg("serve").arg("--listen").arg("127.0.0.1:0").arg("--data-dir").arg(data_dir).args(extra_args);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("GITSTRATUM_")) {
        cmd.env_remove(key);
    }
    // Tests deliver webhooks to receivers on this machine: allow loopback (unless a test says).
    cmd.env("GITSTRATUM_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1,::1");
    cmd.envs(env.iter().copied()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn gitstratum");
    let stderr = child.stderr.take().expect("piped");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Process { child, lines, stderr: Vec::new() }
}

impl Process {
    /// Waits for a stderr line containing `needle`; returns it.
    pub fn wait_for(&mut self, needle: &str) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stderr.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line containing {needle:?}; stderr so far:\n{}", self.stderr.join("\n")),
            }
        }
    }

    pub fn base_url(&mut self) -> String {
        let line = self.wait_for("listening on http://");
        let start = line.find("http://").expect("url in line");
        line[start..].split(|c: char| c.is_whitespace() || c == '"').next().expect("url").to_owned()
    }

    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().expect("kill");
        assert!(status.success());
        self.wait()
    }

    pub fn wait(&mut self) -> ExitStatus {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // The reader thread ends at EOF, which follows the exit; collect until then.
                while let Ok(line) = self.lines.recv_timeout(DEADLINE) {
                    self.stderr.push(line);
                }
                return status;
            }
            assert!(Instant::now() < end, "process did not exit; stderr:\n{}", self.stderr.join("\n"));
            // Polling a child's exit status has no blocking-with-timeout form in std.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    pub fn base_url_from(&self, line: &str) -> String {
        let start = line.find("http://").expect("url in line");
        line[start..].split(|c: char| c.is_whitespace() || c == '"').next().expect("url").to_owned()
    }
}
