//! sync-core's backend conformance suite, for both layouts (snapshots
//! also encrypted), against
//! SeaweedFS (the test bed's real S3 server), Azurite (the Azure Blob
//! emulator), `file://` and `memory://`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Store, StoreFixture};
use sync_s3::Layout;

sync_core::conformance_suite!(
    s3_snapshots,
    Store::s3().map(|s| StoreFixture::new(s, Layout::Snapshots))
);
sync_core::conformance_suite!(
    s3_mirror,
    Store::s3().map(|s| StoreFixture::new(s, Layout::Mirror))
);
sync_core::conformance_suite!(
    azure_snapshots,
    Store::azure().map(|s| StoreFixture::new(s, Layout::Snapshots))
);
sync_core::conformance_suite!(
    azure_mirror,
    Store::azure().map(|s| StoreFixture::new(s, Layout::Mirror))
);
sync_core::conformance_suite!(
    file_snapshots,
    Some(StoreFixture::new(Store::File, Layout::Snapshots))
);
sync_core::conformance_suite!(
    file_mirror,
    Some(StoreFixture::new(Store::File, Layout::Mirror))
);
sync_core::conformance_suite!(
    memory_snapshots,
    Some(StoreFixture::new(Store::Memory, Layout::Snapshots))
);
sync_core::conformance_suite!(
    memory_snapshots_encrypted,
    Some(StoreFixture::new(Store::Memory, Layout::Snapshots).encrypted())
);
sync_core::conformance_suite!(
    file_snapshots_encrypted,
    Some(StoreFixture::new(Store::File, Layout::Snapshots).encrypted())
);
sync_core::conformance_suite!(
    s3_snapshots_encrypted,
    Store::s3().map(|s| StoreFixture::new(s, Layout::Snapshots).encrypted())
);
sync_core::conformance_suite!(
    memory_mirror,
    Some(StoreFixture::new(Store::Memory, Layout::Mirror))
);
