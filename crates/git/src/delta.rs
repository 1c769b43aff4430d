//! Git's delta format: a target object described as copies from a base object and inserted bytes.
//!
//! ```text
//! delta  = base-size target-size instruction*
//! size   = little-endian base-128 varint
//! copy   = 1xxxxxxx [offset: bytes for bits 0-3] [size: bytes for bits 4-6]   (size 0 means 0x10000)
//! insert = 0nnnnnnn n literal bytes (n > 0)
//! ```
//!
//! [`apply`] checks every bound and never panics; [`encode`] finds copies by indexing the base in
//! 16-byte blocks, as C Git's encoder does.

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("delta is truncated")]
    Truncated,
    #[error("delta expects a base of {expected} bytes; the base has {actual}")]
    BaseSize { expected: u64, actual: usize },
    #[error("delta copies bytes {offset}..{end} of a {base} byte base")]
    CopyOutOfRange { offset: u64, end: u64, base: usize },
    #[error("delta uses the reserved instruction 0")]
    ReservedInstruction,
    #[error("delta produces {actual} bytes, but declares {expected}")]
    ResultSize { expected: u64, actual: u64 },
    #[error("delta declares a result of {0} bytes, above the limit")]
    TooLarge(u64),
}

/// Largest result [`apply`] will build (a guard against a tiny delta declaring a huge result).
pub const MAX_RESULT: u64 = 4 << 30;

/// Reads a little-endian base-128 varint (the delta header's sizes) at `pos`, advancing it.
pub fn read_varint(delta: &[u8], pos: &mut usize) -> Result<u64, ApplyError> {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let byte = *delta.get(*pos).ok_or(ApplyError::Truncated)?;
        *pos += 1;
        if shift < 64 {
            value |= u64::from(byte & 0x7f) << shift;
        }
        shift += 7;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        if shift > 70 {
            return Err(ApplyError::Truncated);
        }
    }
}

/// The base and result sizes a delta declares.
pub fn sizes(delta: &[u8]) -> Result<(u64, u64), ApplyError> {
    let mut pos = 0;
    Ok((read_varint(delta, &mut pos)?, read_varint(delta, &mut pos)?))
}

/// Builds the target from `base` and `delta`.
pub fn apply(base: &[u8], delta: &[u8]) -> Result<Vec<u8>, ApplyError> {
    let mut pos = 0;
    let base_size = read_varint(delta, &mut pos)?;
    if base_size != base.len() as u64 {
        return Err(ApplyError::BaseSize { expected: base_size, actual: base.len() });
    }
    let result_size = read_varint(delta, &mut pos)?;
    if result_size > MAX_RESULT {
        return Err(ApplyError::TooLarge(result_size));
    }
    // Reserve no more than the delta could possibly produce, whatever it declares.
    let mut out = Vec::with_capacity(usize::try_from(result_size.min(delta.len() as u64 * 0x10000)).unwrap_or(0));
    while pos < delta.len() {
        let op = delta[pos];
        pos += 1;
        if op & 0x80 != 0 {
            let mut offset = 0u64;
            let mut size = 0u64;
            for i in 0..4 {
                if op & (1 << i) != 0 {
                    offset |= u64::from(*delta.get(pos).ok_or(ApplyError::Truncated)?) << (8 * i);
                    pos += 1;
                }
            }
            for i in 0..3 {
                if op & (0x10 << i) != 0 {
                    size |= u64::from(*delta.get(pos).ok_or(ApplyError::Truncated)?) << (8 * i);
                    pos += 1;
                }
            }
            if size == 0 {
                size = 0x10000;
            }
            let end = offset + size;
            if end > base.len() as u64 {
                return Err(ApplyError::CopyOutOfRange { offset, end, base: base.len() });
            }
            out.extend_from_slice(&base[offset as usize..end as usize]);
        } else if op != 0 {
            let n = usize::from(op);
            let literal = delta.get(pos..pos + n).ok_or(ApplyError::Truncated)?;
            out.extend_from_slice(literal);
            pos += n;
        } else {
            return Err(ApplyError::ReservedInstruction);
        }
        if out.len() as u64 > result_size {
            return Err(ApplyError::ResultSize { expected: result_size, actual: out.len() as u64 });
        }
    }
    if out.len() as u64 != result_size {
        return Err(ApplyError::ResultSize { expected: result_size, actual: out.len() as u64 });
    }
    Ok(out)
}

const BLOCK: usize = 16;
/// Largest copy one instruction makes (C Git's limit, kept for compatibility with old readers).
const MAX_COPY: usize = 0x10000;
const MAX_INSERT: usize = 0x7f;

/// Appends `n` as a little-endian base-128 varint (what [`read_varint`] reads).
pub fn write_varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn flush_insert(out: &mut Vec<u8>, pending: &[u8]) {
    for chunk in pending.chunks(MAX_INSERT) {
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
}

fn write_copy(out: &mut Vec<u8>, mut offset: usize, mut len: usize) {
    while len > 0 {
        let size = len.min(MAX_COPY);
        let mut op = 0x80u8;
        let mut args = Vec::with_capacity(7);
        for i in 0..4 {
            let byte = ((offset >> (8 * i)) & 0xff) as u8;
            if byte != 0 {
                op |= 1 << i;
                args.push(byte);
            }
        }
        // A size of exactly 0x10000 is written as no size bytes.
        if size != 0x10000 {
            for i in 0..3 {
                let byte = ((size >> (8 * i)) & 0xff) as u8;
                if byte != 0 {
                    op |= 0x10 << i;
                    args.push(byte);
                }
            }
        }
        out.push(op);
        out.extend_from_slice(&args);
        offset += size;
        len -= size;
    }
}

/// A delta that turns `base` into `target`. Always valid; small when the two share content.
pub fn encode(base: &[u8], target: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(target.len() / 4 + 16);
    write_varint(&mut out, base.len() as u64);
    write_varint(&mut out, target.len() as u64);
    // Index the base's blocks; keep the first few offsets of each so repetitive data stays cheap.
    let mut index: HashMap<&[u8], Vec<usize>> = HashMap::new();
    if base.len() >= BLOCK {
        for offset in (0..=base.len() - BLOCK).step_by(BLOCK) {
            let slots = index.entry(&base[offset..offset + BLOCK]).or_default();
            if slots.len() < 8 {
                slots.push(offset);
            }
        }
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut pos = 0;
    while pos < target.len() {
        let best = target.get(pos..pos + BLOCK).and_then(|block| index.get(block)).and_then(|candidates| {
            candidates
                .iter()
                .map(|&start| {
                    let len = base[start..].iter().zip(&target[pos..]).take_while(|(a, b)| a == b).count();
                    (start, len)
                })
                .max_by_key(|&(_, len)| len)
        });
        match best {
            Some((mut start, forward)) if forward >= BLOCK => {
                // Extend the match backwards over bytes that were about to be inserted; those
                // bytes were consumed already, so only `forward` moves the position.
                let mut len = forward;
                while start > 0 && pending.last() == Some(&base[start - 1]) {
                    start -= 1;
                    len += 1;
                    pending.pop();
                }
                flush_insert(&mut out, &pending);
                pending.clear();
                write_copy(&mut out, start, len);
                pos += forward;
            }
            _ => {
                pending.push(target[pos]);
                pos += 1;
            }
        }
    }
    flush_insert(&mut out, &pending);
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn applies_a_handwritten_delta() {
        // base "hello world", result "hello brave world": copy 0..6, insert "brave ", copy 6..11.
        let delta = [11, 17, 0x90, 6, 6, b'b', b'r', b'a', b'v', b'e', b' ', 0x91, 6, 5];
        assert_eq!(apply(b"hello world", &delta).expect("valid"), b"hello brave world");
    }

    #[test]
    fn rejects_bad_deltas() {
        assert_eq!(apply(b"abc", &[4, 1, 1, b'x']), Err(ApplyError::BaseSize { expected: 4, actual: 3 }));
        assert_eq!(apply(b"abc", &[3, 1, 0]), Err(ApplyError::ReservedInstruction));
        assert!(matches!(apply(b"abc", &[3, 5, 0x91, 1, 5]), Err(ApplyError::CopyOutOfRange { .. })));
        assert_eq!(apply(b"abc", &[3, 2, 3, b'x']), Err(ApplyError::Truncated));
        assert!(matches!(apply(b"abc", &[3, 9, 1, b'x']), Err(ApplyError::ResultSize { .. })));
        assert!(matches!(apply(b"abc", &[3, 0xff, 0xff, 0xff, 0xff, 0x7f]), Err(ApplyError::TooLarge(_))));
    }

    #[test]
    fn similar_content_gives_small_deltas() {
        let base: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let mut target = base.clone();
        target.splice(1000..1000, b"inserted".iter().copied());
        target.truncate(300_000);
        let delta = encode(&base, &target);
        assert!(delta.len() < 200, "delta of {} bytes", delta.len());
        assert_eq!(apply(&base, &delta).expect("valid"), target);
    }

    proptest! {
        #[test]
        fn encode_then_apply_round_trips(
            base in prop::collection::vec(0u8..4, 0..3000),
            edits in prop::collection::vec((0usize..3000, 0usize..40, prop::collection::vec(0u8..4, 0..40)), 0..6),
        ) {
            let mut target = base.clone();
            for (at, remove, insert) in edits {
                let at = at.min(target.len());
                let end = (at + remove).min(target.len());
                target.splice(at..end, insert);
            }
            let delta = encode(&base, &target);
            prop_assert_eq!(apply(&base, &delta).expect("own deltas apply"), target);
        }

        #[test]
        fn apply_never_panics(base in prop::collection::vec(prop::num::u8::ANY, 0..64), delta in prop::collection::vec(prop::num::u8::ANY, 0..64)) {
            let _ = apply(&base, &delta);
        }
    }
}
