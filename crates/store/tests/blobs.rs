//! One conformance suite for every `BlobStore`: the filesystem one, and the S3 one against a real
//! three-node Garage cluster (replication factor 3) started by `scripts/garage.sh`.
//!
//! Without a Garage binary the S3 half is skipped with a message, unless `CI` is set (then it
//! fails): `scripts/test.sh` builds Garage first (`ensure_garage`).

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use gitstratum_store::blob::s3::{READ_CHUNK, S3BlobStore, S3Config};
use gitstratum_store::blob::{BlobStore, FsBlobStore, new_key};
use gitstratum_store::testing::Garage;

fn stage(store: &dyn BlobStore, name: &str, data: &[u8]) -> PathBuf {
    let staged = store.staging_dir().join(name);
    std::fs::write(&staged, data).expect("stage");
    staged
}

fn read_all(store: &dyn BlobStore, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    store.open(key).expect("open").read_to_end(&mut out).expect("read");
    out
}

/// What every store must do: commit a staged file under a fresh key (the staged file gone
/// after), read it back whole (small, empty, and larger than one read request and one upload
/// part), list a kind's keys, delete idempotently, and refuse keys that are not its own shape.
fn conformance(store: &dyn BlobStore) {
    let small = new_key("artifacts").expect("key");
    let staged = stage(store, "small", b"archive");
    store.commit(&staged, &small).expect("commit");
    assert!(!staged.exists(), "the staged file is gone once committed");
    assert_eq!(read_all(store, &small), b"archive");

    let empty = new_key("artifacts").expect("key");
    store.commit(&stage(store, "empty", b""), &empty).expect("commit empty");
    assert_eq!(read_all(store, &empty), b"");

    // Larger than a read request and than an upload part: read back byte for byte, in small reads.
    let size = usize::try_from(READ_CHUNK).expect("size") * 2 + 12_345;
    let big: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let large = new_key("caches").expect("key");
    store.commit(&stage(store, "large", &big), &large).expect("commit large");
    let mut reader = store.open(&large).expect("open");
    let mut back = Vec::with_capacity(size);
    let mut buf = [0u8; 7919];
    loop {
        let n = reader.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        back.extend_from_slice(&buf[..n]);
    }
    assert!(back == big, "the large blob reads back as written ({} of {} bytes)", back.len(), big.len());

    let mut artifacts: Vec<String> = store.list("artifacts").expect("list").into_iter().map(|(k, _)| k).collect();
    artifacts.sort();
    let mut expected = vec![small.clone(), empty.clone()];
    expected.sort();
    assert_eq!(artifacts, expected);
    let caches = store.list("caches").expect("list");
    assert_eq!(caches.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), [large.as_str()]);
    let age = caches[0].1.elapsed().unwrap_or_default();
    assert!(age < std::time::Duration::from_secs(600), "written just now: {age:?} ago");
    assert!(store.list("nothing").expect("an empty kind").is_empty());

    store.delete(&small).expect("delete");
    store.delete(&small).expect("deleting twice is fine");
    let gone = store.open(&small).err().expect("a deleted blob cannot be opened");
    assert_eq!(gone.kind(), std::io::ErrorKind::NotFound, "{gone}");
    store.delete(&empty).expect("delete");
    store.delete(&large).expect("delete");
    assert!(store.list("artifacts").expect("list").is_empty());

    for bad in ["../x", "/etc/passwd", "a//b", "A/b", "", "artifacts/../../x"] {
        assert!(store.open(bad).is_err(), "{bad:?}");
        assert!(store.delete(bad).is_err(), "{bad:?}");
        let staged = stage(store, "bad", b"x");
        assert!(store.commit(&staged, bad).is_err(), "{bad:?}");
    }
}

#[test]
fn the_filesystem_store_conforms() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = FsBlobStore::open(dir.path().to_owned()).expect("store");
    conformance(&store);
}

#[test]
fn the_s3_store_conforms_on_a_three_node_garage_cluster() {
    let Some(garage) = Garage::start("gitstratum-test") else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let staging = tempfile::tempdir().expect("tmp");
    let store =
        S3BlobStore::open(&garage.config, runtime.handle().clone(), staging.path().to_owned()).expect("s3 store");
    conformance(&store);

    // The client never relies on a conditional put: asking for one fails loudly (Garage would
    // ignore If-None-Match and overwrite).
    let objects: Arc<dyn object_store::ObjectStore> = store.object_store();
    let path = object_store::path::Path::from("gitstratum-test/conditional");
    let create = object_store::PutOptions { mode: object_store::PutMode::Create, ..Default::default() };
    let refused = runtime.block_on(objects.put_opts(&path, object_store::PutPayload::from_static(b"x"), create));
    assert!(matches!(refused, Err(object_store::Error::NotImplemented { .. })), "{refused:?}");

    // Wrong credentials are an error, never an empty answer.
    let wrong = S3Config { secret_access_key: "wrong".into(), ..garage.config.clone() };
    let stranger = S3BlobStore::open(&wrong, runtime.handle().clone(), staging.path().to_owned()).expect("client");
    assert!(stranger.list("artifacts").is_err());

    // Given every node's endpoint, a client keeps working when the one it talks to is gone: an
    // endpoint nothing listens on first, then node 1 killed.
    let dead = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
    );
    let listed = S3Config { endpoint: format!("{dead},{}", garage.endpoints.join(",")), ..garage.config.clone() };
    let nodes = S3BlobStore::open(&listed, runtime.handle().clone(), staging.path().to_owned()).expect("client");
    conformance(&nodes);
    let (before, after) = (new_key("artifacts").expect("key"), new_key("artifacts").expect("key"));
    let staged = nodes.staging_dir().join("before");
    std::fs::write(&staged, b"written before node 1 went").expect("stage");
    nodes.commit(&staged, &before).expect("commit");
    garage.kill_node(1);
    let mut read = Vec::new();
    nodes.open(&before).expect("open").read_to_end(&mut read).expect("read");
    assert_eq!(read, b"written before node 1 went");
    let staged = nodes.staging_dir().join("after");
    std::fs::write(&staged, b"written without node 1").expect("stage");
    nodes.commit(&staged, &after).expect("commit without node 1");
    assert!(nodes.list("artifacts").expect("list").iter().any(|(k, _)| *k == after));
    garage.start_node(1);
    drop(store);
    drop(garage);
}
