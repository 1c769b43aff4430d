//! Property: any set of objects written as a pack (whole, as offset deltas, or as ref deltas
//! against earlier objects) reads back and resolves to exactly those objects and ids.

use gitstratum_git::pack::{Reader, Writer, resolve_all};
use gitstratum_git::{ObjectKind, delta, hash_object};
use proptest::prelude::*;

/// How an object is written: whole, or as a delta against the object `back` places earlier.
#[derive(Debug, Clone)]
enum Form {
    Whole,
    Ofs { back: usize },
    Ref { back: usize },
}

fn objects() -> impl Strategy<Value = Vec<(u8, Vec<u8>, Form)>> {
    let form = prop_oneof![
        Just(Form::Whole),
        (1usize..4).prop_map(|back| Form::Ofs { back }),
        (1usize..4).prop_map(|back| Form::Ref { back }),
    ];
    prop::collection::vec((0u8..3, prop::collection::vec(0u8..6, 0..600), form), 1..24)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn packs_round_trip(objects in objects()) {
        let kinds = [ObjectKind::Blob, ObjectKind::Tree, ObjectKind::Commit];
        let mut ids = Vec::new();
        let mut offsets = Vec::new();
        let mut writer = Writer::new(Vec::new(), u32::try_from(objects.len()).expect("small")).expect("header");
        for (i, (kind, data, form)) in objects.iter().enumerate() {
            let kind = kinds[usize::from(*kind)];
            // A delta reproduces the object's data from its base's, so both must have one kind.
            let base = match form {
                Form::Ofs { back } | Form::Ref { back } if *back <= i
                    && kinds[usize::from(objects[i - back].0)] == kind => Some(i - back),
                _ => None,
            };
            let offset = match (form, base) {
                (Form::Ofs { .. }, Some(b)) => writer.write_ofs_delta(offsets[b], &delta::encode(&objects[b].1, data)),
                (Form::Ref { .. }, Some(b)) => writer.write_ref_delta(&ids[b], &delta::encode(&objects[b].1, data)),
                _ => writer.write_object(kind, data),
            }
            .expect("write");
            offsets.push(offset);
            ids.push(hash_object(kind, data).expect("hash"));
        }
        let (bytes, _) = writer.finish().expect("finish");
        let entries: Vec<_> = Reader::new(&bytes[..]).expect("pack").collect::<Result<_, _>>().expect("read");
        prop_assert_eq!(entries.len(), objects.len());
        let resolved = resolve_all(&entries, &|_| None).expect("resolve");
        let mut got: Vec<_> = resolved.iter().map(|r| (r.id, r.kind, r.data.clone())).collect();
        let mut want: Vec<_> = objects
            .iter()
            .zip(&ids)
            .map(|((kind, data, _), id)| (*id, kinds[usize::from(*kind)], data.clone()))
            .collect();
        got.sort_by_key(|o| o.0);
        want.sort_by_key(|o| o.0);
        prop_assert_eq!(got, want);
    }
}
