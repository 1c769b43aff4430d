//! Cluster mode's storage with several frontends: each its own local cache, all on one
//! PostgreSQL schema and one object store — a real three-node Garage cluster (replication factor
//! 3) started by `scripts/garage.sh`, or (for the cases about refs alone) nothing but PostgreSQL.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gitstratum_git::{ObjectId, ObjectKind, hash_object};
use gitstratum_store::blob::BlobStore;
use gitstratum_store::blob::s3::S3BlobStore;
use gitstratum_store::bridge::Bridge;
use gitstratum_store::cluster::ClusterStore;
use gitstratum_store::pg::PgRefStore;
use gitstratum_store::rocks::RocksStore;
use gitstratum_store::testing::{Garage, PgNodes, TestPg};
use gitstratum_store::{Actor, NewObject, ObjectStore, RefStore, RefUpdate, RepoId};

const REPO: RepoId = RepoId(7);

/// Counts the packs a frontend downloads.
struct Counting {
    inner: Arc<dyn BlobStore>,
    opened: AtomicUsize,
}

impl BlobStore for Counting {
    fn staging_dir(&self) -> &Path {
        self.inner.staging_dir()
    }
    fn commit(&self, staged: &Path, key: &str) -> std::io::Result<()> {
        self.inner.commit(staged, key)
    }
    fn open(&self, key: &str) -> std::io::Result<Box<dyn Read + Send>> {
        self.opened.fetch_add(1, Ordering::SeqCst);
        self.inner.open(key)
    }
    fn delete(&self, key: &str) -> std::io::Result<()> {
        self.inner.delete(key)
    }
    fn list(&self, kind: &str) -> std::io::Result<Vec<(String, std::time::SystemTime)>> {
        self.inner.list(kind)
    }
}

struct Frontend {
    objects: ClusterStore,
    refs: Arc<PgRefStore>,
    blobs: Arc<Counting>,
    _dir: PathBuf,
}

fn frontend(pg: &TestPg, garage: &Garage, bridge: &Bridge, dir: &Path) -> Frontend {
    let refs = Arc::new(pg.refs());
    let local = Arc::new(RocksStore::open(&dir.join("git")).expect("local cache"));
    let s3 = S3BlobStore::open(&garage.config, bridge.handle().clone(), dir.join("staging")).expect("s3");
    let blobs = Arc::new(Counting { inner: Arc::new(s3), opened: AtomicUsize::new(0) });
    let objects = ClusterStore::new(local, refs.clone(), blobs.clone(), &dir.join("cluster")).expect("cluster store");
    Frontend { objects, refs, blobs, _dir: dir.to_owned() }
}

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

/// What one frontend stores and points a ref at, every other frontend serves — even one that
/// starts with an empty cache — downloading each pack once, and not again after a restart.
#[test]
fn any_frontend_serves_what_another_stored() {
    let Some(pg) = TestPg::new() else { return };
    let Some(garage) = Garage::start("cluster") else { return };
    let bridge = Bridge::new("test-s3").expect("runtime");
    let dirs = tempfile::tempdir().expect("temp dir");
    let one = frontend(&pg, &garage, &bridge, &dirs.path().join("one"));
    let two = frontend(&pg, &garage, &bridge, &dirs.path().join("two"));

    let first: Vec<NewObject> = (0..20).map(|i| blob(&format!("first {i}"))).collect();
    one.objects.put(REPO, &first).expect("store");
    let tip = first[0].id;
    one.refs
        .update(REPO, &[RefUpdate { name: "refs/heads/main".into(), old: None, new: Some(tip) }], &actor())
        .expect("update")
        .expect("no conflict");

    // Frontend two has never seen the repository: the ref is there, and so is every object.
    assert_eq!(two.refs.get(REPO, "refs/heads/main").expect("get"), Some(tip));
    let ids: Vec<ObjectId> = first.iter().map(|o| o.id).collect();
    assert!(two.objects.has_many(REPO, &ids).expect("has").iter().all(|h| *h));
    let read = two.objects.get_many(REPO, &ids).expect("get");
    for (o, r) in first.iter().zip(read) {
        assert_eq!(r.expect("present").data, o.data);
    }
    assert_eq!(two.blobs.opened.load(Ordering::SeqCst), 1, "one pack, downloaded once");

    // A second pack, stored by two: one finds it on its first miss.
    let second = blob("second");
    two.objects.put(REPO, std::slice::from_ref(&second)).expect("store");
    assert!(one.objects.has_many(REPO, &[second.id]).expect("has")[0]);
    assert_eq!(one.blobs.opened.load(Ordering::SeqCst), 1, "one took only two's pack");

    // A miss that nothing listed answers reads the list again but downloads nothing.
    let absent = blob("never stored").id;
    assert!(!two.objects.has_many(REPO, &[absent]).expect("has")[0]);
    assert_eq!(two.blobs.opened.load(Ordering::SeqCst), 1);

    // Two restarts on its cache: nothing is downloaded again.
    drop(two);
    let two = frontend(&pg, &garage, &bridge, &dirs.path().join("two"));
    assert!(two.objects.has_many(REPO, &[second.id, tip, absent]).expect("has")[..2].iter().all(|h| *h));
    assert_eq!(two.blobs.opened.load(Ordering::SeqCst), 0);

    // A fork lists the same packs: deleting its parent leaves them, and another frontend takes
    // them for the fork.
    const FORK: RepoId = RepoId(8);
    one.objects.fork(REPO, FORK).expect("fork");
    // Compaction leaves shared packs alone (rewriting them would store their objects twice):
    // the parent's two packs are shared; the fork's own two are rolled into one.
    assert_eq!(one.objects.compact(REPO, 2).expect("compact"), None, "every pack of the parent is shared");
    let (mine, also) = (blob("the fork's"), blob("the fork's too"));
    one.objects.put(FORK, std::slice::from_ref(&mine)).expect("store");
    one.objects.put(FORK, std::slice::from_ref(&also)).expect("store");
    assert_eq!(one.objects.compact(FORK, 2).expect("compact"), Some(2), "only the fork's own packs");
    assert_eq!(one.objects.compact(FORK, 2).expect("compact"), None);
    let read = two.objects.get_many(FORK, &[second.id, tip, mine.id, also.id]).expect("get");
    assert!(read.iter().all(Option::is_some), "the fork reads its parent's objects and its own");
    let stored = one.blobs.list("packs").expect("list").len();
    ObjectStore::delete_repo(&one.objects, REPO).expect("delete the parent");
    assert_eq!(one.blobs.list("packs").expect("list").len(), stored, "the fork's packs stay");
    let three = frontend(&pg, &garage, &bridge, &dirs.path().join("three"));
    let read = three.objects.get_many(FORK, &[second.id, tip, mine.id, also.id]).expect("get");
    assert!(read.iter().all(Option::is_some), "the fork outlives its parent on every frontend");

    // Deleting the last repository listing them removes the packs from object storage too.
    ObjectStore::delete_repo(&one.objects, FORK).expect("delete");
    // (The packs the fork's compaction replaced go with the sweep.)
    std::thread::sleep(Duration::from_millis(5));
    one.objects.sweep_unlisted(Duration::ZERO).expect("sweep");
    // Listing shows a delete once the nodes agree on it (the sweep that lists tolerates the lag).
    let mut left = one.blobs.list("packs").expect("list");
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        left = one.blobs.list("packs").expect("list");
    }
    assert!(left.is_empty(), "{left:?}");
    pg.passed();
}

/// A pack stored but never listed (a frontend died between the two) is swept once older than
/// the grace period; listed packs stay.
#[test]
fn unlisted_packs_are_swept_after_a_grace_period() {
    let Some(pg) = TestPg::new() else { return };
    let Some(garage) = Garage::start("sweep") else { return };
    let bridge = Bridge::new("test-s3").expect("runtime");
    let dirs = tempfile::tempdir().expect("temp dir");
    let one = frontend(&pg, &garage, &bridge, dirs.path());
    one.objects.put(REPO, &[blob("kept")]).expect("store");
    let staged = one.blobs.staging_dir().join("orphan");
    std::fs::write(&staged, b"PACK of a push that never listed it").expect("stage");
    one.blobs.commit(&staged, "packs/7/0123abcd").expect("commit");
    assert_eq!(one.objects.sweep_unlisted(Duration::from_secs(3600)).expect("sweep"), 0, "too young");
    assert_eq!(one.objects.sweep_unlisted(Duration::ZERO).expect("sweep"), 1);
    // Listing shows the delete once the nodes agree on it.
    let listed = || -> Vec<String> { one.blobs.list("packs").expect("list").into_iter().map(|(k, _)| k).collect() };
    let mut left = listed();
    for _ in 0..50 {
        if left.len() == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        left = listed();
    }
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(!left.contains(&"packs/7/0123abcd".to_owned()));
    pg.passed();
}

/// Three frontends × five pushers racing on one branch: exactly one wins per old value, the ref
/// ends on the last winner's value, and the log holds exactly the winners, in commit order.
#[test]
fn racing_frontends_have_one_winner_per_old_value() {
    let Some(pg) = TestPg::new() else { return };
    let stores: Vec<Arc<PgRefStore>> = (0..3).map(|_| Arc::new(pg.refs())).collect();
    let ids: Vec<ObjectId> = (0..200).map(|i| blob(&format!("v{i}")).id).collect();
    let ids = Arc::new(ids);
    let mut threads = Vec::new();
    for (f, store) in stores.iter().enumerate() {
        for p in 0..5 {
            let (store, ids) = (store.clone(), ids.clone());
            threads.push(std::thread::spawn(move || {
                let mut won = Vec::new();
                for round in 0..8 {
                    let old = store.get(REPO, "refs/heads/main").expect("get");
                    let new = ids[(f * 5 + p) * 8 + round];
                    let u = RefUpdate { name: "refs/heads/main".into(), old, new: Some(new) };
                    if let Ok(events) = store.update(REPO, &[u], &actor()).expect("update") {
                        won.push((events[0].seq, old, new));
                    }
                }
                won
            }));
        }
    }
    let mut wins: Vec<(u64, Option<ObjectId>, ObjectId)> =
        threads.into_iter().flat_map(|t| t.join().expect("pusher")).collect();
    wins.sort();
    assert!(!wins.is_empty());
    // Each win moved the ref from the previous win's value: no two wins share an old value.
    let olds: HashSet<Option<ObjectId>> = wins.iter().map(|w| w.1).collect();
    assert_eq!(olds.len(), wins.len(), "two pushes won from one old value");
    for pair in wins.windows(2) {
        assert_eq!(pair[1].1, Some(pair[0].2), "wins chain in sequence order");
    }
    let last = wins.last().expect("a win").2;
    for store in &stores {
        assert_eq!(store.get(REPO, "refs/heads/main").expect("get"), Some(last));
    }
    let log = stores[0].events_after(0, 10_000).expect("events");
    assert_eq!(log.len(), wins.len());
    assert!(log.windows(2).all(|w| w[0].seq < w[1].seq));
    pg.passed();
}

/// Five pushes' packs rolled into one: a frontend with an empty cache then downloads one pack;
/// a second compaction finds nothing to do; the replaced packs are swept after the grace period
/// (here none) and everything stays readable.
#[test]
fn compaction_rolls_many_packs_into_one() {
    let Some(pg) = TestPg::new() else { return };
    let Some(garage) = Garage::start("compact") else { return };
    let bridge = Bridge::new("test-s3").expect("runtime");
    let dirs = tempfile::tempdir().expect("temp dir");
    let one = frontend(&pg, &garage, &bridge, &dirs.path().join("one"));
    let two = frontend(&pg, &garage, &bridge, &dirs.path().join("two"));
    let mut all = Vec::new();
    for push in 0..5 {
        let objects: Vec<NewObject> = (0..10).map(|i| blob(&format!("push {push} object {i}"))).collect();
        one.objects.put(REPO, &objects).expect("store");
        all.extend(objects);
    }
    let ids: Vec<ObjectId> = all.iter().map(|o| o.id).collect();
    assert!(two.objects.has_many(REPO, &ids).expect("has").iter().all(|h| *h));
    assert_eq!(two.blobs.opened.load(Ordering::SeqCst), 5);

    assert_eq!(one.objects.compact(REPO, 10).expect("compact"), None, "fewer packs than asked for");
    assert_eq!(two.objects.compact(REPO, 4).expect("compact"), Some(5));
    assert_eq!(one.objects.compact(REPO, 2).expect("compact"), None, "one pack left");
    // One had all five packs: a miss lists the compacted pack, which it takes without a download.
    assert!(!one.objects.has_many(REPO, &[blob("absent").id]).expect("has")[0]);
    assert_eq!(one.blobs.opened.load(Ordering::SeqCst), 0, "nothing downloaded");

    let three = frontend(&pg, &garage, &bridge, &dirs.path().join("three"));
    let read = three.objects.get_many(REPO, &ids).expect("get");
    for (o, r) in all.iter().zip(read) {
        assert_eq!(r.expect("present").data, o.data);
    }
    assert_eq!(three.blobs.opened.load(Ordering::SeqCst), 1, "one pack to take");

    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(one.objects.sweep_unlisted(Duration::ZERO).expect("sweep"), 5, "the replaced packs");
    let four = frontend(&pg, &garage, &bridge, &dirs.path().join("four"));
    assert!(four.objects.has_many(REPO, &ids).expect("has").iter().all(|h| *h));
    // One still reads what it had, and what is pushed next.
    let next = blob("after compaction");
    one.objects.put(REPO, std::slice::from_ref(&next)).expect("store");
    assert!(four.objects.has_many(REPO, &[next.id]).expect("has")[0]);
    pg.passed();
}

/// The ref store on two PostgreSQL servers of the test's own, a primary committing synchronously
/// and its replica: every update acknowledged before the primary is killed is on the replica
/// promoted in its place, and the same store — not reopened — moves refs again once it has found
/// the new primary.
#[test]
fn the_ref_store_follows_the_primary_to_a_promoted_replica() {
    let Some(nodes) = PgNodes::start(2) else { return };
    let store = PgRefStore::open(&nodes.url, None).expect("open on the primary");
    let ids: Vec<ObjectId> = (0..20).map(|i| blob(&format!("failover {i}")).id).collect();
    let update = |old: Option<ObjectId>, new: ObjectId| {
        let u = RefUpdate { name: "refs/heads/main".into(), old, new: Some(new) };
        store.update(REPO, &[u], &actor())
    };
    update(None, ids[0]).expect("update").expect("no race");
    for pair in ids[..9].windows(2) {
        update(Some(pair[0]), pair[1]).expect("update").expect("no race");
    }
    // Listed first, the replica is passed over: a store on the reversed list writes too.
    let (head, list) = nodes.url.rsplit_once('@').expect("user@hosts");
    let (list, db) = list.split_once('/').expect("hosts/db");
    let reversed: Vec<&str> = list.split(',').rev().collect();
    let other = PgRefStore::open(&format!("{head}@{}/{db}", reversed.join(",")), None).expect("open");
    let u = RefUpdate { name: "refs/heads/main".into(), old: Some(ids[8]), new: Some(ids[9]) };
    other.update(REPO, &[u], &actor()).expect("update on the primary").expect("no race");
    drop(other);
    nodes.kill(1);
    nodes.promote(2);
    // A deadline, not a measurement: the store finds the new primary within seconds.
    let started = Instant::now();
    let seen = loop {
        match store.get(REPO, "refs/heads/main") {
            Ok(seen) => break seen,
            Err(e) => {
                assert!(started.elapsed() < Duration::from_secs(60), "the new primary was not found: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert_eq!(seen, Some(ids[9]), "an acknowledged update was lost in the failover");
    for pair in ids[9..].windows(2) {
        update(Some(pair[0]), pair[1]).expect("update after the failover").expect("no race");
    }
    assert_eq!(store.get(REPO, "refs/heads/main").expect("get"), Some(ids[19]));
    let log = store.events_after(0, 100).expect("events");
    assert_eq!(log.len(), 20, "one event per update, none lost or repeated");
    assert!(log.windows(2).all(|w| w[0].seq < w[1].seq));
}
