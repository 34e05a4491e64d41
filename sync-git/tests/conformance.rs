//! sync-core's backend conformance suite against bare repositories on every
//! transport: `file://` (no server), git daemon (`git://`), smart HTTP with
//! basic auth (`http://`) and sshd (`ssh://`), the last three started by
//! `scripts/testbed/git-*.sh`.

mod common;

use common::{GitFixture, Server};

sync_core::conformance_suite!(file, GitFixture::new(Server::File));
sync_core::conformance_suite!(daemon, GitFixture::new(Server::Daemon));
sync_core::conformance_suite!(http, GitFixture::new(Server::Http));
sync_core::conformance_suite!(ssh, GitFixture::new(Server::Ssh));
