//! Foundation types shared by every GitStratum crate.
//!
//! What it owns: the naming rules for accounts and repositories, SSH public key validation,
//! timestamps and the injected clock.
//! What it must never do: I/O of any kind, async, or depend on another GitStratum crate.
//! Git object ids (`ObjectId`) join this crate with the Git engine.

#![forbid(unsafe_code)]

pub mod destinations;
pub mod name;
pub mod sshkey;
pub mod time;

pub use destinations::Destinations;
pub use name::{NameError, validate_repo_name, validate_username};
pub use sshkey::{SshKeyError, SshPublicKey, parse_ssh_public_key};
pub use time::{Clock, SystemClock, Timestamp};
