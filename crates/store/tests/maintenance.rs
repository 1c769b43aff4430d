//! Maintenance of `RocksStore` packs, on packs C git wrote: roll-ups and full repacks keep every
//! object readable (and the packs ones `git verify-pack` accepts), unreachable objects go to a
//! cruft pack and are pruned only after the grace period, never while a push holds a pin, and
//! never when a kept object needs them as a delta base; readers never miss an object while
//! packs are replaced under them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use gitstratum_git::{ObjectId, ObjectKind, hash_object, packfile, parse};
use gitstratum_store::rocks::{Maintenance, RocksStore};
use gitstratum_store::{Actor, IncomingPack, ObjectStore, RefStore, RefUpdate, RepoId};

const REPO: RepoId = RepoId(5);
const HOUR: i64 = 3_600_000;
const T0: i64 = 1_800_000_000_000;

fn git_in(dir: &Path, args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .env("GIT_AUTHOR_NAME", "A")
        .env("GIT_AUTHOR_EMAIL", "a@example.com")
        .env("GIT_COMMITTER_NAME", "C")
        .env("GIT_COMMITTER_EMAIL", "c@example.com")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.unwrap_or_default().to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let out = child.wait_with_output().expect("git");
    let _ = writer.join();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn git(dir: &Path, args: &[&str]) -> String {
    String::from_utf8(git_in(dir, args, None)).expect("utf-8").trim().to_owned()
}

fn id(hex: &str) -> ObjectId {
    ObjectId::from_hex(hex.as_bytes()).expect("object id")
}

/// Indexes `bytes` (a pack) as a push would and stores it.
fn store_pack(s: &RocksStore, bytes: &[u8]) {
    store_pack_in(s, REPO, bytes);
}

fn store_pack_in(s: &RocksStore, repo: RepoId, bytes: &[u8]) {
    let spooled = tempfile::NamedTempFile::new_in(s.incoming_dir()).expect("spool");
    let scan = packfile::scan(bytes, spooled.as_file(), 1 << 30).expect("scan");
    let file = std::fs::File::open(spooled.path()).expect("open");
    let mut commits = Vec::new();
    let external = |id: &ObjectId| s.get_many(repo, &[*id]).ok()?.pop().flatten().map(|o| (o.kind, o.data));
    let resolved = packfile::resolve(&file, &scan, &external, 1 << 26, &mut |id, kind, data| {
        if kind == ObjectKind::Commit {
            commits.push((*id, parse::commit(data).map_err(|e| e.to_string())?));
        }
        Ok(())
    })
    .expect("resolve");
    let pack =
        IncomingPack { path: spooled.path(), checksum: scan.checksum, entries: &resolved.entries, commits: &commits };
    s.put_pack(repo, pack).expect("put_pack");
}

/// What C git packs for `revs` (one per line, `^` excluding).
fn git_pack(work: &Path, revs: &str) -> Vec<u8> {
    git_in(work, &["pack-objects", "--revs", "--stdout", "-q"], Some(format!("{revs}\n").as_bytes()))
}

fn set_ref(s: &RocksStore, name: &str, new: Option<ObjectId>) {
    set_ref_in(s, REPO, name, new);
}

fn set_ref_in(s: &RocksStore, repo: RepoId, name: &str, new: Option<ObjectId>) {
    let old = s.get(repo, name).expect("get");
    let actor = Actor { name: "t".into(), time_ms: T0 };
    s.update(repo, &[RefUpdate { name: name.into(), old, new }], &actor).expect("io").expect("no conflict");
}

/// Every id reads back, and hashes to itself.
fn assert_all_readable(s: &RocksStore, ids: &[ObjectId]) {
    for (id, object) in ids.iter().zip(s.get_many(REPO, ids).expect("get")) {
        let object = object.unwrap_or_else(|| panic!("{id} is stored"));
        assert_eq!(hash_object(object.kind, &object.data).expect("hash"), *id);
    }
    assert!(s.raw_many(REPO, ids).expect("raw").iter().all(Option::is_some));
}

fn pack_files(data: &Path) -> Vec<PathBuf> {
    let dir = data.join("packs").join(REPO.0.to_string());
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir).expect("packs").map(|e| e.expect("entry").path()).collect();
    out.sort();
    out
}

/// Bytes of the repository's pack files.
fn packed_bytes(data: &Path) -> u64 {
    pack_files(data)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .map(|p| p.metadata().expect("stat").len())
        .sum()
}

/// C git verifies the packs that must be whole on their own: the main pack of a full repack
/// (the one with bitmaps), or a repository's only pack. (A cruft pack or a roll-up may hold REF
/// deltas against objects of the repository's other packs.)
fn verify_packs(data: &Path) {
    let indexes: Vec<PathBuf> =
        pack_files(data).into_iter().filter(|p| p.extension().is_some_and(|e| e == "idx")).collect();
    let whole = |idx: &PathBuf| indexes.len() == 1 || idx.with_extension("reach").exists();
    for idx in indexes.iter().filter(|i| whole(i)) {
        let out = Command::new("git").args(["verify-pack", "-v"]).arg(idx).output().expect("git verify-pack");
        assert!(out.status.success(), "{}: {}", idx.display(), String::from_utf8_lossy(&out.stderr));
    }
}

/// The store's reachability answer for `revs` is `git rev-list --objects`'s, with and without
/// blobs.
fn assert_reach(s: &RocksStore, work: &Path, revs: &[&str]) {
    let mut args = vec!["rev-list", "--objects"];
    args.extend_from_slice(revs);
    let expected: HashSet<ObjectId> = git(work, &args).lines().map(|l| id(&l[..40])).collect();
    let tips: Vec<ObjectId> = revs.iter().map(|r| id(&git(work, &["rev-parse", r]))).collect();
    let got = s.reachable(REPO, &tips, true).expect("reachable").expect("bitmaps after a full repack");
    let got_set: HashSet<ObjectId> = got.iter().map(|(id, _)| *id).collect();
    assert_eq!(got.len(), got_set.len(), "{revs:?}: each object once");
    assert_eq!(got_set, expected, "{revs:?}");
    for (id, kind) in &got {
        let info = s.info_many(REPO, &[*id]).expect("info")[0].expect("stored");
        assert_eq!(info.kind, *kind, "{id}");
    }
    let without: HashSet<ObjectId> =
        s.reachable(REPO, &tips, false).expect("reachable").expect("bitmaps").into_iter().map(|(id, _)| id).collect();
    let blobs: HashSet<ObjectId> = got.iter().filter(|(_, k)| *k == ObjectKind::Blob).map(|(id, _)| *id).collect();
    assert_eq!(without, &expected - &blobs, "{revs:?} without blobs");
}

/// A temporary directory with a work tree for C git (`work`) and a store's data directory
/// (`data`), and the store opened there; the directory lives as long as the first value.
fn work_and_store() -> (tempfile::TempDir, PathBuf, PathBuf, RocksStore) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (work, data) = (tmp.path().join("work"), tmp.path().join("data"));
    std::fs::create_dir_all(&work).expect("work");
    let s = RocksStore::open(&data).expect("open");
    (tmp, work, data, s)
}

fn full(now_ms: i64) -> Maintenance {
    Maintenance { full: true, prune_grace_ms: HOUR, now_ms }
}

/// A history with deltas (one file edited commit after commit) and a side branch with objects
/// of its own; pushed as four packs.
fn history(work: &Path, s: &RocksStore) -> (Vec<ObjectId>, Vec<ObjectId>) {
    git(work, &["init", "-q", "-b", "main"]);
    let mut text: String = (0..300).map(|l| format!("line {l} of a file that changes a little each time\n")).collect();
    let mut commits = Vec::new();
    for i in 0..6 {
        text.push_str(&format!("edit {i}\n"));
        std::fs::write(work.join("f.txt"), &text).expect("write");
        std::fs::write(work.join(format!("n{i}.txt")), format!("{i}\n")).expect("write");
        git(work, &["add", "-A"]);
        git(work, &["commit", "-q", "-m", &format!("c{i}")]);
        commits.push(git(work, &["rev-parse", "HEAD"]));
        if i == 2 {
            git(work, &["branch", "side"]);
        }
    }
    git(work, &["checkout", "-q", "side"]);
    for i in 0..2 {
        std::fs::write(work.join("side.txt"), format!("side {i}\n").repeat(50)).expect("write");
        git(work, &["add", "-A"]);
        git(work, &["commit", "-q", "-m", &format!("s{i}")]);
    }
    git(work, &["checkout", "-q", "main"]);
    let c = |i: usize| commits[i].clone();
    for revs in [c(2), format!("{}\n^{}", c(4), c(2)), format!("{}\n^{}", c(5), c(4)), format!("side\n^{}", c(2))] {
        store_pack(s, &git_pack(work, &revs));
    }
    set_ref(s, "refs/heads/main", Some(id(&c(5))));
    set_ref(s, "refs/heads/side", Some(id(&git(work, &["rev-parse", "side"]))));
    let list = |args: &[&str]| -> Vec<ObjectId> {
        git(work, args).lines().map(|l| id(&l[..40])).collect::<HashSet<_>>().into_iter().collect()
    };
    (list(&["rev-list", "--objects", "main"]), list(&["rev-list", "--objects", "side", "^main"]))
}

#[test]
fn repacks_keep_every_object_and_prune_only_the_long_unreachable() {
    let (_tmp, work, data, s) = work_and_store();
    let (main, side) = history(&work, &s);
    let everything: Vec<ObjectId> = main.iter().chain(&side).copied().collect();
    assert_all_readable(&s, &everything);

    // Four small packs: rolled into one.
    assert!(s.needs_roll_up(REPO).expect("plan"));
    let report = s.maintain(REPO, &Maintenance { full: false, prune_grace_ms: HOUR, now_ms: T0 }).expect("roll up");
    assert_eq!((report.packs_before, report.packs_after), (4, 1), "{report:?}");
    assert!(!s.needs_roll_up(REPO).expect("plan"));
    assert_all_readable(&s, &everything);
    verify_packs(&data);

    // Full: everything is reachable, one pack.
    assert!(s.full_repack_due(REPO, T0, 0, HOUR).expect("due"), "never repacked");
    let report = s.maintain(REPO, &full(T0)).expect("full");
    assert_eq!((report.packs_after, report.cruft, report.pruned), (1, 0, 0), "{report:?}");
    assert_all_readable(&s, &everything);
    verify_packs(&data);
    assert!(!s.full_repack_due(REPO, T0 + 2 * HOUR, 0, HOUR).expect("due"), "nothing changed");

    // Bitmaps answer what C git's rev-list does, from ref tips (bitmapped), from commits between
    // them (walked down to bitmapped ones), and for objects pushed after the repack.
    for revs in [&["main"][..], &["side"], &["main", "side"], &["main~2"], &["main~1", "side~1"]] {
        assert_reach(&s, &work, revs);
    }
    git(&work, &["checkout", "-q", "main"]);
    std::fs::write(work.join("later.txt"), "pushed after the repack\n").expect("write");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "later"]);
    store_pack(&s, &git_pack(&work, "main\n^main~1"));
    assert_reach(&s, &work, &["main"]);
    assert_reach(&s, &work, &["main", "side"]);
    let later = id(&git(&work, &["rev-parse", "main"]));
    set_ref(&s, "refs/heads/main", Some(later));
    let main: Vec<ObjectId> = git(&work, &["rev-list", "--objects", "main"]).lines().map(|l| id(&l[..40])).collect();
    let everything: Vec<ObjectId> = main.iter().chain(&side).copied().collect();
    let report = s.maintain(REPO, &full(T0)).expect("full");
    assert_eq!((report.packs_after, report.cruft), (1, 0), "{report:?}");

    // The side branch goes: its objects move to a cruft pack, still readable.
    set_ref(&s, "refs/heads/side", None);
    assert!(s.full_repack_due(REPO, T0, 0, HOUR).expect("due"), "a ref moved");
    let report = s.maintain(REPO, &full(T0)).expect("full");
    // A side object the delta search made the base of a main object stays with it.
    let cruft = report.cruft;
    assert!((report.packs_after, report.pruned) == (2, 0) && cruft > 0 && cruft <= side.len() as u64, "{report:?}");
    assert_all_readable(&s, &everything);
    verify_packs(&data);
    // Within the grace period nothing is due and nothing would be pruned.
    assert!(!s.full_repack_due(REPO, T0 + HOUR / 2, 0, HOUR).expect("due"));
    let report = s.maintain(REPO, &full(T0 + HOUR / 2)).expect("full");
    assert_eq!(report.pruned, 0, "{report:?}");
    assert_all_readable(&s, &everything);

    // Past it, a push in flight still holds pruning back.
    assert!(s.full_repack_due(REPO, T0 + 2 * HOUR, 0, HOUR).expect("due"), "the cruft expired");
    let pin = s.pin(REPO);
    let report = s.maintain(REPO, &full(T0 + 2 * HOUR)).expect("full");
    assert!(report.prune_deferred && report.pruned == 0, "{report:?}");
    assert_all_readable(&s, &everything);
    drop(pin);

    let before = s.stats(REPO).expect("stats").objects;
    let report = s.maintain(REPO, &full(T0 + 2 * HOUR)).expect("full");
    assert_eq!((report.pruned, report.packs_after), (cruft, 1), "{report:?}");
    assert_eq!(s.stats(REPO).expect("stats").objects, before - cruft);
    assert_all_readable(&s, &main);
    for (id, object) in side.iter().zip(s.get_many(REPO, &side).expect("get")) {
        // What is left of the side branch is only what main's deltas are based on.
        assert!(object.is_none_or(|o| o.kind != ObjectKind::Commit), "{id} pruned");
    }
    verify_packs(&data);
    assert_eq!(pack_files(&data).len(), 3, "one pack, its index and bitmaps, nothing left over");

    // All of it durable.
    drop(s);
    let s = RocksStore::open(&data).expect("reopen");
    assert_all_readable(&s, &main);
    assert_eq!(pack_files(&data).len(), 3);
}

/// An object no ref reaches but that a kept delta is based on stays (in the main pack, which
/// is then whole on its own: the REF delta against another pack became an OFS delta).
#[test]
fn a_kept_delta_keeps_its_unreachable_base() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let s = RocksStore::open(&data).expect("open");
    let base_text = "a base nobody names any more\n".repeat(80);
    let kept_text = format!("{base_text}and one line more\n");
    let base = hash_object(ObjectKind::Blob, base_text.as_bytes()).expect("hash");
    let kept = hash_object(ObjectKind::Blob, kept_text.as_bytes()).expect("hash");
    let mut tree = b"100644 k.txt\0".to_vec();
    tree.extend_from_slice(kept.as_bytes());
    let tree_id = hash_object(ObjectKind::Tree, &tree).expect("hash");
    let commit = format!("tree {tree_id}\ncommitter C <c@x> 5 +0000\n\nm\n");
    let commit_id = hash_object(ObjectKind::Commit, commit.as_bytes()).expect("hash");

    let mut first = Vec::new();
    let mut w = gitstratum_git::pack::Writer::new(&mut first, 1).expect("pack");
    w.write_object(ObjectKind::Blob, base_text.as_bytes()).expect("write");
    w.finish().expect("finish");
    store_pack(&s, &first);
    let mut second = Vec::new();
    let mut w = gitstratum_git::pack::Writer::new(&mut second, 3).expect("pack");
    let delta = gitstratum_git::delta::encode(base_text.as_bytes(), kept_text.as_bytes());
    w.write_ref_delta(&base, &delta).expect("write");
    w.write_object(ObjectKind::Tree, &tree).expect("write");
    w.write_object(ObjectKind::Commit, commit.as_bytes()).expect("write");
    w.finish().expect("finish");
    store_pack(&s, &second);
    set_ref(&s, "refs/heads/main", Some(commit_id));

    for now in [T0, T0 + 2 * HOUR, T0 + 4 * HOUR] {
        let report = s.maintain(REPO, &full(now)).expect("full");
        assert_eq!((report.pruned, report.cruft, report.packs_after), (0, 0, 1), "{report:?}");
        assert_all_readable(&s, &[base, kept, tree_id, commit_id]);
        verify_packs(&data);
    }
}

/// Readers racing maintenance: every read finds its object, whether its location is read
/// before or after the pack holding it is replaced.
#[test]
fn readers_never_miss_an_object_while_packs_are_replaced() {
    let (_tmp, work, _data, s) = work_and_store();
    let s = Arc::new(s);
    let (main, side) = history(&work, &s);
    let everything: Vec<ObjectId> = main.iter().chain(&side).copied().collect();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (s, ids, done) = (s.clone(), everything.clone(), done.clone());
            std::thread::spawn(move || {
                let mut rounds = 0;
                while !done.load(std::sync::atomic::Ordering::SeqCst) || rounds == 0 {
                    for chunk in ids.chunks(7) {
                        assert_all_readable(&s, chunk);
                    }
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    for round in 0..6 {
        // A new small pack each round, then a roll-up or a full repack.
        let blob = format!("round {round}\n");
        let mut bytes = Vec::new();
        let mut w = gitstratum_git::pack::Writer::new(&mut bytes, 1).expect("pack");
        w.write_object(ObjectKind::Blob, blob.as_bytes()).expect("write");
        w.finish().expect("finish");
        store_pack(&s, &bytes);
        let what = Maintenance { full: round % 2 == 1, prune_grace_ms: HOUR, now_ms: T0 };
        s.maintain(REPO, &what).expect("maintain");
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for r in readers {
        assert!(r.join().expect("reader did not fail") > 0);
    }
    assert_all_readable(&s, &everything);
}

/// Objects stored whole (as the conversion from an earlier release leaves them) are deltified
/// by a full repack: the pack shrinks, every object reads back, and C git verifies the pack.
#[test]
fn a_full_repack_finds_deltas_for_whole_objects() {
    use gitstratum_store::NewObject;
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let s = RocksStore::open(&data).expect("open");
    let mut text: String = (0..400).map(|l| format!("line {l} of a file edited commit after commit\n")).collect();
    let mut parent: Option<ObjectId> = None;
    let mut ids = Vec::new();
    for i in 0..20 {
        text.push_str(&format!("edit {i}\n"));
        let blob = hash_object(ObjectKind::Blob, text.as_bytes()).expect("hash");
        let mut tree = b"100644 file.txt\0".to_vec();
        tree.extend_from_slice(blob.as_bytes());
        let tree_id = hash_object(ObjectKind::Tree, &tree).expect("hash");
        let mut commit = format!("tree {tree_id}\n");
        if let Some(p) = parent {
            commit.push_str(&format!("parent {p}\n"));
        }
        commit.push_str(&format!("committer C <c@x> {i} +0000\n\nc{i}\n"));
        let commit_id = hash_object(ObjectKind::Commit, commit.as_bytes()).expect("hash");
        s.put(
            REPO,
            &[
                NewObject { id: blob, kind: ObjectKind::Blob, data: text.clone().into_bytes() },
                NewObject { id: tree_id, kind: ObjectKind::Tree, data: tree },
                NewObject { id: commit_id, kind: ObjectKind::Commit, data: commit.into_bytes() },
            ],
        )
        .expect("put");
        ids.extend([blob, tree_id, commit_id]);
        parent = Some(commit_id);
    }
    set_ref(&s, "refs/heads/main", parent);
    let before = packed_bytes(&data);
    let report = s.maintain(REPO, &full(T0)).expect("full");
    assert!(report.deltas_found >= 18, "{report:?}");
    let after = packed_bytes(&data);
    assert!(after * 3 < before, "the pack shrank: {before} → {after} bytes");
    assert_all_readable(&s, &ids);
    verify_packs(&data);
    // Again: what is a delta now stays one, and reads the same.
    let report = s.maintain(REPO, &full(T0 + HOUR)).expect("full");
    assert_eq!(report.deltas_found, 0, "{report:?}");
    assert_all_readable(&s, &ids);
    verify_packs(&data);
}

/// A cruft pack whose objects became reachable again (the branch came back) is emptied into the
/// main pack and goes, rather than waiting out the grace period; a repack never starts while a
/// push is in flight (its objects would look unreachable until its refs move).
#[test]
fn a_cruft_pack_emptied_by_a_returning_branch_goes() {
    let (_tmp, work, data, s) = work_and_store();
    let (main, side) = history(&work, &s);
    let side_tip = s.get(REPO, "refs/heads/side").expect("get");
    set_ref(&s, "refs/heads/side", None);
    let pin = s.pin(REPO);
    let report = s.maintain(REPO, &full(T0)).expect("full");
    assert_eq!((report.packs_after, report.objects_written, report.cruft), (4, 0, 0), "{report:?}");
    drop(pin);
    let report = s.maintain(REPO, &full(T0)).expect("full");
    assert!(report.packs_after == 2 && report.cruft > 0, "{report:?}");
    set_ref(&s, "refs/heads/side", side_tip);
    let report = s.maintain(REPO, &full(T0)).expect("full");
    assert_eq!((report.packs_after, report.cruft), (1, 0), "{report:?}");
    let everything: Vec<ObjectId> = main.iter().chain(&side).copied().collect();
    assert_all_readable(&s, &everything);
    verify_packs(&data);
}

/// What `repo` holds of `ids` reads back as in `reference`: the same objects (hashing to their
/// ids), kinds and sizes, and (with `same_entries`, while neither side repacked them) the same
/// stored entries.
fn assert_same_objects(s: &RocksStore, repo: RepoId, reference: RepoId, ids: &[ObjectId], same_entries: bool) {
    for r in [repo, reference] {
        let got = s.get_many(r, ids).expect("get");
        for (id, object) in ids.iter().zip(&got) {
            let object = object.as_ref().unwrap_or_else(|| panic!("{id} is stored in {r:?}"));
            assert_eq!(hash_object(object.kind, &object.data).expect("hash"), *id);
        }
    }
    assert_eq!(s.info_many(repo, ids).expect("info"), s.info_many(reference, ids).expect("info"));
    let raw = |r| -> Vec<_> {
        s.raw_many(r, ids).expect("raw").into_iter().map(|e| e.map(|e| (e.kind, e.size, e.compressed))).collect()
    };
    let (mine, theirs) = (raw(repo), raw(reference));
    assert!(mine.iter().chain(&theirs).all(Option::is_some), "every entry is readable as stored");
    if same_entries {
        assert_eq!(mine, theirs, "stored entries");
    }
}

/// The store's reachability answer in `repo` for `revs` is `git rev-list --objects`'s.
fn assert_reach_in(s: &RocksStore, repo: RepoId, work: &Path, revs: &[&str]) {
    let mut args = vec!["rev-list", "--objects"];
    args.extend_from_slice(revs);
    let expected: HashSet<ObjectId> = git(work, &args).lines().map(|l| id(&l[..40])).collect();
    let tips: Vec<ObjectId> = revs.iter().map(|r| id(&git(work, &["rev-parse", r]))).collect();
    let got = s.reachable(repo, &tips, true).expect("reachable").expect("bitmaps");
    assert_eq!(got.iter().map(|(id, _)| *id).collect::<HashSet<_>>(), expected, "{revs:?} in {repo:?}");
}

fn inode(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.ino(), m.nlink())
}

/// A fork shares its parent's packs, their indexes and bitmaps: its object index stays empty,
/// its pack files are the parent's (hard links), every object reads back as the parent's, and
/// maintenance on either side never turns the shared bytes into two copies; the fork outlives
/// its parent and can be forked again.
#[test]
fn forks_share_packs_index_and_bitmaps_and_maintenance_keeps_them_shared() {
    const FORK: RepoId = RepoId(6);
    const GRANDFORK: RepoId = RepoId(7);
    let (_tmp, work, data, s) = work_and_store();
    let (main, side) = history(&work, &s);
    let everything: Vec<ObjectId> = main.iter().chain(&side).copied().collect();
    s.maintain(REPO, &full(T0)).expect("full");
    let parent_files = pack_files(&data);

    s.fork(REPO, FORK).expect("fork");
    for (name, target) in s.list(REPO).expect("refs") {
        set_ref_in(&s, FORK, &name, Some(target));
    }
    assert!(s.object_ids(FORK).expect("ids").is_empty(), "the fork's object index holds nothing");
    let dir = |repo: RepoId| data.join("packs").join(repo.0.to_string());
    for file in &parent_files {
        let linked = dir(FORK).join(file.file_name().expect("name"));
        assert_eq!(inode(&linked).0, inode(file).0, "{} is the parent's file", linked.display());
    }
    assert_same_objects(&s, FORK, REPO, &everything, true);
    assert_eq!(s.stats(FORK).expect("stats"), s.stats(REPO).expect("stats"));
    // The bitmaps came along: the fork's reachability answers from them.
    assert_reach_in(&s, FORK, &work, &["main", "side"]);

    // Both sides move on; maintenance runs on both.
    git(&work, &["checkout", "-q", "main"]);
    std::fs::write(work.join("parent.txt"), "parent\n").expect("write");
    let edited = std::fs::read_to_string(work.join("f.txt")).expect("read") + "one more line\n";
    std::fs::write(work.join("f.txt"), edited).expect("write");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "parent"]);
    // A thin pack: the edited file a delta against the shared copy of the old one.
    let thin = git_in(&work, &["pack-objects", "--revs", "--thin", "--stdout", "-q"], Some(b"main\n^main~1\n"));
    store_pack(&s, &thin);
    set_ref(&s, "refs/heads/main", Some(id(&git(&work, &["rev-parse", "main"]))));
    // What the parent holds outside its shared packs, with the delta bases it needs: the new
    // commit's objects, and the old file and trees they were deltified against (cluster
    // compaction writes this set).
    let shared_checksums: HashSet<ObjectId> = parent_files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .map(|p| id(&p.file_stem().and_then(|n| n.to_str()).expect("name")["pack-".len()..]))
        .collect();
    let outside: HashSet<ObjectId> = s.object_ids_outside(REPO, &shared_checksums).expect("ids").into_iter().collect();
    let new_objects: HashSet<ObjectId> =
        git(&work, &["rev-list", "--objects", "main", "^main~1"]).lines().map(|l| id(&l[..40])).collect();
    let old_file = id(&git(&work, &["rev-parse", "main~1:f.txt"]));
    assert!(outside.contains(&old_file), "the delta base comes along");
    let previous: HashSet<ObjectId> =
        git(&work, &["rev-list", "--objects", "-n", "1", "main~1"]).lines().map(|l| id(&l[..40])).collect();
    assert!(new_objects.is_subset(&outside));
    assert!(outside.difference(&new_objects).all(|b| previous.contains(b)), "only bases from before");
    git(&work, &["checkout", "-q", "-b", "feature", "main~1"]);
    std::fs::write(work.join("fork.txt"), "fork\n").expect("write");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "fork"]);
    store_pack_in(&s, FORK, &git_pack(&work, "feature\n^feature~1"));
    set_ref_in(&s, FORK, "refs/heads/feature", Some(id(&git(&work, &["rev-parse", "feature"]))));
    let (parent_new, fork_new) =
        (id(&git(&work, &["rev-parse", "main:parent.txt"])), id(&git(&work, &["rev-parse", "feature:fork.txt"])));
    assert_eq!(s.has_many(FORK, &[parent_new, fork_new]).expect("has"), [false, true]);
    assert_eq!(s.has_many(REPO, &[parent_new, fork_new]).expect("has"), [true, false]);
    // The parent gets the side branch again (copies of shared objects in a pack of its own, some
    // whole where the shared pack holds deltas) and drops it: the prune that follows must leave
    // what the shared packs hold readable.
    let side_tip = s.get(REPO, "refs/heads/side").expect("get");
    store_pack(&s, &git_pack(&work, "side"));
    set_ref(&s, "refs/heads/side", None);
    for repo in [REPO, FORK] {
        s.maintain(repo, &Maintenance { full: false, prune_grace_ms: HOUR, now_ms: T0 + HOUR }).expect("roll up");
        s.maintain(repo, &full(T0 + HOUR)).expect("full");
        s.maintain(repo, &full(T0 + 3 * HOUR)).expect("full, past the grace period");
    }
    for file in &parent_files {
        let (ino, links) = inode(file);
        assert_eq!(links, 2, "{} is still shared", file.display());
        assert_eq!(inode(&dir(FORK).join(file.file_name().expect("name"))).0, ino);
    }
    assert_same_objects(&s, FORK, REPO, &everything, false);
    assert_reach_in(&s, FORK, &work, &["main~1", "side", "feature"]);
    assert_reach_in(&s, REPO, &work, &["main", "side"]);
    set_ref(&s, "refs/heads/side", side_tip);

    // A fork of the fork holds both what the fork inherited and what it got since.
    s.fork(FORK, GRANDFORK).expect("fork the fork");
    let mut with_fork_new = everything.clone();
    with_fork_new.push(fork_new);
    assert_same_objects(&s, GRANDFORK, FORK, &with_fork_new, true);
    assert!(s.object_ids(GRANDFORK).expect("ids").is_empty());

    // Deleting the parent leaves the forks whole; maintenance of a fork then keeps it whole.
    ObjectStore::delete_repo(&s, REPO).expect("delete");
    RefStore::delete_repo(&s, REPO).expect("delete");
    assert!(!dir(REPO).exists());
    for repo in [FORK, GRANDFORK] {
        let got = s.get_many(repo, &with_fork_new).expect("get");
        assert!(got.iter().all(Option::is_some), "{repo:?} outlives the parent");
    }
    s.maintain(FORK, &full(T0 + 10 * HOUR)).expect("full");
    assert_reach_in(&s, FORK, &work, &["main~1", "side", "feature"]);
    drop(s);
    // And after a restart (the tables of inherited packs are read again).
    let s = RocksStore::open(&data).expect("reopen");
    assert_reach_in(&s, GRANDFORK, &work, &["main~1", "side", "feature"]);
    let got = s.get_many(GRANDFORK, &with_fork_new).expect("get");
    for (id, object) in with_fork_new.iter().zip(got) {
        let object = object.unwrap_or_else(|| panic!("{id} after a restart"));
        assert_eq!(hash_object(object.kind, &object.data).expect("hash"), *id);
    }
}

/// A full repack stores the default branch's tip so a depth=1 clone copies it: C git's pack
/// makes the tip's files deltas against their older (larger) versions, the repack writes them
/// whole (or as deltas within the tip) and turns the old versions into deltas against them, so
/// the pack stays about its size; every object reads back and C git verifies the pack.
#[test]
fn a_full_repack_stores_the_default_branchs_tip_whole() {
    use gitstratum_store::RawKind;
    let (_tmp, work, data, s) = work_and_store();
    git(&work, &["init", "-q", "-b", "main"]);
    // Files that shrink commit after commit: git's delta search (largest first) makes the
    // newest versions deltas against the oldest.
    let mut lines: Vec<usize> = (0..400).collect();
    for i in 0..12 {
        lines.remove(i * 7 % lines.len());
        for (f, seed) in [("a.txt", 7919u64), ("dir/b.txt", 104_729), ("dir/deeper/c.txt", 1_299_709)] {
            let path = work.join(f);
            std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
            // Lines of each file its own (no delta between files is worth it).
            let text: String = lines
                .iter()
                .map(|l| format!("{} {}\n", (*l as u64 + 1) * seed % 1_000_003, *l as u64 * seed))
                .collect();
            std::fs::write(&path, text).expect("write");
        }
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", &format!("c{i}")]);
    }
    git(&work, &["branch", "old", "HEAD~6"]);
    let pack = git_pack(&work, "main");
    store_pack(&s, &pack);
    set_ref(&s, "refs/heads/main", Some(id(&git(&work, &["rev-parse", "main"]))));
    set_ref(&s, "refs/heads/old", Some(id(&git(&work, &["rev-parse", "old"]))));
    s.set_head(REPO, "refs/heads/main").expect("head");
    let tip_of = |rev: &str| -> HashSet<ObjectId> {
        git(&work, &["ls-tree", "-r", "-t", "--format=%(objectname)", rev])
            .lines()
            .map(id)
            .chain([id(&git(&work, &["rev-parse", rev])), id(&git(&work, &["rev-parse", &format!("{rev}^{{tree}}")]))])
            .collect()
    };
    // How many objects of `tip` are deltas against objects outside it.
    let outside = |s: &RocksStore, tip: &HashSet<ObjectId>| -> usize {
        let ids: Vec<ObjectId> = tip.iter().copied().collect();
        s.raw_many(REPO, &ids)
            .expect("raw")
            .into_iter()
            .filter(|r| matches!(r.as_ref().expect("stored").kind, RawKind::Delta { base } if !tip.contains(&base)))
            .count()
    };
    let tip = tip_of("main");
    assert!(outside(&s, &tip) >= 3, "C git's pack makes the tip's files deltas against older versions");
    let all: Vec<ObjectId> = git(&work, &["rev-list", "--objects", "--all"]).lines().map(|l| id(&l[..40])).collect();
    let before = packed_bytes(&data);
    let report = s.maintain(REPO, &full(T0)).expect("full");
    assert!(report.tip_whole >= 3 && report.tip_reversed >= 3, "{report:?}");
    assert_eq!(outside(&s, &tip), 0, "every tip object is whole or a delta within the tip");
    let after = packed_bytes(&data);
    assert!(after * 10 <= before * 11, "the pack stays about its size: {before} → {after} bytes");
    assert_all_readable(&s, &all);
    verify_packs(&data);
    assert_reach(&s, &work, &["main", "old"]);
    // Again: nothing left to change, and a new tip is taken care of the same way.
    let report = s.maintain(REPO, &full(T0 + HOUR)).expect("full");
    assert_eq!((report.tip_whole, report.tip_reversed), (0, 0), "{report:?}");
    set_ref(&s, "refs/heads/main", Some(id(&git(&work, &["rev-parse", "old"]))));
    s.set_head(REPO, "refs/heads/old").expect("head");
    assert!(outside(&s, &tip_of("old")) > 0, "the old branch's tip is made of deltas against the main's");
    let report = s.maintain(REPO, &full(T0 + 2 * HOUR)).expect("full");
    assert!(report.tip_whole > 0, "{report:?}");
    assert_eq!(outside(&s, &tip_of("old")), 0, "{report:?}");
    assert_all_readable(&s, &all);
    verify_packs(&data);
}
