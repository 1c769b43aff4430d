//! The files of artifacts and caches on the runner's side: finding what a step's `path:` names
//! in the job's workspace and `$HOME`, packing it into an archive, and extracting an archive back.
//!
//! This runs on the host, over directories the job's own code wrote, so it trusts nothing in
//! them: a path given as input must stay inside the workspace or `$HOME` (lexically, and once
//! symbolic links are resolved); a symbolic link is archived as the file it points at only when
//! that file is inside them too; extraction never follows a symbolic link and never writes
//! outside its target directory (archive paths are checked by the archive reader as well).

use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use gitstratum_workflow::glob::Pattern;

use crate::sandbox::{self, JobDirs};

/// The most files one `path:` may gather.
const MAX_FILES: usize = 65_535;

/// Which of the job's directories a path is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Root {
    Workspace,
    Home,
}

impl Root {
    pub fn host(self, dirs: &JobDirs) -> &Path {
        match self {
            Root::Workspace => &dirs.workspace,
            Root::Home => &dirs.home,
        }
    }

    /// Where `rel` under it is as the job sees it (`/workspace/rel`).
    pub fn inside(self, rel: &str) -> String {
        let root = match self {
            Root::Workspace => sandbox::WORKSPACE,
            Root::Home => sandbox::HOME,
        };
        if rel.is_empty() { root.to_owned() } else { format!("{root}/{rel}") }
    }

    /// The prefix of its files' paths in a cache archive.
    pub fn tag(self) -> &'static str {
        match self {
            Root::Workspace => "w",
            Root::Home => "h",
        }
    }
}

/// A path a step named, as the job sees it (`dist`, `~/.cache/x`, `/workspace/out`): which root it
/// is under, and its normalized relative path there (`""`: the root itself).
pub fn resolve(input: &str) -> Result<(Root, String), String> {
    let input = input.trim();
    let full = if input == "~" {
        sandbox::HOME.to_owned()
    } else if let Some(rest) = input.strip_prefix("~/") {
        format!("{}/{rest}", sandbox::HOME)
    } else if input.starts_with('/') {
        input.to_owned()
    } else {
        format!("{}/{input}", sandbox::WORKSPACE)
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in full.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("{input:?} goes above /"));
                }
            }
            p => parts.push(p),
        }
    }
    let normal = format!("/{}", parts.join("/"));
    for (root, prefix) in [(Root::Workspace, sandbox::WORKSPACE), (Root::Home, sandbox::HOME)] {
        if normal == prefix {
            return Ok((root, String::new()));
        }
        if let Some(rest) = normal.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) {
            return Ok((root, rest.to_owned()));
        }
    }
    Err(format!("{input:?} is outside the workspace ({}) and $HOME ({})", sandbox::WORKSPACE, sandbox::HOME))
}

/// A file found for an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Where it is on the host (a symbolic link's target, when it was one).
    pub host: PathBuf,
    pub root: Root,
    /// Its path under its root.
    pub rel: String,
    pub mode: u32,
    pub size: u64,
}

/// What `path:` lines gathered.
#[derive(Debug, Default)]
pub struct Gathered {
    pub files: Vec<Found>,
    /// Where each include line searched from (its literal part), under its root: the artifact's
    /// root is their longest common ancestor.
    pub search_roots: Vec<(Root, String)>,
    /// Symbolic links to directories, which are not followed.
    pub skipped_links: Vec<String>,
}

fn has_wildcard(part: &str) -> bool {
    part.contains(['*', '?', '['])
}

/// The canonical form of the job's roots, to check where links point.
fn canonical_roots(dirs: &JobDirs) -> Vec<PathBuf> {
    [&dirs.workspace, &dirs.home].iter().filter_map(|d| d.canonicalize().ok()).collect()
}

fn inside(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|r| path.starts_with(r))
}

/// Finds the files `lines` name (one path or glob per line; `!` excludes), each inside the
/// workspace or `$HOME`. Hidden files (a part starting with `.` below the search root) only with
/// `hidden`.
pub fn gather(dirs: &JobDirs, lines: &[String], hidden: bool) -> Result<Gathered, String> {
    let roots = canonical_roots(dirs);
    let mut includes = Vec::new();
    let mut excludes = Vec::new();
    for line in lines.iter().map(|l| l.trim()).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (exclude, text) = match line.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        let (root, rel) = resolve(text)?;
        let pattern = if has_wildcard(&rel) { Some(Pattern::new(&rel).map_err(|e| e.to_string())?) } else { None };
        if exclude { excludes.push((root, rel, pattern)) } else { includes.push((root, rel, pattern)) }
    }
    let excluded = |root: Root, rel: &str| {
        excludes.iter().any(|(r, literal, pattern)| {
            *r == root
                && match pattern {
                    Some(p) => p.matches(rel),
                    None => rel == literal || rel.starts_with(&format!("{literal}/")) || literal.is_empty(),
                }
        })
    };
    let mut out = Gathered::default();
    let mut seen = std::collections::HashSet::new();
    for (root, rel, pattern) in &includes {
        // The literal part: the directories before the first wildcard.
        let literal: Vec<&str> = rel.split('/').take_while(|p| !has_wildcard(p)).filter(|p| !p.is_empty()).collect();
        let base_rel = literal.join("/");
        let base = root.host(dirs).join(&base_rel);
        match std::fs::symlink_metadata(&base) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                out.search_roots.push((*root, if pattern.is_some() { base_rel } else { parent_of(&base_rel) }));
                continue;
            }
            Err(e) => return Err(format!("{rel}: {e}")),
        }
        let resolved = base.canonicalize().map_err(|e| format!("{rel}: {e}"))?;
        if !inside(&resolved, &roots) {
            return Err(format!("{rel:?} leads outside the workspace and $HOME (through a symbolic link)"));
        }
        let is_dir = resolved.is_dir();
        let search_root = if is_dir { base_rel.clone() } else { parent_of(&base_rel) };
        out.search_roots.push((*root, search_root.clone()));
        let mut candidates = Vec::new();
        if is_dir {
            walk(&base, &base_rel, &mut candidates, &mut out.skipped_links)?;
        } else {
            candidates.push((base.clone(), base_rel.clone()));
        }
        for (host, file_rel) in candidates {
            if pattern.as_ref().is_some_and(|p| !p.matches(&file_rel)) || excluded(*root, &file_rel) {
                continue;
            }
            let below = file_rel.strip_prefix(&search_root).unwrap_or(&file_rel).trim_start_matches('/');
            if !hidden && below.split('/').any(|p| p.starts_with('.')) {
                continue;
            }
            if !seen.insert((*root, file_rel.clone())) {
                continue;
            }
            let real = host.canonicalize().map_err(|e| format!("{file_rel}: {e}"))?;
            if !inside(&real, &roots) {
                return Err(format!(
                    "{file_rel:?} is a symbolic link to {}, outside the workspace and $HOME",
                    real.display()
                ));
            }
            let meta = std::fs::metadata(&real).map_err(|e| format!("{file_rel}: {e}"))?;
            if !meta.is_file() {
                continue;
            }
            out.files.push(Found {
                host: real,
                root: *root,
                rel: file_rel,
                mode: if meta.permissions().mode() & 0o111 != 0 { 0o755 } else { 0o644 },
                size: meta.len(),
            });
            if out.files.len() > MAX_FILES {
                return Err(format!("more than {MAX_FILES} files"));
            }
        }
    }
    Ok(out)
}

/// `hashFiles(patterns)` as GitHub computes it: the SHA-256 of the SHA-256s of the workspace's
/// files the patterns match (`!` excludes; hidden files included), in path order; `""` when none
/// match.
pub fn hash_files(dirs: &JobDirs, patterns: &[String]) -> Result<String, String> {
    use sha2::{Digest, Sha256};
    let lines: Vec<String> = patterns
        .iter()
        .map(|p| match p.strip_prefix('!') {
            Some(rest) => format!("!{}", rest.trim_start_matches("./")),
            None => p.trim_start_matches("./").to_owned(),
        })
        .collect();
    let mut found = gather(dirs, &lines, true).map_err(|e| format!("hashFiles: {e}"))?.files;
    found.retain(|f| f.root == Root::Workspace);
    if found.is_empty() {
        return Ok(String::new());
    }
    found.sort_by(|a, b| a.rel.cmp(&b.rel));
    let mut all = Sha256::new();
    for file in &found {
        let mut one = Sha256::new();
        let mut input = std::fs::File::open(&file.host).map_err(|e| format!("hashFiles: {}: {e}", file.rel))?;
        io::copy(&mut input, &mut one).map_err(|e| format!("hashFiles: {}: {e}", file.rel))?;
        all.update(one.finalize());
    }
    Ok(all.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn parent_of(rel: &str) -> String {
    rel.rsplit_once('/').map_or(String::new(), |(p, _)| p.to_owned())
}

/// Every file under `dir` (whose path under its root is `rel`), with symbolic links to files;
/// symbolic links to directories are noted, not followed.
fn walk(dir: &Path, rel: &str, out: &mut Vec<(PathBuf, String)>, skipped: &mut Vec<String>) -> Result<(), String> {
    let mut entries: Vec<_> =
        std::fs::read_dir(dir).map_err(|e| format!("{rel}: {e}"))?.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        let child_rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        let path = entry.path();
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            walk(&path, &child_rel, out, skipped)?;
        } else if kind.is_symlink() {
            if path.is_dir() {
                skipped.push(child_rel);
            } else {
                out.push((path, child_rel));
            }
        } else if kind.is_file() {
            out.push((path, child_rel));
        }
        if out.len() > MAX_FILES {
            return Err(format!("more than {MAX_FILES} files"));
        }
    }
    Ok(())
}

/// The longest common ancestor of the search roots (all under one root), as GitHub takes an
/// artifact's root; `None` when they are under different roots.
pub fn common_root(search_roots: &[(Root, String)]) -> Option<(Root, String)> {
    let (root, first) = search_roots.first()?;
    if search_roots.iter().any(|(r, _)| r != root) {
        return None;
    }
    let mut common: Vec<&str> = first.split('/').filter(|p| !p.is_empty()).collect();
    for (_, other) in &search_roots[1..] {
        let parts: Vec<&str> = other.split('/').filter(|p| !p.is_empty()).collect();
        let same = common.iter().zip(&parts).take_while(|(a, b)| a == b).count();
        common.truncate(same);
    }
    Some((*root, common.join("/")))
}

/// An archive packed into a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub files: u64,
    /// The files' bytes.
    pub bytes: u64,
    /// The archive's length and SHA-256 (hex), as the server will check them.
    pub length: u64,
    pub sha256: String,
}

/// Counts and hashes what passes through.
struct Hashing<W> {
    inner: W,
    hash: sha2::Sha256,
    length: u64,
}

impl<W: io::Write> io::Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.length += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Packs `files` into an archive at `out`, each named by `name`.
pub fn pack(files: &[Found], name: impl Fn(&Found) -> String, out: &Path) -> io::Result<Packed> {
    use sha2::Digest;
    let file = io::BufWriter::with_capacity(256 * 1024, std::fs::File::create(out)?);
    let mut writer = gitstratum_artifact::Writer::new(Hashing { inner: file, hash: sha2::Sha256::new(), length: 0 })?;
    for found in files {
        let mut input = std::fs::File::open(&found.host)?;
        writer.add(&name(found), found.mode, found.size, &mut input)?;
    }
    let (count, bytes) = (writer.files(), writer.bytes());
    let mut out = writer.finish()?;
    io::Write::flush(&mut out)?;
    let sha256 = out.hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Packed { files: count, bytes, length: out.length, sha256 })
}

/// Creates `rel`'s directories under `root`, refusing to pass through anything but a real
/// directory; returns the directory the last part goes in.
fn make_dirs(root: &Path, parts: &[&str]) -> io::Result<PathBuf> {
    let mut here = root.to_path_buf();
    for part in parts {
        here.push(part);
        match std::fs::symlink_metadata(&here) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(io::Error::other(format!(
                    "{} is a symbolic link; not extracting through it",
                    here.display()
                )));
            }
            Ok(_) => return Err(io::Error::other(format!("{} is a file, not a directory", here.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir(&here)?,
            Err(e) => return Err(e),
        }
    }
    Ok(here)
}

/// Writes one file at `parts` under `root`: never through or onto a symbolic link (one in its
/// place is replaced), never onto a directory.
pub fn write_file(root: &Path, parts: &[&str], mode: u32, data: &mut dyn Read) -> io::Result<u64> {
    let (last, dirs) = parts.split_last().ok_or_else(|| io::Error::other("an empty path"))?;
    let dir = make_dirs(root, dirs)?;
    let target = dir.join(last);
    match std::fs::symlink_metadata(&target) {
        Ok(m) if m.is_dir() => {
            return Err(io::Error::other(format!("{} is a directory", target.display())));
        }
        Ok(_) => std::fs::remove_file(&target)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // create_new: O_EXCL, which also refuses to follow a link that appeared meanwhile.
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode & 0o777).open(&target)?;
    io::copy(data, &mut file)
}

/// Extracts an archive: each entry goes where `place` says (a root directory and a path under it;
/// `None` skips the entry). Returns (files, bytes).
pub fn extract(
    archive: &Path,
    limits: &gitstratum_artifact::Limits,
    place: impl Fn(&str) -> Option<(PathBuf, String)>,
) -> Result<(u64, u64), String> {
    let file = std::fs::File::open(archive).map_err(|e| e.to_string())?;
    let summary = gitstratum_artifact::read_archive(io::BufReader::new(file), limits, |entry, data| {
        let Some((root, rel)) = place(&entry.path) else { return Ok(()) };
        let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
        write_file(&root, &parts, entry.mode, data).map(|_| ())
    })
    .map_err(|e| e.to_string())?;
    Ok((summary.files, summary.bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs() -> (tempfile::TempDir, JobDirs) {
        let tmp = tempfile::tempdir().expect("tmp");
        let dirs = JobDirs::create(tmp.path().join("job")).expect("dirs");
        (tmp, dirs)
    }

    fn put(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn resolving_paths() {
        assert_eq!(resolve("dist").expect("ok"), (Root::Workspace, "dist".to_owned()));
        assert_eq!(resolve("./a/../b/").expect("ok"), (Root::Workspace, "b".to_owned()));
        assert_eq!(resolve("~/.npm").expect("ok"), (Root::Home, ".npm".to_owned()));
        assert_eq!(resolve("/workspace").expect("ok"), (Root::Workspace, String::new()));
        assert!(resolve("../x").is_err());
        assert!(resolve("/etc/passwd").is_err());
        assert!(resolve("/workspace/../etc").is_err());
        assert!(resolve("/workspacex/a").is_err());
    }

    #[test]
    fn gathering_with_globs_excludes_and_hidden_files() {
        let (_tmp, dirs) = dirs();
        let w = &dirs.workspace;
        put(w, "dist/app.js", "js");
        put(w, "dist/app.map", "map");
        put(w, "dist/sub/lib.js", "lib");
        put(w, "dist/.env", "secret");
        put(w, "README", "readme");
        let lines = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let got = gather(&dirs, &lines(&["dist/", "!dist/**/*.map"]), false).expect("gather");
        let rels: Vec<&str> = got.files.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(rels, ["dist/app.js", "dist/sub/lib.js"]);
        assert_eq!(common_root(&got.search_roots), Some((Root::Workspace, "dist".to_owned())));
        let got = gather(&dirs, &lines(&["dist/**/*.js", "README"]), true).expect("gather");
        let rels: Vec<&str> = got.files.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(rels, ["dist/app.js", "dist/sub/lib.js", "README"]);
        assert_eq!(common_root(&got.search_roots), Some((Root::Workspace, String::new())));
        let got = gather(&dirs, &lines(&["dist"]), true).expect("gather");
        assert!(got.files.iter().any(|f| f.rel == "dist/.env"));
        assert!(gather(&dirs, &lines(&["missing/file"]), false).expect("gather").files.is_empty());
    }

    #[test]
    fn hash_files_is_a_hash_of_hashes() {
        let (_tmp, dirs) = dirs();
        put(&dirs.workspace, "a/Cargo.lock", "one");
        put(&dirs.workspace, "b/Cargo.lock", "two");
        put(&dirs.workspace, "b/other", "x");
        let hash = |p: &[&str]| hash_files(&dirs, &p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("hash");
        let both = hash(&["**/Cargo.lock"]);
        assert_eq!(both.len(), 64);
        assert_eq!(both, hash(&["./**/Cargo.lock"]), "a leading ./ changes nothing");
        assert_ne!(both, hash(&["a/Cargo.lock"]));
        assert_eq!(hash(&["**/Cargo.lock", "!b/**"]), hash(&["a/Cargo.lock"]));
        assert_eq!(hash(&["nothing/*"]), "");
        put(&dirs.workspace, "a/Cargo.lock", "changed");
        assert_ne!(both, hash(&["**/Cargo.lock"]));
    }

    #[test]
    fn links_out_of_the_job_are_refused() {
        let (tmp, dirs) = dirs();
        let outside = tmp.path().join("outside");
        put(&outside, "secret", "s3cret");
        std::fs::create_dir_all(dirs.workspace.join("out")).expect("mkdir");
        std::os::unix::fs::symlink(outside.join("secret"), dirs.workspace.join("out/leak")).expect("link");
        let err = gather(&dirs, &["out".to_owned()], false).expect_err("refused");
        assert!(err.contains("outside the workspace"), "{err}");
        std::os::unix::fs::symlink(&outside, dirs.workspace.join("dirlink")).expect("link");
        let err = gather(&dirs, &["dirlink/secret".to_owned()], false).expect_err("refused");
        assert!(err.contains("outside"), "{err}");
        // A link inside the workspace is archived as its file.
        put(&dirs.workspace, "real.txt", "real");
        std::fs::remove_file(dirs.workspace.join("out/leak")).expect("rm");
        std::os::unix::fs::symlink(dirs.workspace.join("real.txt"), dirs.workspace.join("out/ok")).expect("link");
        let got = gather(&dirs, &["out".to_owned()], false).expect("gather");
        assert_eq!(got.files.len(), 1);
        assert_eq!(got.files[0].size, 4);
    }

    #[test]
    fn pack_and_extract_never_leave_the_target() {
        let (tmp, dirs) = dirs();
        put(&dirs.workspace, "dist/a.txt", "alpha");
        put(&dirs.workspace, "dist/b/c.txt", "charlie");
        let got = gather(&dirs, &["dist".to_owned()], false).expect("gather");
        let archive = tmp.path().join("a.gsar");
        let packed = pack(&got.files, |f| f.rel["dist/".len()..].to_owned(), &archive).expect("pack");
        assert_eq!((packed.files, packed.bytes), (2, 12));
        let on_disk = std::fs::read(&archive).expect("archive");
        assert_eq!(packed.length, on_disk.len() as u64);
        use sha2::Digest;
        let hex: String = sha2::Sha256::digest(&on_disk).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(packed.sha256, hex);
        let target = tmp.path().join("target");
        std::fs::create_dir_all(&target).expect("mkdir");
        // A link planted where a directory goes is not followed.
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).expect("mkdir");
        std::os::unix::fs::symlink(&elsewhere, target.join("b")).expect("link");
        let limits = gitstratum_artifact::Limits::default();
        let err = extract(&archive, &limits, |p| Some((target.clone(), p.to_owned()))).expect_err("refused");
        assert!(err.contains("symbolic link"), "{err}");
        assert!(std::fs::read_dir(&elsewhere).expect("dir").next().is_none());
        std::fs::remove_file(target.join("b")).expect("rm");
        // A link planted where a file goes is replaced, not written through.
        std::fs::remove_file(target.join("a.txt")).expect("rm the first try's file");
        std::os::unix::fs::symlink(elsewhere.join("x"), target.join("a.txt")).expect("link");
        extract(&archive, &limits, |p| Some((target.clone(), p.to_owned()))).expect("extract");
        assert_eq!(std::fs::read_to_string(target.join("a.txt")).expect("read"), "alpha");
        assert_eq!(std::fs::read_to_string(target.join("b/c.txt")).expect("read"), "charlie");
        assert!(!elsewhere.join("x").exists());
    }
}
