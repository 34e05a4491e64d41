//! Snapshots format v2 (FORMAT.md, "sync-s3 snapshots, format v2"): the
//! byte-level codecs push and restore are built on.
//!
//! * [`varint`] — `uvarint`, minimal LEB128;
//! * [`frame`] — the plaintext frame of every stored unit and the zstd
//!   policy (encryption wraps frames and lives elsewhere);
//! * [`node`] — tree nodes: typed structs, canonical encoding, a strict
//!   decoder, node ids;
//! * [`pages`] — one directory's sorted entries → leaves and branch levels.
//!
//! Data flow for one directory on push: entries → [`pages::build_dir`]
//! (canonical node bytes and ids, bottom-up) → [`frame::encode_record`] →
//! (seal) → `trees/<xx>/<id>`. On restore: GET (bounded) → (open) →
//! [`frame::decode`] with the node limit → [`node::decode_verified`] against
//! the id the parent named.

pub(crate) mod frame;
pub(crate) mod node;
pub(crate) mod pages;
pub(crate) mod varint;
