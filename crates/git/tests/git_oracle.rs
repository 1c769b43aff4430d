//! Packs and deltas checked against the real `git`: we read what `git pack-objects` writes, and
//! `git index-pack --strict` accepts what we write.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use gitstratum_git::pack::{self, EntryKind, ReadError, Reader, Writer};
use gitstratum_git::{ObjectId, ObjectKind, delta, hash_object};

fn git(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let home = dir.parent().expect("temp parent");
    let mut child = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", home)
        .env("GIT_AUTHOR_NAME", "A U Thor")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_COMMITTER_NAME", "C O Mitter")
        .env("GIT_COMMITTER_EMAIL", "committer@example.com")
        .env("GIT_AUTHOR_DATE", "1700000000 +0000")
        .env("GIT_COMMITTER_DATE", "1700000000 +0000")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git runs");
    if let Some(input) = stdin {
        child.stdin.take().expect("piped").write_all(input).expect("write stdin");
    }
    let out = child.wait_with_output().expect("git finishes");
    assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// A repository whose history makes git write deltas: a file edited over many commits, a binary
/// blob, an annotated tag.
fn fixture(root: &Path) -> std::path::PathBuf {
    let repo = root.join("repo");
    std::fs::create_dir_all(&repo).expect("dir");
    git(&repo, &["init", "-q", "-b", "main"], None);
    let mut text: String =
        (0..400).map(|i| format!("line {i} of a file that changes a little each commit\n")).collect();
    for round in 0..12 {
        text = text.replacen(&format!("line {}", round * 7), &format!("LINE {round} EDITED"), 1);
        std::fs::write(repo.join("file.txt"), &text).expect("write");
        std::fs::write(repo.join(format!("small-{round}.txt")), format!("{round}\n")).expect("write");
        git(&repo, &["add", "-A"], None);
        git(&repo, &["commit", "-q", "-m", &format!("commit {round}")], None);
    }
    let binary: Vec<u8> = (0..50_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(repo.join("data.bin"), binary).expect("write");
    git(&repo, &["add", "-A"], None);
    git(&repo, &["commit", "-q", "-m", "binary"], None);
    git(&repo, &["tag", "-a", "v1", "-m", "release"], None);
    repo
}

/// Every object of the repository: id → (kind, content).
fn all_objects(repo: &Path) -> BTreeMap<String, (ObjectKind, Vec<u8>)> {
    let listing = git(repo, &["cat-file", "--batch-all-objects", "--batch-check=%(objectname) %(objecttype)"], None);
    let mut out = BTreeMap::new();
    for line in String::from_utf8(listing).expect("utf-8").lines() {
        let (id, kind) = line.split_once(' ').expect("two fields");
        let data = git(repo, &["cat-file", kind, id], None);
        out.insert(id.to_owned(), (ObjectKind::from_name(kind.as_bytes()).expect("known kind"), data));
    }
    out
}

fn read_pack(bytes: &[u8]) -> Result<Vec<pack::Entry>, ReadError> {
    Reader::new(bytes)?.collect()
}

#[test]
fn reads_packs_that_git_writes() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let repo = fixture(tmp.path());
    let expected = all_objects(&repo);
    let ids: String = expected.keys().map(|id| format!("{id}\n")).collect();

    for extra in [&["--delta-base-offset"][..], &[][..]] {
        let mut args = vec!["pack-objects", "--stdout", "-q", "--window=50"];
        args.extend_from_slice(extra);
        let bytes = git(&repo, &args, Some(ids.as_bytes()));
        let entries = read_pack(&bytes).expect("git's pack reads");
        assert_eq!(entries.len(), expected.len());
        let deltas = entries.iter().filter(|e| !matches!(e.kind, EntryKind::Base(_))).count();
        assert!(deltas > 5, "the fixture should make git write deltas ({deltas} with {extra:?})");
        if extra.is_empty() {
            assert!(entries.iter().all(|e| !matches!(e.kind, EntryKind::OfsDelta { .. })), "REF deltas only");
        }
        let resolved = pack::resolve_all(&entries, &|_| None).expect("resolves");
        let got: BTreeMap<String, (ObjectKind, Vec<u8>)> =
            resolved.into_iter().map(|r| (r.id.to_string(), (r.kind, r.data))).collect();
        assert_eq!(got, expected, "objects differ with {extra:?}");
    }
}

#[test]
fn git_accepts_packs_we_write_with_our_deltas() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let repo = fixture(tmp.path());
    let objects = all_objects(&repo);

    // Blobs as deltas against the previous blob of similar size (OFS), the rest whole; the
    // binary blob as a REF delta against a base written earlier.
    let mut bytes = Vec::new();
    let mut writer = Writer::new(&mut bytes, objects.len() as u32).expect("header");
    let mut previous_blob: Option<(u64, ObjectId, Vec<u8>)> = None;
    let mut n_deltas = 0;
    for (id, (kind, data)) in &objects {
        let id = ObjectId::from_hex(id.as_bytes()).expect("hex id");
        match (&previous_blob, kind) {
            (Some((offset, base_id, base)), ObjectKind::Blob) if base.len() > 1000 && data.len() > 1000 => {
                let d = delta::encode(base, data);
                if n_deltas % 2 == 0 {
                    writer.write_ofs_delta(*offset, &d).expect("write");
                } else {
                    writer.write_ref_delta(base_id, &d).expect("write");
                }
                n_deltas += 1;
                continue;
            }
            _ => {}
        }
        let offset = writer.write_object(*kind, data).expect("write");
        if *kind == ObjectKind::Blob {
            previous_blob = Some((offset, id, data.clone()));
        }
    }
    let (_, checksum) = writer.finish().expect("trailer");
    assert!(n_deltas >= 2, "the fixture has several large blobs");

    let target = tmp.path().join("target.git");
    std::fs::create_dir_all(&target).expect("dir");
    git(&target, &["init", "-q", "--bare"], None);
    let out = git(&target, &["index-pack", "--stdin", "--strict", "--fsck-objects"], Some(&bytes));
    assert!(String::from_utf8_lossy(&out).contains(&checksum.to_string()), "{}", String::from_utf8_lossy(&out));
    assert_eq!(all_objects(&target), objects, "git reads back exactly what we wrote");

    // And our own reader agrees.
    let entries = read_pack(&bytes).expect("own pack reads");
    let resolved = pack::resolve_all(&entries, &|_| None).expect("resolves");
    for r in resolved {
        assert_eq!(hash_object(r.kind, &r.data).expect("hash"), r.id);
        assert!(objects.contains_key(&r.id.to_string()));
    }
}

#[test]
fn thin_packs_resolve_against_known_objects() {
    let base = b"the base object, already in the store, long enough to be worth a delta\n".repeat(20);
    let target = [&base[..], b"one more line\n"].concat();
    let base_id = hash_object(ObjectKind::Blob, &base).expect("hash");
    let mut bytes = Vec::new();
    let mut writer = Writer::new(&mut bytes, 1).expect("header");
    writer.write_ref_delta(&base_id, &delta::encode(&base, &target)).expect("write");
    writer.finish().expect("trailer");
    let entries = read_pack(&bytes).expect("reads");
    assert!(matches!(pack::resolve_all(&entries, &|_| None), Err(pack::ResolveError::MissingBase { .. })));
    let store = |id: &ObjectId| (*id == base_id).then(|| (ObjectKind::Blob, base.clone()));
    let resolved = pack::resolve_all(&entries, &store).expect("resolves with the store");
    assert_eq!(resolved[0].data, target);
    assert_eq!(resolved[0].id, hash_object(ObjectKind::Blob, &target).expect("hash"));
}

#[test]
fn corrupt_and_truncated_packs_are_refused() {
    let mut bytes = Vec::new();
    let mut writer = Writer::new(&mut bytes, 2).expect("header");
    writer.write_object(ObjectKind::Blob, &b"some content\n".repeat(50)).expect("write");
    writer.write_object(ObjectKind::Blob, b"more\n").expect("write");
    writer.finish().expect("trailer");
    assert!(read_pack(&bytes).is_ok());

    for cut in [0, 5, 12, 20, bytes.len() - 21, bytes.len() - 1] {
        let err = read_pack(&bytes[..cut]).expect_err("truncated");
        assert!(
            matches!(
                err,
                ReadError::NotAPack | ReadError::Truncated { .. } | ReadError::Checksum | ReadError::Entry { .. }
            ),
            "cut {cut}: {err}"
        );
    }
    for at in [0, 4, 9, 12, 14, 30, bytes.len() - 5] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x40;
        assert!(read_pack(&bad).is_err(), "flipping byte {at} went unnoticed");
    }
    let mut extra = bytes.clone();
    extra.push(0);
    assert!(matches!(read_pack(&extra), Err(ReadError::TrailingData)));
    // A header that declares a huge object is refused before inflating anything.
    let mut huge = b"PACK\0\0\0\x02\0\0\0\x01".to_vec();
    huge.extend_from_slice(&[0xbf, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    assert!(matches!(
        Reader::with_limit(&huge[..], 1 << 20).expect("header").next(),
        Some(Err(ReadError::TooLarge { .. }))
    ));
}

#[test]
fn reads_the_indexes_git_writes() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let repo = fixture(tmp.path());
    let ids = git(&repo, &["cat-file", "--batch-all-objects", "--batch-check=%(objectname)"], None);
    let base = tmp.path().join("out");
    let base = base.to_str().expect("utf-8");
    let name = git(&repo, &["pack-objects", "-q", "--delta-base-offset", base], Some(&ids));
    let name = String::from_utf8(name).expect("utf-8").trim().to_owned();
    let idx = std::fs::read(format!("{base}-{name}.idx")).expect("idx");
    let (entries, pack_checksum) = gitstratum_git::packfile::read_idx(&idx).expect("git's index reads");
    assert_eq!(pack_checksum.to_string(), name);
    // `git verify-pack -v`: "<id> <type> <size> <size-in-pack> <offset> …" per object.
    let listing = git(&repo, &["verify-pack", "-v", &format!("{base}-{name}.idx")], None);
    let expected: BTreeMap<String, u64> = String::from_utf8(listing)
        .expect("utf-8")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 5 && f[0].len() == 40).then(|| (f[0].to_owned(), f[4].parse().expect("offset")))
        })
        .collect();
    let got: BTreeMap<String, u64> = entries.iter().map(|e| (e.id.to_string(), e.offset)).collect();
    assert_eq!(got, expected);
    let pack = std::fs::read(format!("{base}-{name}.pack")).expect("pack");
    let mut by_offset = entries.clone();
    by_offset.sort_by_key(|e| e.offset);
    for (i, e) in by_offset.iter().enumerate() {
        let end = by_offset.get(i + 1).map_or(pack.len() as u64 - 20, |n| n.offset);
        let raw = &pack[e.offset as usize..end as usize];
        assert_eq!(crc32fast::hash(raw), e.crc32, "the CRC-32 of the entry at {}", e.offset);
    }
    // A flipped byte anywhere is caught; a cut index is refused.
    for at in [10, 8 + 256 * 4 + 3, idx.len() - 30] {
        let mut bad = idx.clone();
        bad[at] ^= 0x40;
        assert!(gitstratum_git::packfile::read_idx(&bad).is_err(), "flip at {at}");
    }
    assert!(gitstratum_git::packfile::read_idx(&idx[..idx.len() - 1]).is_err());
    assert!(gitstratum_git::packfile::read_idx(b"").is_err());
}
