//! Git's formats and protocols, sans-io: object ids and kinds, pkt-lines, deltas and packs.
//!
//! What it must never do: network or file I/O of its own, async, or storage decisions. Parsers
//! take bytes (or any `BufRead`) and return values or errors that name the problem; no input
//! makes them panic. Key modules: [`pktline`], [`delta`], [`pack`], [`object`].

#![forbid(unsafe_code)]

pub mod client;
mod crc;
pub mod delta;
pub mod object;
pub mod pack;
pub mod packfile;
pub mod parse;
pub mod pktline;
pub mod protocol;

pub use object::{ObjectId, ObjectKind, hash_object};
