//! One suite, every implementation: `MemStore`, `RocksStore`, and cluster mode's pair
//! (`ClusterStore` for objects over a local RocksDB cache and shared blob storage, `PgRefStore` for
//! refs, both on PostgreSQL) must behave the same.

use std::sync::Arc;

use gitstratum_git::packfile;
use gitstratum_git::{ObjectId, ObjectKind, hash_object};
use gitstratum_store::mem::MemStore;
use gitstratum_store::rocks::RocksStore;
use gitstratum_store::{Actor, IncomingPack, NewObject, ObjectStore, RawKind, RefStore, RefUpdate, RepoId};

trait Store: ObjectStore + RefStore {}
impl<T: ObjectStore + RefStore> Store for T {}

const A: RepoId = RepoId(1);
const B: RepoId = RepoId(2);

fn blob(text: &str) -> NewObject {
    NewObject {
        id: hash_object(ObjectKind::Blob, text.as_bytes()).expect("hash"),
        kind: ObjectKind::Blob,
        data: text.as_bytes().to_vec(),
    }
}

fn actor() -> Actor {
    Actor { name: "octo".into(), time_ms: 1_700_000_000_000 }
}

fn set(name: &str, old: Option<ObjectId>, new: Option<ObjectId>) -> RefUpdate {
    RefUpdate { name: name.into(), old, new }
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod mem {
            $(#[test]
            fn $case() {
                super::$case(std::sync::Arc::new(gitstratum_store::mem::MemStore::new()));
            })*
        }
        mod rocks {
            $(#[test]
            fn $case() {
                let dir = tempfile::tempdir().expect("temp dir");
                super::$case(std::sync::Arc::new(gitstratum_store::rocks::RocksStore::open(dir.path()).expect("open")));
            })*
        }
        mod cluster {
            $(#[test]
            fn $case() {
                let Some(pg) = gitstratum_store::testing::TestPg::new() else { return };
                let dir = tempfile::tempdir().expect("temp dir");
                super::$case(std::sync::Arc::new(super::Cluster::open(&pg, dir.path())));
                pg.passed();
            })*
        }
    };
}

/// Cluster mode's two stores as one, the way a frontend holds them (blobs on the filesystem
/// here; `tests/cluster.rs` puts them in Garage).
struct Cluster {
    objects: gitstratum_store::cluster::ClusterStore,
    refs: Arc<gitstratum_store::pg::PgRefStore>,
}

impl Cluster {
    fn open(pg: &gitstratum_store::testing::TestPg, dir: &std::path::Path) -> Cluster {
        let refs = Arc::new(pg.refs());
        let local = Arc::new(RocksStore::open(&dir.join("git")).expect("open the local cache"));
        let blobs = gitstratum_store::blob::FsBlobStore::open(dir.join("blobs")).expect("blob store");
        let objects =
            gitstratum_store::cluster::ClusterStore::new(local, refs.clone(), Arc::new(blobs), &dir.join("cluster"))
                .expect("cluster store");
        Cluster { objects, refs }
    }
}

impl ObjectStore for Cluster {
    fn put(&self, repo: RepoId, objects: &[NewObject]) -> gitstratum_store::Result<()> {
        self.objects.put(repo, objects)
    }
    fn incoming_dir(&self) -> &std::path::Path {
        self.objects.incoming_dir()
    }
    fn put_pack(&self, repo: RepoId, pack: IncomingPack<'_>) -> gitstratum_store::Result<()> {
        self.objects.put_pack(repo, pack)
    }
    fn get_many(
        &self,
        repo: RepoId,
        ids: &[ObjectId],
    ) -> gitstratum_store::Result<Vec<Option<gitstratum_store::Object>>> {
        self.objects.get_many(repo, ids)
    }
    fn info_many(
        &self,
        repo: RepoId,
        ids: &[ObjectId],
    ) -> gitstratum_store::Result<Vec<Option<gitstratum_store::ObjectInfo>>> {
        self.objects.info_many(repo, ids)
    }
    fn commits(
        &self,
        repo: RepoId,
        ids: &[ObjectId],
    ) -> gitstratum_store::Result<Vec<Option<gitstratum_store::CommitInfo>>> {
        self.objects.commits(repo, ids)
    }
    fn stats(&self, repo: RepoId) -> gitstratum_store::Result<gitstratum_store::RepoStats> {
        self.objects.stats(repo)
    }
    fn raw_many(
        &self,
        repo: RepoId,
        ids: &[ObjectId],
    ) -> gitstratum_store::Result<Vec<Option<gitstratum_store::RawEntry>>> {
        self.objects.raw_many(repo, ids)
    }
    fn delete_repo(&self, repo: RepoId) -> gitstratum_store::Result<()> {
        ObjectStore::delete_repo(&self.objects, repo)
    }
    fn fork(&self, from: RepoId, to: RepoId) -> gitstratum_store::Result<()> {
        self.objects.fork(from, to)
    }
}

impl RefStore for Cluster {
    fn list(&self, repo: RepoId) -> gitstratum_store::Result<Vec<(String, ObjectId)>> {
        self.refs.list(repo)
    }
    fn get(&self, repo: RepoId, name: &str) -> gitstratum_store::Result<Option<ObjectId>> {
        self.refs.get(repo, name)
    }
    fn update(
        &self,
        repo: RepoId,
        updates: &[RefUpdate],
        actor: &Actor,
    ) -> gitstratum_store::Result<Result<Vec<gitstratum_store::RefEvent>, gitstratum_store::Conflict>> {
        self.refs.update(repo, updates, actor)
    }
    fn update_each(
        &self,
        repo: RepoId,
        updates: &[RefUpdate],
        actor: &Actor,
    ) -> gitstratum_store::Result<Vec<Result<gitstratum_store::RefEvent, gitstratum_store::Conflict>>> {
        self.refs.update_each(repo, updates, actor)
    }
    fn head(&self, repo: RepoId) -> gitstratum_store::Result<Option<String>> {
        self.refs.head(repo)
    }
    fn set_head(&self, repo: RepoId, target: &str) -> gitstratum_store::Result<()> {
        self.refs.set_head(repo, target)
    }
    fn events_after(&self, after: u64, limit: usize) -> gitstratum_store::Result<Vec<gitstratum_store::RefEvent>> {
        self.refs.events_after(after, limit)
    }
    fn delete_repo(&self, repo: RepoId) -> gitstratum_store::Result<()> {
        RefStore::delete_repo(&*self.refs, repo)
    }
}

suite!(
    objects_round_trip_per_repository,
    packs_are_stored_as_pushed,
    refs_compare_and_swap,
    batches_are_all_or_nothing,
    events_record_every_change,
    racing_updates_have_one_winner,
    head_and_deletion,
    index_graph_and_counters,
    refs_never_clash_as_file_and_directory,
    independent_updates_apply_each_that_can,
    forks_hold_their_parents_objects_and_outlive_it
);

/// A fork holds every object of its parent (whole, raw, in the commit graph, counted), stores
/// what it gets later apart from the parent, and keeps everything when the parent is deleted.
fn forks_hold_their_parents_objects_and_outlive_it(s: Arc<impl Store>) {
    const FORK: RepoId = RepoId(3);
    let tree =
        NewObject { id: hash_object(ObjectKind::Tree, b"").expect("hash"), kind: ObjectKind::Tree, data: vec![] };
    let root = commit(tree.id, &[], 1_000);
    let next = commit(tree.id, &[root.id], 2_000);
    let (x, y) = (blob("x\n"), blob(&"y\n".repeat(10_000)));
    // Two writes: two packs where the store keeps packs.
    s.put(A, &[tree.clone(), root.clone(), x.clone()]).expect("put");
    s.put(A, &[next.clone(), y.clone()]).expect("put");
    s.fork(A, FORK).expect("fork");
    let all = [tree.id, root.id, x.id, next.id, y.id];
    let read = s.get_many(FORK, &all).expect("get");
    assert!(read.iter().all(Option::is_some), "a fork reads every object of its parent");
    assert_eq!(read[4].as_ref().map(|o| o.data.len()), Some(y.data.len()));
    assert!(s.raw_many(FORK, &all).expect("raw").iter().all(Option::is_some));
    let graph = s.commits(FORK, &[next.id]).expect("commits");
    assert_eq!(graph[0].as_ref().map(|c| (c.parents.clone(), c.generation)), Some((vec![root.id], 2)));
    assert_eq!(s.stats(FORK).expect("stats"), s.stats(A).expect("stats"));

    // Each side's later objects stay its own.
    let (parent_only, fork_only) = (blob("parent later\n"), blob("fork later\n"));
    s.put(A, std::slice::from_ref(&parent_only)).expect("put");
    s.put(FORK, std::slice::from_ref(&fork_only)).expect("put");
    assert_eq!(s.has_many(FORK, &[parent_only.id, fork_only.id]).expect("has"), [false, true]);
    assert_eq!(s.has_many(A, &[parent_only.id, fork_only.id]).expect("has"), [true, false]);

    // Deleting the parent breaks nothing of the fork.
    ObjectStore::delete_repo(&*s, A).expect("delete");
    assert!(s.has_many(A, &all).expect("has").iter().all(|h| !h));
    let read = s.get_many(FORK, &all).expect("get");
    assert!(read.iter().all(Option::is_some), "the fork outlives its parent");
    assert_eq!(read[2].as_ref().map(|o| o.data.clone()), Some(b"x\n".to_vec()));
    assert!(s.raw_many(FORK, &all).expect("raw").iter().all(Option::is_some));
}

fn objects_round_trip_per_repository(s: Arc<impl Store>) {
    let (x, y) = (blob("x\n"), blob("y\n"));
    s.put(A, &[x.clone(), y.clone()]).expect("put");
    s.put(A, std::slice::from_ref(&x)).expect("idempotent");
    let got = s.get_many(A, &[y.id, x.id, blob("z").id]).expect("get");
    assert_eq!(got[0].as_ref().map(|o| (o.kind, o.data.clone())), Some((ObjectKind::Blob, b"y\n".to_vec())));
    assert_eq!(got[1].as_ref().map(|o| o.data.clone()), Some(b"x\n".to_vec()));
    assert!(got[2].is_none());
    assert_eq!(s.has_many(A, &[x.id, blob("z").id]).expect("has"), [true, false]);
    // Another repository does not see A's objects.
    assert_eq!(s.has_many(B, &[x.id]).expect("has"), [false]);
    let big = blob(&"large content ".repeat(100_000));
    s.put(B, std::slice::from_ref(&big)).expect("put");
    assert_eq!(s.get_many(B, &[big.id]).expect("get")[0].as_ref().map(|o| o.data.len()), Some(big.data.len()));
    ObjectStore::delete_repo(&*s, A).expect("delete");
    assert_eq!(s.has_many(A, &[x.id, y.id]).expect("has"), [false, false]);
    assert_eq!(s.has_many(B, &[big.id]).expect("has"), [true], "other repositories are untouched");
}

fn commit(tree: ObjectId, parents: &[ObjectId], time: i64) -> NewObject {
    let mut text = format!("tree {tree}\n");
    for p in parents {
        text.push_str(&format!("parent {p}\n"));
    }
    text.push_str(&format!("author A <a@x> {time} +0000\ncommitter C <c@x> {time} +0200\n\nmessage\n"));
    NewObject {
        id: hash_object(ObjectKind::Commit, text.as_bytes()).expect("hash"),
        kind: ObjectKind::Commit,
        data: text.into_bytes(),
    }
}

fn index_graph_and_counters(s: Arc<impl Store>) {
    let tree =
        NewObject { id: hash_object(ObjectKind::Tree, b"").expect("hash"), kind: ObjectKind::Tree, data: vec![] };
    let root = commit(tree.id, &[], 1_000);
    let left = commit(tree.id, &[root.id], 2_000);
    let right = commit(tree.id, &[root.id], 2_001);
    let merge = commit(tree.id, &[left.id, right.id], 3_000);
    // Children before parents in one batch; the merge in a later batch.
    s.put(A, &[right.clone(), left.clone(), tree.clone(), root.clone()]).expect("put");
    s.put(A, std::slice::from_ref(&merge)).expect("put");
    let got = s.commits(A, &[merge.id, root.id, tree.id, blob("none").id]).expect("commits");
    let m = got[0].as_ref().expect("merge is in the graph");
    assert_eq!((m.tree, m.parents.clone(), m.time, m.generation), (tree.id, vec![left.id, right.id], 3_000, 3));
    assert_eq!(got[1].as_ref().map(|c| (c.generation, c.parents.len())), Some((1, 0)));
    assert!(got[2].is_none() && got[3].is_none(), "trees and unknown ids are not commits");
    assert!(s.commits(B, &[merge.id]).expect("commits")[0].is_none(), "per repository");

    let info = s.info_many(A, &[left.id, tree.id, blob("none").id]).expect("info");
    assert_eq!(info[0].map(|i| (i.kind, i.size)), Some((ObjectKind::Commit, left.data.len() as u64)));
    assert_eq!(info[1].map(|i| (i.kind, i.size)), Some((ObjectKind::Tree, 0)));
    assert_eq!(info[2], None);

    let bytes: u64 = [&root, &left, &right, &merge, &tree].iter().map(|o| o.data.len() as u64).sum();
    let stats = s.stats(A).expect("stats");
    assert_eq!((stats.objects, stats.bytes), (5, bytes));
    // Storing again counts nothing twice, duplicates within a batch neither.
    s.put(A, &[merge.clone(), root.clone(), blob("new"), blob("new")]).expect("put");
    assert_eq!(s.stats(A).expect("stats").objects, 6);
    assert_eq!(s.stats(B).expect("stats").objects, 0);
    ObjectStore::delete_repo(&*s, A).expect("delete");
    assert_eq!(s.stats(A).expect("stats").objects, 0);
    assert!(s.commits(A, &[merge.id]).expect("commits")[0].is_none());
}

/// A pushed pack (a whole object, an OFS delta and a REF delta against it) is stored: every
/// object reads back, and each raw entry inflates to the object (applied to its base if it is a
/// delta). Storing the same pack again changes nothing.
fn packs_are_stored_as_pushed(s: Arc<impl Store>) {
    use std::io::Read;
    let base = "shared line\n".repeat(40);
    let one = format!("{base}one\n");
    let two = format!("{base}two\n");
    let mut bytes = Vec::new();
    let mut w = gitstratum_git::pack::Writer::new(&mut bytes, 3).expect("pack");
    let at = w.write_object(ObjectKind::Blob, base.as_bytes()).expect("write");
    w.write_ofs_delta(at, &gitstratum_git::delta::encode(base.as_bytes(), one.as_bytes())).expect("write");
    w.write_ref_delta(&blob(&base).id, &gitstratum_git::delta::encode(base.as_bytes(), two.as_bytes())).expect("write");
    w.finish().expect("finish");
    for _ in 0..2 {
        let spooled = tempfile::NamedTempFile::new_in(s.incoming_dir()).expect("spool");
        let scan = packfile::scan(bytes.as_slice(), spooled.as_file(), 1 << 20).expect("scan");
        let file = std::fs::File::open(spooled.path()).expect("open");
        let resolved = packfile::resolve(&file, &scan, &|_| None, 1 << 20, &mut |_, _, _| Ok(())).expect("resolve");
        let pack =
            IncomingPack { path: spooled.path(), checksum: scan.checksum, entries: &resolved.entries, commits: &[] };
        s.put_pack(A, pack).expect("put_pack");
    }
    assert_eq!(s.stats(A).expect("stats").objects, 3);
    let ids = [blob(&one).id, blob(&two).id, blob(&base).id];
    let got = s.get_many(A, &ids).expect("get");
    for (object, text) in got.iter().zip([&one, &two, &base]) {
        assert_eq!(object.as_ref().map(|o| o.data.as_slice()), Some(text.as_bytes()));
    }
    for (raw, text) in s.raw_many(A, &ids).expect("raw").into_iter().zip([&one, &two, &base]) {
        let raw = raw.expect("stored");
        let mut data = Vec::new();
        flate2::read::ZlibDecoder::new(raw.compressed.as_slice()).read_to_end(&mut data).expect("inflate");
        assert_eq!(data.len() as u64, raw.size);
        let object = match raw.kind {
            RawKind::Whole(kind) => {
                assert_eq!(kind, ObjectKind::Blob);
                data
            }
            RawKind::Delta { base: b } => {
                assert_eq!(b, blob(&base).id);
                gitstratum_git::delta::apply(base.as_bytes(), &data).expect("apply")
            }
        };
        assert_eq!(object, text.as_bytes());
    }
    assert!(s.raw_many(B, &ids).expect("raw").iter().all(Option::is_none), "per repository");
}

fn refs_compare_and_swap(s: Arc<impl Store>) {
    let (one, two) = (blob("1").id, blob("2").id);
    assert!(s.update(A, &[set("refs/heads/main", None, Some(one))], &actor()).expect("io").is_ok());
    // Creating again must fail: the ref exists now.
    let conflict = s.update(A, &[set("refs/heads/main", None, Some(two))], &actor()).expect("io").expect_err("exists");
    assert_eq!(conflict.name, "refs/heads/main");
    // A stale old value fails; the right one succeeds.
    assert!(s.update(A, &[set("refs/heads/main", Some(two), Some(one))], &actor()).expect("io").is_err());
    assert!(s.update(A, &[set("refs/heads/main", Some(one), Some(two))], &actor()).expect("io").is_ok());
    assert_eq!(s.get(A, "refs/heads/main").expect("get"), Some(two));
    assert_eq!(s.get(B, "refs/heads/main").expect("get"), None);
    s.update(A, &[set("refs/tags/v1", None, Some(one)), set("refs/heads/dev", None, Some(one))], &actor())
        .expect("io")
        .expect("ok");
    let names: Vec<String> = s.list(A).expect("list").into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["refs/heads/dev", "refs/heads/main", "refs/tags/v1"]);
    s.update(A, &[set("refs/heads/dev", Some(one), None)], &actor()).expect("io").expect("deleted");
    assert_eq!(s.get(A, "refs/heads/dev").expect("get"), None);
}

fn batches_are_all_or_nothing(s: Arc<impl Store>) {
    let (one, two) = (blob("1").id, blob("2").id);
    s.update(A, &[set("refs/heads/a", None, Some(one))], &actor()).expect("io").expect("ok");
    let before = s.events_after(0, 100).expect("events").len();
    // The second update's expectation is wrong: nothing may change.
    let result = s
        .update(A, &[set("refs/heads/b", None, Some(two)), set("refs/heads/a", Some(two), Some(two))], &actor())
        .expect("io");
    assert_eq!(result.expect_err("conflict").name, "refs/heads/a");
    assert_eq!(s.get(A, "refs/heads/b").expect("get"), None);
    assert_eq!(s.events_after(0, 100).expect("events").len(), before, "no events for a failed batch");
}

/// `a` and `a/b` cannot both exist (clients keep refs as files); the batch that would make them is
/// refused whole, naming the ref. A deletion in the same batch makes room.
fn refs_never_clash_as_file_and_directory(s: Arc<impl Store>) {
    let one = blob("1").id;
    s.update(A, &[set("refs/heads/a", None, Some(one))], &actor()).expect("io").expect("ok");
    for batch in [
        vec![set("refs/heads/a/b", None, Some(one))],
        vec![set("refs/heads/c", None, Some(one)), set("refs/heads/c/d/e", None, Some(one))],
        vec![set("refs/heads/x", None, Some(one)), set("refs", None, Some(one))],
    ] {
        let clash = s.update(A, &batch, &actor()).expect("io").expect_err("clash");
        assert_eq!(clash.name, batch.last().expect("update").name);
        assert_eq!(s.get(A, "refs/heads/c").expect("get"), None, "nothing of the batch applies");
    }
    // Another repository is another namespace; a deletion makes room.
    s.update(B, &[set("refs/heads/a/b", None, Some(one))], &actor()).expect("io").expect("other repository");
    let swap = [set("refs/heads/a", Some(one), None), set("refs/heads/a/b", None, Some(one))];
    s.update(A, &swap, &actor()).expect("io").expect("the deletion makes room");
    assert_eq!(s.list(A).expect("list"), vec![("refs/heads/a/b".to_owned(), one)]);
}

fn events_record_every_change(s: Arc<impl Store>) {
    let (one, two) = (blob("1").id, blob("2").id);
    s.update(A, &[set("refs/heads/main", None, Some(one))], &actor()).expect("io").expect("ok");
    s.update(B, &[set("refs/heads/x", None, Some(two))], &actor()).expect("io").expect("ok");
    s.update(A, &[set("refs/heads/main", Some(one), Some(two)), set("refs/tags/t", None, Some(one))], &actor())
        .expect("io")
        .expect("ok");
    let events = s.events_after(0, 100).expect("events");
    assert_eq!(events.len(), 4);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq), "sequence increases");
    assert_eq!((events[0].repo, events[0].old, events[0].new), (A, None, Some(one)));
    assert_eq!((events[2].name.as_str(), events[2].old, events[2].new), ("refs/heads/main", Some(one), Some(two)));
    assert_eq!((events[2].pusher.as_str(), events[2].time_ms), ("octo", 1_700_000_000_000));
    let tail = s.events_after(events[1].seq, 1).expect("events");
    assert_eq!(tail, vec![events[2].clone()]);
}

fn racing_updates_have_one_winner(s: Arc<impl Store>) {
    let start = blob("start").id;
    s.update(A, &[set("refs/heads/main", None, Some(start))], &actor()).expect("io").expect("ok");
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let new = blob(&format!("contender {i}")).id;
                s.update(A, &[set("refs/heads/main", Some(start), Some(new))], &actor()).expect("io").is_ok()
            })
        })
        .collect();
    let winners = handles.into_iter().map(|h| h.join().expect("thread")).filter(|won| *won).count();
    assert_eq!(winners, 1);
}

fn head_and_deletion(s: Arc<impl Store>) {
    assert_eq!(s.head(A).expect("head"), None);
    s.set_head(A, "refs/heads/main").expect("set");
    assert_eq!(s.head(A).expect("head").as_deref(), Some("refs/heads/main"));
    s.update(A, &[set("refs/heads/main", None, Some(blob("1").id))], &actor()).expect("io").expect("ok");
    RefStore::delete_repo(&*s, A).expect("delete");
    assert_eq!(s.head(A).expect("head"), None);
    assert!(s.list(A).expect("list").is_empty());
    assert_eq!(s.events_after(0, 10).expect("events").len(), 1, "history stays");
}

#[test]
fn rocks_state_survives_reopening() {
    let dir = tempfile::tempdir().expect("temp dir");
    let x = blob("durable\n");
    {
        let s = RocksStore::open(dir.path()).expect("open");
        s.put(A, std::slice::from_ref(&x)).expect("put");
        s.update(A, &[set("refs/heads/main", None, Some(x.id))], &actor()).expect("io").expect("ok");
        s.set_head(A, "refs/heads/main").expect("head");
    }
    let s = RocksStore::open(dir.path()).expect("reopen");
    assert_eq!(s.get(A, "refs/heads/main").expect("get"), Some(x.id));
    assert_eq!(s.head(A).expect("head").as_deref(), Some("refs/heads/main"));
    assert!(s.has_many(A, &[x.id]).expect("has")[0]);
    // The event sequence continues where it stopped.
    s.update(A, &[set("refs/heads/main", Some(x.id), None)], &actor()).expect("io").expect("ok");
    let seqs: Vec<u64> = s.events_after(0, 10).expect("events").iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2]);
}

#[test]
fn mem_store_is_usable_through_trait_objects() {
    let s: Arc<dyn ObjectStore> = Arc::new(MemStore::new());
    s.put(A, &[blob("x")]).expect("put");
}

/// `update_each` (a non-atomic push): every update that can apply does, the rest are skipped,
/// each judged after the ones before it; events only for those applied.
fn independent_updates_apply_each_that_can(s: Arc<impl Store>) {
    let (one, two) = (blob("1").id, blob("2").id);
    s.update(A, &[set("refs/heads/a", None, Some(one)), set("refs/heads/x", None, Some(one))], &actor())
        .expect("io")
        .expect("ok");
    let before = s.events_after(0, 100).expect("events").len();
    let results = s
        .update_each(
            A,
            &[
                set("refs/heads/a", Some(two), Some(one)), // stale: skipped
                set("refs/heads/b", None, Some(one)),      // applies
                set("refs/heads/a/c", None, Some(one)),    // clashes with refs/heads/a: skipped
                set("refs/heads/x", Some(one), None),      // applies (a deletion)
                set("refs/heads/x/y", None, Some(two)),    // applies: x is gone by now
                set("refs/heads/b", Some(one), Some(two)), // applies, after b's creation
            ],
            &actor(),
        )
        .expect("io");
    let applied: Vec<bool> = results.iter().map(Result::is_ok).collect();
    assert_eq!(applied, [false, true, false, true, true, true]);
    assert_eq!(results[2].as_ref().expect_err("clash").name, "refs/heads/a/c");
    let names: Vec<(String, ObjectId)> = s.list(A).expect("list");
    assert_eq!(
        names,
        [("refs/heads/a".to_owned(), one), ("refs/heads/b".to_owned(), two), ("refs/heads/x/y".to_owned(), two)]
    );
    let events = s.events_after(0, 100).expect("events");
    assert_eq!(events.len(), before + 4);
    let seqs: Vec<u64> = results.iter().filter_map(|r| r.as_ref().ok().map(|e| e.seq)).collect();
    assert_eq!(seqs, events[before..].iter().map(|e| e.seq).collect::<Vec<_>>());
    assert!(s.update_each(B, &[], &actor()).expect("io").is_empty());
}
