//! How artifacts and caches travel and rest.
//!
//! - [`archive`]: the archive a runner uploads and the server keeps as it is: a zstd-compressed
//!   stream of file entries (path, mode, size, bytes, CRC-32) closed by an end record, read back
//!   with every path checked, every CRC verified and every limit enforced while streaming.
//! - [`names`]: which artifact names and entry paths are allowed (no absolute paths, no `..`, none
//!   of the characters GitHub refuses).
//! - [`zip`]: the zip an artifact is downloaded as (stored entries, so its exact length is known
//!   before the first byte and a download shows true progress).
//!
//! Nothing here touches the network or a database; the runner and the server share it.

#![forbid(unsafe_code)]

pub mod archive;
pub mod names;
pub mod zip;

pub use archive::{ArchiveError, Entry, Limits, Summary, Writer, read_archive};
pub use names::{check_artifact_name, check_entry_path};
