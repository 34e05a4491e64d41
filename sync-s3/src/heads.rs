//! The head protocol: numbered generations written with create-if-absent,
//! confirmed after writing, retired behind a floor.
//!
//! Both layouts keep their "newest state" as numbered objects: the
//! snapshots layout's heads (`heads/00000000000000000042`, a small record
//! naming a snapshot) and the mirror layout's index generations
//! (`.tether/mirror/00000000000000000007`, the whole index). The highest
//! number is the current state. This module is the only code that
//! creates, reads, confirms and removes them; what a generation holds is
//! the layout's business (opaque bytes here), so a later format (the
//! snapshots v2 head) keeps the protocol by keeping this module.
//!
//! # Objects
//!
//! * `D/<n>` (`n` as 20 digits) — generation `n`, only ever written with
//!   create-if-absent, never overwritten.
//! * `D-floor/<f>` — a floor marker: every generation below `f` is
//!   retired and may be deleted. A marker is written before any deletion
//!   below it and deleted only after a higher marker exists, so the
//!   highest marker only grows.
//!
//! # Writer
//!
//! 1. Read the newest generation `n` (LIST `D/`, GET `D/<n>`) and build the
//!    new state on it.
//! 2. `m = n + 1` in checked arithmetic (`1` on an empty remote); a remote
//!    at `u64::MAX` is refused as corrupt or hostile, naming the object.
//! 3. Create `D/<m>` if absent. Taken: go back to 1 (re-base: apply the
//!    same delta to the newer state).
//! 4. Confirm, all after the create succeeded: (a) HEAD `D/<m>` has the
//!    ETag the create returned (else the store overwrote it or it is
//!    gone); (b) `m` is not below the highest floor marker (else the
//!    number had been retired and was re-created: nobody builds on it);
//!    (c) LIST `D/` shows a highest generation `h ≥ m`. Any failure: the
//!    generation is orphaned, so remove what only it references and go
//!    back to 1. Only a confirmed push is reported as pushed.
//! 5. Retire, best effort, once the newest is `keep + batch` past the
//!    floor: write marker `f = m + 1 − keep`, delete lower markers, then
//!    generations below `f`.
//!
//! Reader: LIST `D/`, GET the highest; one retired in between is listed
//! again.
//!
//! # Why a confirmed generation is in the newest state
//!
//! Call a generation a *first creation* when its number never existed
//! before. (i) Retirement deletes only below `f ≤ newest`, so the highest
//! number ever created still exists and is the one readers take; a
//! re-created number lies below some floor, so it is never the highest.
//! (ii) A writer creates `k + 1` only on a `k` it read as the highest,
//! hence a first creation, and create-if-absent lets exactly one writer
//! create `k + 1` while it exists: the first creations form one chain
//! `1 → 2 → …`, each built on the one before, ending at the newest.
//! (iii) A re-creation is caught by step 4(b): the deletion it reused
//! followed a higher marker, which therefore exists before the create
//! and before the confirming LIST. So a confirmed generation is a first
//! creation, and every newer generation descends from it: its changes
//! are in the newest state unless a later generation changed the same
//! path. The protocol relies on create-if-absent being honoured and on
//! LIST seeing completed writes (S3 since 2020, GCS, Azure, the local
//! filesystem, memory); step 4(a) catches some stores that ignore
//! `If-None-Match`, not all.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode};
use sync_core::BackendError;

use crate::store::{Remote, flatten, remote_err};

/// Names collected from one listing before they are deleted.
const RETIRE_ROUND: usize = 1000;
/// Listings one retirement makes per directory at most (a store that
/// keeps listing what it deleted does not keep us busy forever).
const RETIRE_ROUNDS: usize = 100;

/// One numbered family of objects (`heads`, `.tether/mirror`).
#[derive(Debug, Clone)]
pub(crate) struct Generations {
    /// The directory under the prefix.
    pub dir: &'static str,
    /// Where the floor markers live (a sibling of `dir`).
    pub floor_dir: &'static str,
    /// Generations kept, the newest included.
    pub keep: u64,
    /// Retire only once this many more have piled up (fewer requests).
    pub batch: u64,
}

/// What creating generation `m` did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CreateOutcome {
    /// Created; confirm it with [`Generations::confirm`].
    Created(Written),
    /// Another writer holds that number.
    Taken,
}

/// What this writer created, to recognise it when reading it back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Written {
    /// Its number.
    pub generation: u64,
    e_tag: Option<String>,
    bytes: Bytes,
}

/// Whether a created generation is part of the newest state.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Confirmation {
    /// It is reachable from the newest generation (`newest`, itself or a
    /// descendant). The floor seen while confirming is kept for retiring.
    Confirmed { newest: u64, floor: u64 },
    /// Nobody builds on it; why.
    Orphaned(String),
}

fn invalid(object: impl ToString, reason: impl Into<String>) -> BackendError {
    BackendError::InvalidRemote {
        object: object.to_string(),
        reason: reason.into(),
    }
}

impl Generations {
    /// The key of generation `n`.
    pub fn key(&self, remote: &Remote, n: u64) -> Result<Path, BackendError> {
        remote.key(&format!("{}/{n:020}", self.dir))
    }

    fn floor_key(&self, remote: &Remote, f: u64) -> Result<Path, BackendError> {
        remote.key(&format!("{}/{f:020}", self.floor_dir))
    }

    /// The highest number under `dir` (ignoring other names, with a
    /// warning). Streams the listing: memory does not grow with its length.
    async fn highest_in(&self, remote: &Remote, dir: &str) -> Result<Option<u64>, BackendError> {
        let key = remote.key(dir)?;
        let mut stream = remote.store.list(Some(&key));
        let mut highest = None;
        while let Some(item) = stream.next().await {
            let meta = item.map_err(|e| remote_err("list", &key, e))?;
            match parse_number(meta.location.filename().unwrap_or("")) {
                Some(n) => highest = highest.max(Some(n)),
                None => tracing::warn!(key = %meta.location, "ignoring an unexpected object"),
            }
        }
        Ok(highest)
    }

    /// The newest generation number, if any.
    pub async fn newest(&self, remote: &Remote) -> Result<Option<u64>, BackendError> {
        self.highest_in(remote, self.dir).await
    }

    /// The highest floor marker (0 when there is none).
    pub async fn floor(&self, remote: &Remote) -> Result<u64, BackendError> {
        Ok(self.highest_in(remote, self.floor_dir).await?.unwrap_or(0))
    }

    /// The newest generation and its content, if any; a content larger
    /// than `max_bytes` is refused before it is read.
    pub async fn latest(
        &self,
        remote: &Remote,
        max_bytes: u64,
    ) -> Result<Option<(u64, Bytes)>, BackendError> {
        // The newest may be retired between the listing and the read when
        // many writers are fast; list again then.
        for _ in 0..3 {
            let Some(n) = self.newest(remote).await? else {
                return Ok(None);
            };
            let key = self.key(remote, n)?;
            if let Some((bytes, _)) = remote.get_bounded(&key, max_bytes).await? {
                return Ok(Some((n, bytes)));
            }
        }
        Err(BackendError::transient(
            "read",
            remote.key(self.dir)?.to_string(),
            "the newest generation kept disappearing while being read",
        ))
    }

    /// The number after `base` (`1` for an empty remote). A base at the
    /// maximum cannot have been written by tether: refused, naming it.
    pub fn next(&self, remote: &Remote, base: Option<u64>) -> Result<u64, BackendError> {
        match base {
            None => Ok(1),
            Some(n) => n.checked_add(1).ok_or_else(|| {
                let object = self
                    .key(remote, n)
                    .map(|k| k.to_string())
                    .unwrap_or_else(|_| format!("{}/{n:020}", self.dir));
                invalid(
                    object,
                    format!(
                        "generation {n} is the largest number there is, so no newer state can follow it; tether never writes it (a corrupt or hostile remote): refusing to push"
                    ),
                )
            }),
        }
    }

    /// Creates generation `m` unless it exists.
    pub async fn create(
        &self,
        remote: &Remote,
        m: u64,
        bytes: Bytes,
    ) -> Result<CreateOutcome, BackendError> {
        let key = self.key(remote, m)?;
        match remote.put(&key, bytes.clone(), PutMode::Create).await {
            Ok(r) => Ok(CreateOutcome::Created(Written {
                generation: m,
                e_tag: r.e_tag,
                bytes,
            })),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(CreateOutcome::Taken),
            Err(e @ object_store::Error::NotImplemented { .. }) => {
                Err(BackendError::Config(format!(
                    "{}: the store cannot create objects only if absent ({}); tether needs that to keep writers from overwriting each other (for S3, leave aws_conditional_put at its default, etag)",
                    remote.describe,
                    flatten(&e)
                )))
            }
            Err(e) => Err(remote_err("put", &key, e)),
        }
    }

    /// Step 4 of the protocol: is `written` part of the newest state?
    pub async fn confirm(
        &self,
        remote: &Remote,
        written: &Written,
    ) -> Result<Confirmation, BackendError> {
        let m = written.generation;
        let key = self.key(remote, m)?;
        // (a) It is still there and it is ours.
        let ours = match remote.store.head(&key).await {
            Ok(meta) => match (&written.e_tag, &meta.e_tag) {
                (Some(a), Some(b)) => a == b,
                // No ETags to compare: compare the bytes.
                _ => remote
                    .get_bounded(&key, written.bytes.len() as u64)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|(b, _)| b == written.bytes),
            },
            Err(object_store::Error::NotFound { .. }) => {
                return Ok(Confirmation::Orphaned(format!(
                    "{key} disappeared right after it was created (retired or deleted)"
                )));
            }
            Err(e) => return Err(remote_err("head", &key, e)),
        };
        if !ours {
            tracing::warn!(object = %key, "a generation this writer created holds other content: the store may not honour create-if-absent");
            return Ok(Confirmation::Orphaned(format!(
                "{key} holds another writer's content (does the store honour create-if-absent?)"
            )));
        }
        // (b) Its number had not been retired.
        let floor = self.floor(remote).await?;
        let newest = self.newest(remote).await?.unwrap_or(0);
        if newest < floor {
            return Err(invalid(
                self.floor_key(remote, floor)?,
                format!(
                    "says every generation below {floor} was retired, but the newest one is {newest}: edited by hand or hostile; refusing to push"
                ),
            ));
        }
        if m < floor {
            return Ok(Confirmation::Orphaned(format!(
                "{key} re-used a number retired while this push ran (the floor is {floor}); nobody builds on it"
            )));
        }
        // (c) It is the newest or a newer one exists (built on it, by (b)).
        if newest < m {
            return Ok(Confirmation::Orphaned(format!(
                "{key} is missing from the listing of {} (the newest listed is {newest})",
                self.dir
            )));
        }
        Ok(Confirmation::Confirmed { newest, floor })
    }

    /// Removes an orphaned generation this writer created: below the floor
    /// nobody reads it. Best effort.
    pub async fn remove_orphan(&self, remote: &Remote, written: &Written) {
        let Ok(key) = self.key(remote, written.generation) else {
            return;
        };
        match self.floor(remote).await {
            Ok(floor) if written.generation < floor => {
                if let Err(e) = remote.delete(&key).await {
                    tracing::debug!(error = %e, "could not delete an orphaned generation");
                }
            }
            _ => {}
        }
    }

    /// Step 5: retires generations below `newest + 1 − keep` once
    /// `batch` of them piled up above `floor` (or always with `force`).
    /// Best effort: failures only cost storage and are logged.
    pub async fn retire(&self, remote: &Remote, newest: u64, floor: u64, force: bool) {
        let Some(f) = newest.checked_add(1).and_then(|n| n.checked_sub(self.keep)) else {
            return;
        };
        let due = f.saturating_sub(floor) >= self.batch.max(1);
        if f <= floor || !(due || force) {
            return;
        }
        if let Err(e) = self.retire_below(remote, f).await {
            tracing::debug!(error = %e, "could not retire old generations");
        }
    }

    async fn retire_below(&self, remote: &Remote, f: u64) -> Result<(), BackendError> {
        let marker = self.floor_key(remote, f)?;
        remote
            .put(&marker, Bytes::new(), PutMode::Overwrite)
            .await
            .map_err(|e| remote_err("put", &marker, e))?;
        // Lower markers first (the highest stays), then the generations.
        // A listing holds one of the store's request permits while it is
        // read, so names are collected (at most RETIRE_ROUND at a time)
        // and the listing dropped before anything is deleted; a full round
        // lists again.
        for dir in [self.floor_dir, self.dir] {
            let key = remote.key(dir)?;
            for _round in 0..RETIRE_ROUNDS {
                let doomed: Vec<Path> = remote
                    .store
                    .list(Some(&key))
                    .map_err(|e| remote_err("list", &key, e))
                    .try_filter_map(|meta| async move {
                        Ok(parse_number(meta.location.filename().unwrap_or(""))
                            .filter(|n| *n < f)
                            .map(|_| meta.location))
                    })
                    .take(RETIRE_ROUND)
                    .try_collect()
                    .await?;
                let full = doomed.len() == RETIRE_ROUND;
                stream::iter(doomed)
                    .map(|location| async move { remote.delete(&location).await })
                    .buffer_unordered(remote.requests)
                    .try_collect::<Vec<()>>()
                    .await?;
                if !full {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// A generation number as stored: exactly 20 decimal digits.
fn parse_number(name: &str) -> Option<u64> {
    if name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()) {
        name.parse().ok()
    } else {
        None
    }
}

/// Deletes `keys`, best effort (for what a failed attempt left behind).
pub(crate) async fn delete_all(remote: &Remote, keys: Vec<Path>) {
    stream::iter(keys)
        .for_each_concurrent(remote.requests, |k| async move {
            if let Err(e) = remote.delete(&k).await {
                tracing::debug!(error = %e, "could not delete a leftover object");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const G: Generations = Generations {
        dir: "heads",
        floor_dir: "heads-floor",
        keep: 3,
        batch: 2,
    };

    /// A budget of one request at a time: a step that waited for a
    /// request while holding another (a listing still open) would hang.
    fn remote() -> Remote {
        Remote {
            store: Arc::new(object_store::memory::InMemory::new()),
            prefix: Path::parse("p").unwrap(),
            describe: "memory".into(),
            attributes: Arc::new(true.into()),
            requests: 1,
        }
        .with_request_budget(1)
    }

    async fn create(r: &Remote, m: u64) -> Written {
        match G.create(r, m, Bytes::from(format!("g{m}"))).await.unwrap() {
            CreateOutcome::Created(w) => w,
            CreateOutcome::Taken => panic!("{m} taken"),
        }
    }

    #[test]
    fn numbers_are_twenty_digits_and_never_wrap() {
        assert_eq!(parse_number("00000000000000000042"), Some(42));
        assert_eq!(parse_number("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_number("99999999999999999999"), None);
        assert_eq!(parse_number("+0000000000000000042"), None);
        assert_eq!(parse_number("42"), None);
        let r = remote();
        assert_eq!(G.next(&r, None).unwrap(), 1);
        assert_eq!(G.next(&r, Some(41)).unwrap(), 42);
        let e = G.next(&r, Some(u64::MAX)).unwrap_err().to_string();
        assert!(e.contains("p/heads/18446744073709551615"), "{e}");
    }

    #[tokio::test]
    async fn a_created_generation_is_confirmed_and_a_taken_one_is_not_created() {
        let r = remote();
        let w1 = create(&r, 1).await;
        assert_eq!(
            G.confirm(&r, &w1).await.unwrap(),
            Confirmation::Confirmed {
                newest: 1,
                floor: 0
            }
        );
        assert_eq!(
            G.create(&r, 1, Bytes::from_static(b"other")).await.unwrap(),
            CreateOutcome::Taken
        );
        // A descendant exists: still confirmed.
        create(&r, 2).await;
        assert!(matches!(
            G.confirm(&r, &w1).await.unwrap(),
            Confirmation::Confirmed { newest: 2, .. }
        ));
    }

    /// Fails instead of hanging when a step deadlocks on the budget.
    async fn within_bound<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(std::time::Duration::from_secs(60), f)
            .await
            .expect("deadlocked on the request budget of 1")
    }

    #[tokio::test]
    async fn retiring_never_makes_a_number_confirmable_again() {
        within_bound(retiring_scenario()).await;
    }

    #[tokio::test]
    async fn retiring_more_than_one_listing_round_removes_them_all() {
        within_bound(async {
            let r = remote();
            let n = (RETIRE_ROUND * 2 + 10) as u64;
            for m in 1..=n {
                r.put(&G.key(&r, m).unwrap(), Bytes::new(), PutMode::Overwrite)
                    .await
                    .unwrap();
            }
            G.retire(&r, n, 0, false).await;
            let left: Vec<_> = r
                .store
                .list(Some(&r.key(G.dir).unwrap()))
                .try_collect()
                .await
                .unwrap();
            assert_eq!(left.len() as u64, G.keep, "{left:?}");
            assert_eq!(G.floor(&r).await.unwrap(), n + 1 - G.keep);
        })
        .await;
    }

    async fn retiring_scenario() {
        let r = remote();
        for m in 1..=6 {
            create(&r, m).await;
        }
        // keep 3: generations below 4 go, behind a floor marker.
        G.retire(&r, 6, 0, false).await;
        assert_eq!(G.floor(&r).await.unwrap(), 4);
        assert!(r.store.head(&G.key(&r, 3).unwrap()).await.is_err());
        assert!(r.store.head(&G.key(&r, 4).unwrap()).await.is_ok());
        // A slow writer re-creates number 2: created, but orphaned.
        let late = create(&r, 2).await;
        match G.confirm(&r, &late).await.unwrap() {
            Confirmation::Orphaned(why) => assert!(why.contains("retired"), "{why}"),
            c => panic!("{c:?}"),
        }
        G.remove_orphan(&r, &late).await;
        assert!(r.store.head(&G.key(&r, 2).unwrap()).await.is_err());
        // Not due yet (batch 2): nothing happens.
        create(&r, 7).await;
        G.retire(&r, 7, 4, false).await;
        assert!(r.store.head(&G.key(&r, 4).unwrap()).await.is_ok());
        // Due: the old marker goes, the new one stays.
        create(&r, 8).await;
        G.retire(&r, 8, 4, false).await;
        assert_eq!(G.floor(&r).await.unwrap(), 6);
        assert!(r.store.head(&G.floor_key(&r, 4).unwrap()).await.is_err());
        assert_eq!(G.newest(&r).await.unwrap(), Some(8));
    }

    #[tokio::test]
    async fn a_floor_above_the_newest_is_refused() {
        let r = remote();
        let w = create(&r, 1).await;
        r.put(
            &G.floor_key(&r, 50).unwrap(),
            Bytes::new(),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
        let e = G.confirm(&r, &w).await.unwrap_err().to_string();
        assert!(e.contains("heads-floor/00000000000000000050"), "{e}");
    }
}
