//! Per-job resource limits through cgroups: memory and process count, on cgroup v2 where the
//! unified hierarchy has those controllers, else on cgroup v1's `memory` and `pids` hierarchies.
//! A job's processes join its cgroups before bubblewrap starts (a shell writes its own pid into
//! them and then execs bwrap), so nothing escapes. After a failed step the cgroups' event counters
//! say whether a limit was hit, and the step's log says which. Without writable cgroups the job
//! runs without these limits and its log says so.

use std::path::{Path, PathBuf};

/// The limits of one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub processes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory_bytes: 4 << 30, processes: 2048 }
    }
}

/// One job's cgroups.
#[derive(Debug)]
pub enum JobCgroup {
    V2 { dir: PathBuf },
    V1 { memory: PathBuf, pids: PathBuf },
}

/// Which limit a step ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    Memory,
    Processes,
}

fn own_path(controller: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers.split(',').any(|c| c == controller).then(|| path.to_owned())
    })
}

fn unified_path() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|line| line.strip_prefix("0::").map(str::to_owned))
}

fn make(dir: &Path, settings: &[(&str, String)]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (file, value) in settings {
        std::fs::write(dir.join(file), value)?;
    }
    Ok(())
}

impl JobCgroup {
    /// Makes the job's cgroups under this process's own, with the limits set; `Err` says why
    /// there are none.
    pub fn create(name: &str, limits: Limits) -> Result<JobCgroup, String> {
        let root = Path::new("/sys/fs/cgroup");
        let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        if controllers.split_whitespace().any(|c| c == "memory") && controllers.split_whitespace().any(|c| c == "pids")
        {
            let base = unified_path().unwrap_or_default();
            let dir = root.join(base.trim_start_matches('/')).join("gitstratum").join(name);
            // On v2 the parent must delegate the controllers to its children.
            if let Some(parent) = dir.parent() {
                let _ = std::fs::create_dir_all(parent);
                let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+memory +pids");
            }
            let settings =
                [("memory.max", limits.memory_bytes.to_string()), ("pids.max", limits.processes.to_string())];
            return match make(&dir, &settings) {
                Ok(()) => {
                    // Swap would let a job exceed its memory quietly; absent without swap accounting.
                    let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                    Ok(JobCgroup::V2 { dir })
                }
                Err(e) => Err(format!("cgroup v2 at {}: {e}", dir.display())),
            };
        }
        let (memory_root, pids_root) = (root.join("memory"), root.join("pids"));
        if !memory_root.join("cgroup.procs").exists() || !pids_root.join("cgroup.procs").exists() {
            return Err(
                "no cgroup v2 with memory and pids controllers, and no cgroup v1 memory and pids hierarchies".into()
            );
        }
        let memory = memory_root
            .join(own_path("memory").unwrap_or_default().trim_start_matches('/'))
            .join("gitstratum")
            .join(name);
        let pids =
            pids_root.join(own_path("pids").unwrap_or_default().trim_start_matches('/')).join("gitstratum").join(name);
        make(&memory, &[("memory.limit_in_bytes", limits.memory_bytes.to_string())])
            .map_err(|e| format!("cgroup v1 memory at {}: {e}", memory.display()))?;
        // Without swap accounting this file is absent; the memory limit still holds.
        let _ = std::fs::write(memory.join("memory.memsw.limit_in_bytes"), limits.memory_bytes.to_string());
        make(&pids, &[("pids.max", limits.processes.to_string())])
            .map_err(|e| format!("cgroup v1 pids at {}: {e}", pids.display()))?;
        Ok(JobCgroup::V1 { memory, pids })
    }

    /// The `cgroup.procs` files a process must write its pid into to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        match self {
            JobCgroup::V2 { dir } => vec![dir.join("cgroup.procs")],
            JobCgroup::V1 { memory, pids } => vec![memory.join("cgroup.procs"), pids.join("cgroup.procs")],
        }
    }

    /// Counters of limit events so far: (memory, processes).
    pub fn counters(&self) -> (u64, u64) {
        let field = |path: PathBuf, key: &str| -> u64 {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
                .unwrap_or(0)
        };
        match self {
            JobCgroup::V2 { dir } => {
                (field(dir.join("memory.events"), "oom_kill "), field(dir.join("pids.events"), "max "))
            }
            JobCgroup::V1 { memory, pids } => {
                let failcnt = std::fs::read_to_string(memory.join("memory.failcnt"))
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .unwrap_or(0);
                let oom = field(memory.join("memory.oom_control"), "oom_kill ");
                (failcnt.max(oom), field(pids.join("pids.events"), "max "))
            }
        }
    }

    /// Which limit was hit since `before` (a counters reading), if any.
    pub fn hit_since(&self, before: (u64, u64)) -> Option<Hit> {
        let now = self.counters();
        if now.0 > before.0 {
            Some(Hit::Memory)
        } else if now.1 > before.1 {
            Some(Hit::Processes)
        } else {
            None
        }
    }

    /// Removes the cgroups (their processes have ended).
    pub fn remove(&self) {
        let dirs = match self {
            JobCgroup::V2 { dir } => vec![dir.clone()],
            JobCgroup::V1 { memory, pids } => vec![memory.clone(), pids.clone()],
        };
        for dir in dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
