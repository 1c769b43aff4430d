//! The sandbox every step runs in: bubblewrap with new user, PID, IPC, UTS and cgroup namespaces
//! (and a network namespace with only loopback, unless the runner is told `host`), every
//! capability dropped, the host's system directories read-only, a curated part of `/etc` (never
//! `shadow` or the like), the job's own `/tmp` (shared by its steps), and of the job only its
//! workspace, its `$HOME` and its step scripts. Nothing else of the host is visible: no data directory, no other job, no server
//! secret. The environment is cleared and set from the step's alone.

use std::path::{Path, PathBuf};

/// The network a job's steps see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// Loopback only.
    #[default]
    Isolated,
    /// The host's network.
    Host,
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "isolated" => Ok(Network::Isolated),
            "host" => Ok(Network::Host),
            other => Err(format!("unknown network {other:?}; expected \"isolated\" or \"host\"")),
        }
    }
}

/// Where the job's parts appear inside the sandbox.
pub const WORKSPACE: &str = "/workspace";
pub const HOME: &str = "/home/runner";
pub const SCRIPTS: &str = "/__gitstratum/scripts";
/// Where steps write `$GITHUB_OUTPUT`, `$GITHUB_ENV` and `$GITHUB_PATH`.
pub const FILES: &str = "/__gitstratum/files";
/// Where the actions of other repositories a job uses are, read-only.
pub const ACTIONS: &str = "/__gitstratum/actions";

/// Parts of `/etc` programs need (name resolution, TLS roots, the dynamic linker, users).
const ETC: &[&str] = &[
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "ssl",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "hosts",
    "resolv.conf",
    "nsswitch.conf",
    "passwd",
    "group",
    "localtime",
    "timezone",
    "bash.bashrc",
    "profile",
    "mime.types",
    "gitconfig",
];

/// The job's directories on the host.
#[derive(Debug, Clone)]
pub struct JobDirs {
    pub root: PathBuf,
    pub workspace: PathBuf,
    pub home: PathBuf,
    pub scripts: PathBuf,
    pub files: PathBuf,
    /// The job's `/tmp` (and `RUNNER_TEMP`): one for all its steps, as on GitHub, and not the
    /// host's.
    pub tmp: PathBuf,
    /// The actions of other repositories the job uses (linked from the runner's cache), read-only
    /// inside the sandbox.
    pub actions: PathBuf,
}

impl JobDirs {
    pub fn create(root: PathBuf) -> std::io::Result<JobDirs> {
        let dirs = JobDirs {
            workspace: root.join("workspace"),
            home: root.join("home"),
            scripts: root.join("scripts"),
            files: root.join("files"),
            tmp: root.join("tmp"),
            actions: root.join("actions"),
            root,
        };
        for dir in [&dirs.workspace, &dirs.home, &dirs.scripts, &dirs.files, &dirs.tmp, &dirs.actions] {
            std::fs::create_dir_all(dir)?;
        }
        Ok(dirs)
    }
}

/// `bwrap` with the sandbox's arguments, ready for `-- program args…`. With `cgroups` (their
/// `cgroup.procs` files), a shell first moves itself into them and then becomes bwrap, so every
/// process of the step is inside the job's limits from its start.
pub fn command(
    dirs: &JobDirs,
    network: Network,
    cwd: &str,
    env: &[(String, String)],
    cgroups: &[PathBuf],
) -> tokio::process::Command {
    let mut cmd = if cgroups.is_empty() {
        tokio::process::Command::new("bwrap")
    } else {
        let mut script = String::new();
        for i in 0..cgroups.len() {
            script.push_str(&format!("echo $$ > \"$GITSTRATUM_CGROUP_{i}\" && "));
        }
        script.push_str("exec bwrap \"$@\"");
        let mut sh = tokio::process::Command::new("/bin/sh");
        sh.arg("-c").arg(script).arg("sh");
        for (i, procs) in cgroups.iter().enumerate() {
            sh.env(format!("GITSTRATUM_CGROUP_{i}"), procs);
        }
        sh
    };
    cmd.args(["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]);
    if network == Network::Isolated {
        cmd.arg("--unshare-net");
    }
    cmd.args(["--die-with-parent", "--new-session", "--cap-drop", "ALL"]);
    cmd.args(["--ro-bind", "/usr", "/usr"]);
    for (link, target) in [("/bin", "usr/bin"), ("/sbin", "usr/sbin"), ("/lib", "usr/lib"), ("/lib64", "usr/lib64")] {
        // Merged-/usr systems have these as symlinks; others as directories.
        if std::fs::symlink_metadata(link).is_ok_and(|m| m.file_type().is_symlink()) {
            cmd.args(["--symlink", target, link]);
        } else if Path::new(link).is_dir() {
            cmd.args(["--ro-bind", link, link]);
        }
    }
    for name in ETC {
        let path = format!("/etc/{name}");
        cmd.args(["--ro-bind-try", &path, &path]);
    }
    cmd.args(["--proc", "/proc", "--dev", "/dev"]);
    cmd.arg("--bind").arg(&dirs.tmp).arg("/tmp");
    cmd.arg("--bind").arg(&dirs.workspace).arg(WORKSPACE);
    cmd.arg("--bind").arg(&dirs.home).arg(HOME);
    cmd.arg("--ro-bind").arg(&dirs.scripts).arg(SCRIPTS);
    cmd.arg("--bind").arg(&dirs.files).arg(FILES);
    cmd.arg("--ro-bind").arg(&dirs.actions).arg(ACTIONS);
    cmd.args(["--chdir", cwd, "--clearenv"]);
    for (key, value) in env {
        cmd.arg("--setenv").arg(key).arg(value);
    }
    cmd.arg("--");
    cmd
}

/// Whether a sandbox can be made here; the reason when not.
pub async fn check() -> Result<(), String> {
    let out = tokio::process::Command::new("bwrap")
        .args(["--unshare-user", "--unshare-pid", "--unshare-net", "--die-with-parent", "--ro-bind", "/usr", "/usr"])
        .args(["--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64"])
        .args(["--", "/usr/bin/true"])
        .output()
        .await
        .map_err(|e| format!("cannot run bwrap: {e} (install the bubblewrap package)"))?;
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()) }
}
