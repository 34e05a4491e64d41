//! When to renew what, as pure functions of the stored certificates, the
//! request, the policy and an injected `now`.
//!
//! The sequence of a CA rotation (see also the crate docs):
//!
//! 1. The current CA enters its rotation window (`ca_renew_before` before
//!    it expires). One step makes a new CA, cross-signs it with the old CA,
//!    issues a new serving certificate from the new CA, and writes
//!    `ca.crt = [new, old]`, `tls.crt = [leaf, cross-signed new CA]`.
//!    Clients trusting the old CA only (a stale `caBundle`) verify through
//!    the cross-signed certificate; clients with the new bundle verify
//!    directly.
//! 2. `ca_overlap` after that serving certificate was issued (time for every
//!    replica to load it: at least one check interval), the old CA is
//!    dropped: `ca.crt = [new]`. The cross-signed certificate stays in
//!    `tls.crt` until it expires with the old CA, so even a client that never
//!    refreshed its bundle keeps working for as long as the old CA lives.
//!
//! A CA that is missing, expired, or whose key is gone is replaced at once
//! (without cross-signing when its key is gone); CAs of the old bundle stay
//! in `ca.crt` for the overlap all the same.

use std::fmt;
use std::time::Duration;

use time::OffsetDateTime;

use crate::bundle::{CertBundle, Existing};
use crate::error::{Error, Result};
use crate::generate::{BACKDATE, CertRequest, PemPair, generate_ca, issue_serving_cert};
use crate::inspect::{CertInfo, parse_pem_certs};

const DAY: u64 = 24 * 60 * 60;

/// Lifetimes and lookaheads of the certificates.
///
/// The defaults, and why:
///
/// * `serving_validity` 90 days, renewed `serving_renew_before` 30 days
///   ahead: renewal is free (swapped in memory, no restart), so a short
///   lifetime limits what a leaked serving key is worth, and a month of
///   lookahead survives a long outage of the controller.
/// * `ca_validity` 5 years, rotated `ca_renew_before` 180 days ahead: the CA
///   is rotated automatically with overlap, so there is no reason for the
///   100-year CAs of one-shot tools, but rotations stay rare events.
/// * `ca_overlap` 24 hours: how long the old CA stays in the `caBundle`
///   after the first serving certificate of the new CA was issued. It must
///   exceed the check interval of every replica's rotation loop (default
///   1 hour) so that all of them serve the new certificate before the old
///   CA leaves the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Lifetime of a new CA.
    pub ca_validity: Duration,
    /// Rotate the CA when it expires within this long.
    pub ca_renew_before: Duration,
    /// Lifetime of a new serving certificate (capped at the CA's expiry).
    pub serving_validity: Duration,
    /// Renew the serving certificate when it expires within this long.
    pub serving_renew_before: Duration,
    /// How long the previous CA stays trusted after the switch.
    pub ca_overlap: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            ca_validity: Duration::from_secs(5 * 365 * DAY),
            ca_renew_before: Duration::from_secs(180 * DAY),
            serving_validity: Duration::from_secs(90 * DAY),
            serving_renew_before: Duration::from_secs(30 * DAY),
            ca_overlap: Duration::from_secs(DAY),
        }
    }
}

impl RotationPolicy {
    /// Checks that the durations make sense together:
    /// `0 < serving_renew_before < serving_validity`,
    /// `serving_renew_before < ca_renew_before < ca_validity` (so a serving
    /// certificate capped at its CA's expiry is never renewed from the old
    /// CA in a loop), `ca_overlap > 0`, and everything below 1000 years.
    pub fn validate(&self) -> Result<()> {
        let limit = Duration::from_secs(1000 * 365 * DAY);
        let checks = [
            (
                self.serving_renew_before.is_zero(),
                "serving_renew_before must be positive",
            ),
            (
                self.serving_renew_before >= self.serving_validity,
                "serving_renew_before must be shorter than serving_validity",
            ),
            (
                self.serving_renew_before >= self.ca_renew_before,
                "serving_renew_before must be shorter than ca_renew_before",
            ),
            (
                self.ca_renew_before >= self.ca_validity,
                "ca_renew_before must be shorter than ca_validity",
            ),
            (self.ca_overlap.is_zero(), "ca_overlap must be positive"),
            (
                [
                    self.ca_validity,
                    self.ca_renew_before,
                    self.serving_validity,
                    self.serving_renew_before,
                    self.ca_overlap,
                ]
                .iter()
                .any(|d| *d > limit),
                "durations must be below 1000 years",
            ),
        ];
        match checks.iter().find(|(bad, _)| *bad) {
            Some((_, why)) => Err(Error::InvalidPolicy(format!("{why} ({self:?})"))),
            None => Ok(()),
        }
    }
}

/// Why a new CA is made.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NewCaReason {
    /// No CA certificate matching a CA key was found (first run, or the key
    /// is missing or broken).
    Missing,
    /// The current CA has expired; no overlap is possible.
    Expired {
        /// When it expired.
        not_after: OffsetDateTime,
    },
    /// The current CA entered its rotation window; rotated with overlap.
    DueForRotation {
        /// When it expires.
        not_after: OffsetDateTime,
    },
}

/// Why a new serving certificate is issued.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NewServingReason {
    /// A new CA was made, and serving certificates must come from it.
    NewCa,
    /// No usable serving certificate and key were found.
    Missing,
    /// The serving certificate was not issued by the current CA.
    NotSignedByCurrentCa,
    /// The requested DNS names or IP addresses differ from the certificate's.
    NamesChanged {
        /// Requested names not in the certificate.
        added: Vec<String>,
        /// Names in the certificate no longer requested.
        removed: Vec<String>,
    },
    /// The certificate expires within `serving_renew_before` (or has expired).
    Expiring {
        /// When it expires.
        not_after: OffsetDateTime,
    },
}

impl fmt::Display for NewCaReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NewCaReason::Missing => f.write_str("no CA yet"),
            NewCaReason::Expired { not_after } => {
                write!(f, "the CA expired on {}", day(*not_after))
            }
            NewCaReason::DueForRotation { not_after } => {
                write!(
                    f,
                    "the CA expires on {}: rotating with overlap",
                    day(*not_after)
                )
            }
        }
    }
}

impl fmt::Display for NewServingReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NewServingReason::NewCa => f.write_str("issued by the new CA"),
            NewServingReason::Missing => f.write_str("none yet"),
            NewServingReason::NotSignedByCurrentCa => f.write_str("not issued by the current CA"),
            NewServingReason::NamesChanged { added, removed } => {
                write!(f, "names changed")?;
                if !added.is_empty() {
                    write!(f, ", added {}", added.join(", "))?;
                }
                if !removed.is_empty() {
                    write!(f, ", removed {}", removed.join(", "))?;
                }
                Ok(())
            }
            NewServingReason::Expiring { not_after } => {
                write!(f, "it expires on {}", day(*not_after))
            }
        }
    }
}

/// `YYYY-MM-DD` of a time, for messages.
fn day(t: OffsetDateTime) -> String {
    let d = t.date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// What one renewal step will do. Empty (see [`RenewalPlan::is_noop`]) when
/// the stored certificates are reused as they are.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RenewalPlan {
    /// Make a new CA, and why.
    pub new_ca: Option<NewCaReason>,
    /// Issue a new serving certificate, and why.
    pub new_serving_cert: Option<NewServingReason>,
    /// CAs to drop from the bundle (overlap over, or expired).
    pub retire_cas: Vec<CertInfo>,
}

impl RenewalPlan {
    /// Whether nothing needs to change.
    pub fn is_noop(&self) -> bool {
        self.new_ca.is_none() && self.new_serving_cert.is_none() && self.retire_cas.is_empty()
    }
}

impl fmt::Display for RenewalPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_noop() {
            return f.write_str("reuse the stored certificates");
        }
        let mut parts = Vec::new();
        if let Some(reason) = &self.new_ca {
            parts.push(format!("new CA ({reason})"));
        }
        if let Some(reason) = &self.new_serving_cert {
            parts.push(format!("new serving certificate ({reason})"));
        }
        for ca in &self.retire_cas {
            parts.push(format!("drop CA {:?} from the bundle", ca.subject));
        }
        f.write_str(&parts.join("; "))
    }
}

fn span(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

/// `now >= deadline - lookahead`, without overflow.
fn within(deadline: OffsetDateTime, lookahead: Duration, now: OffsetDateTime) -> bool {
    match deadline.checked_sub(span(lookahead)) {
        Some(start) => now >= start,
        None => true,
    }
}

/// Decides what to renew. Pure: no I/O, no clock, no randomness.
pub(crate) fn plan_renewal(
    existing: &Existing,
    request: &CertRequest,
    policy: &RotationPolicy,
    now: OffsetDateTime,
) -> RenewalPlan {
    let mut plan = RenewalPlan::default();

    plan.new_ca = match &existing.current_ca {
        None => Some(NewCaReason::Missing),
        Some((ca, _)) if now >= ca.not_after => Some(NewCaReason::Expired {
            not_after: ca.not_after,
        }),
        Some((ca, _)) if within(ca.not_after, policy.ca_renew_before, now) => {
            Some(NewCaReason::DueForRotation {
                not_after: ca.not_after,
            })
        }
        Some(_) => None,
    };

    plan.new_serving_cert = if plan.new_ca.is_some() {
        Some(NewServingReason::NewCa)
    } else {
        serving_reason(existing, request, policy, now)
    };

    // Previous CAs: dropped once expired, or once the overlap is over. The
    // overlap runs from the issue time of the first serving certificate
    // signed by the current CA; while a new serving certificate is being
    // issued in this very step, nothing but expired CAs is dropped.
    let overlap_over = match (&plan.new_serving_cert, &existing.serving) {
        (None, Some((chain, _))) => {
            let issued = chain[0].not_before + span(BACKDATE);
            match issued.checked_add(span(policy.ca_overlap)) {
                Some(end) => now >= end,
                None => false,
            }
        }
        _ => false,
    };
    plan.retire_cas = existing
        .other_cas
        .iter()
        .filter(|ca| overlap_over || !ca.is_ca || now >= ca.not_after)
        .cloned()
        .collect();
    // With a new CA, the current one becomes a previous CA unless expired;
    // an expired one is simply not carried over (see `apply_plan`).
    plan
}

fn serving_reason(
    existing: &Existing,
    request: &CertRequest,
    policy: &RotationPolicy,
    now: OffsetDateTime,
) -> Option<NewServingReason> {
    let Some((chain, _)) = &existing.serving else {
        return Some(NewServingReason::Missing);
    };
    let Some((ca, _)) = &existing.current_ca else {
        return Some(NewServingReason::NotSignedByCurrentCa);
    };
    let leaf = &chain[0];
    if !leaf.is_signed_by(ca) {
        return Some(NewServingReason::NotSignedByCurrentCa);
    }
    let mut wanted: Vec<String> = request.dns_names();
    wanted.extend(request.ip_addresses().iter().map(|ip| ip.to_string()));
    let mut have: Vec<String> = leaf.dns_names.clone();
    have.extend(leaf.ip_addresses.iter().map(|ip| ip.to_string()));
    let added: Vec<String> = wanted
        .iter()
        .filter(|n| !have.contains(n))
        .cloned()
        .collect();
    let removed: Vec<String> = have
        .iter()
        .filter(|n| !wanted.contains(n))
        .cloned()
        .collect();
    if !added.is_empty() || !removed.is_empty() {
        return Some(NewServingReason::NamesChanged { added, removed });
    }
    if within(leaf.not_after, policy.serving_renew_before, now) {
        return Some(NewServingReason::Expiring {
            not_after: leaf.not_after,
        });
    }
    None
}

/// Carries out a plan: generates what it asks for and returns the complete
/// bundle to store. The only impurity is key generation's randomness.
pub(crate) fn apply_plan(
    existing: &Existing,
    plan: &RenewalPlan,
    request: &CertRequest,
    policy: &RotationPolicy,
    now: OffsetDateTime,
) -> Result<CertBundle> {
    let until = |d: Duration| {
        now.checked_add(span(d)).ok_or_else(|| {
            Error::InvalidPolicy(format!("{d:?} after {now} is beyond the year 9999"))
        })
    };
    let kept_others = existing
        .other_cas
        .iter()
        .filter(|ca| !plan.retire_cas.contains(ca))
        .cloned();

    let mut cross_signed = None;
    let (ca_info, ca_pair, ca_certs) = match (&plan.new_ca, &existing.current_ca) {
        (None, Some((ca, key))) => {
            let pair = PemPair {
                cert_pem: ca.to_pem(),
                key_pem: key.clone(),
            };
            let mut all = vec![ca.clone()];
            all.extend(kept_others);
            (ca.clone(), pair, all)
        }
        (_, old) => {
            let old_valid = old.as_ref().filter(|(ca, _)| now < ca.not_after);
            let old_pair = old_valid.map(|(ca, key)| {
                (
                    PemPair {
                        cert_pem: ca.to_pem(),
                        key_pem: key.clone(),
                    },
                    ca.not_after,
                )
            });
            let new = generate_ca(
                request,
                now,
                until(policy.ca_validity)?,
                old_pair
                    .as_ref()
                    .map(|(pair, not_after)| (pair, *not_after)),
            )?;
            let info = single_cert(&new.ca.cert_pem, "the new CA certificate")?;
            if let Some(pem) = &new.cross_signed_pem {
                cross_signed = Some(single_cert(pem, "the cross-signed CA certificate")?);
            }
            let mut all = vec![info.clone()];
            all.extend(old_valid.map(|(ca, _)| ca.clone()));
            all.extend(kept_others.filter(|ca| now < ca.not_after));
            (info, new.ca, all)
        }
    };

    let (serving_chain, serving_key) = match (&plan.new_serving_cert, &existing.serving) {
        (None, Some((chain, key))) => (chain.clone(), key.clone()),
        _ => {
            let not_after = until(policy.serving_validity)?.min(ca_info.not_after);
            let leaf = issue_serving_cert(request, &ca_pair, now, not_after)?;
            let mut chain = vec![single_cert(&leaf.cert_pem, "the new serving certificate")?];
            match cross_signed {
                Some(cross) => chain.push(cross),
                None => {
                    // Keep intermediates that certify the current CA's key
                    // (the cross-signed CA of an earlier rotation) while valid.
                    if let Some((old_chain, _)) = &existing.serving {
                        chain.extend(
                            old_chain
                                .iter()
                                .skip(1)
                                .filter(|c| {
                                    c.subject_der == ca_info.subject_der
                                        && c.spki == ca_info.spki
                                        && now < c.not_after
                                })
                                .cloned(),
                        );
                    }
                }
            }
            (chain, leaf.key_pem)
        }
    };

    Ok(CertBundle {
        ca_certs,
        ca_key: ca_pair.key_pem,
        serving_chain,
        serving_key,
    })
}

fn single_cert(pem: &str, what: &str) -> Result<CertInfo> {
    let mut certs = parse_pem_certs(pem, what)?;
    Ok(certs.remove(0))
}

/// Generates a complete new bundle (new CA, new serving certificate) for
/// `request`, valid from `now`. Pure apart from key generation; used by
/// [`ensure_certs`](crate::ensure_certs) on first run, and handy for tests
/// and benchmarks.
pub fn generate_bundle(
    request: &CertRequest,
    policy: &RotationPolicy,
    now: OffsetDateTime,
) -> Result<CertBundle> {
    policy.validate()?;
    let existing = Existing::default();
    let plan = plan_renewal(&existing, request, policy, now);
    apply_plan(&existing, &plan, request, policy, now)
}

/// Plans and applies one renewal step on what a store holds. Returns the
/// plan and, unless the plan is a no-op, the new bundle; with a no-op plan
/// the bundle is the stored one.
pub(crate) fn renew(
    existing: &Existing,
    request: &CertRequest,
    policy: &RotationPolicy,
    now: OffsetDateTime,
) -> Result<(RenewalPlan, Option<CertBundle>)> {
    let plan = plan_renewal(existing, request, policy, now);
    if plan.is_noop() {
        return Ok((plan, CertBundle::from_existing(existing)));
    }
    let bundle = apply_plan(existing, &plan, request, policy, now)?;
    Ok((plan, Some(bundle)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::bundle::PemFiles;

    const HOUR: Duration = Duration::from_secs(3600);

    fn policy() -> RotationPolicy {
        RotationPolicy {
            ca_validity: 100 * HOUR,
            ca_renew_before: 30 * HOUR,
            serving_validity: 20 * HOUR,
            serving_renew_before: 5 * HOUR,
            ca_overlap: 2 * HOUR,
        }
    }

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn at(hours: i64) -> OffsetDateTime {
        t0() + time::Duration::hours(hours)
    }

    fn request() -> CertRequest {
        CertRequest::new("hook", "ns").unwrap()
    }

    fn existing(bundle: &CertBundle) -> Existing {
        Existing::from_files(&bundle.to_pem_files(), "test")
    }

    fn step(bundle: &CertBundle, now: OffsetDateTime) -> (RenewalPlan, CertBundle) {
        let (plan, next) = renew(&existing(bundle), &request(), &policy(), now).unwrap();
        (plan, next.unwrap())
    }

    #[test]
    fn default_policy_is_valid_and_bad_ones_are_named() {
        RotationPolicy::default().validate().unwrap();
        policy().validate().unwrap();
        let bad = RotationPolicy {
            serving_renew_before: 20 * HOUR,
            ..policy()
        };
        let err = bad.validate().unwrap_err();
        assert!(err.to_string().contains("serving_renew_before"), "{err}");
        let bad = RotationPolicy {
            ca_renew_before: 4 * HOUR,
            ..policy()
        };
        assert!(bad.validate().is_err());
        let bad = RotationPolicy {
            ca_validity: Duration::MAX,
            ..policy()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn nothing_stored_means_new_ca_and_serving_cert() {
        let plan = plan_renewal(&Existing::default(), &request(), &policy(), t0());
        assert_eq!(plan.new_ca, Some(NewCaReason::Missing));
        assert_eq!(plan.new_serving_cert, Some(NewServingReason::NewCa));
    }

    #[test]
    fn fresh_bundle_is_reused_until_the_serving_lookahead() {
        let bundle = generate_bundle(&request(), &policy(), t0()).unwrap();
        let plan = plan_renewal(&existing(&bundle), &request(), &policy(), at(14));
        assert!(plan.is_noop(), "{plan}");
        let (plan, renewed) = step(&bundle, at(15));
        assert!(
            matches!(
                plan.new_serving_cert,
                Some(NewServingReason::Expiring { .. })
            ),
            "{plan}"
        );
        assert_eq!(plan.new_ca, None);
        assert_eq!(renewed.current_ca(), bundle.current_ca());
        assert_ne!(renewed.serving_cert(), bundle.serving_cert());
        assert_eq!(renewed.serving_cert().not_after, at(35));
    }

    #[test]
    fn changed_names_reissue_the_serving_cert_but_keep_the_ca() {
        let bundle = generate_bundle(&request(), &policy(), t0()).unwrap();
        let wider = request().with_dns_name("hook.example.com").unwrap();
        let plan = plan_renewal(&existing(&bundle), &wider, &policy(), at(1));
        assert_eq!(
            plan.new_serving_cert,
            Some(NewServingReason::NamesChanged {
                added: vec!["hook.example.com".into()],
                removed: vec![]
            })
        );
        let other = CertRequest::new("hook2", "ns").unwrap();
        let plan = plan_renewal(&existing(&bundle), &other, &policy(), at(1));
        assert!(matches!(
            plan.new_serving_cert,
            Some(NewServingReason::NamesChanged { ref removed, .. }) if removed.len() == 4
        ));
        assert_eq!(plan.new_ca, None);
    }

    #[test]
    fn ca_rotation_overlaps_then_drops_the_old_ca() {
        let first = generate_bundle(&request(), &policy(), t0()).unwrap();
        // CA expires at t0+100h; rotation window opens at 70h.
        let (plan, renewed) = step(&first, at(69));
        assert_eq!(plan.new_ca, None, "{plan}");
        let (plan, rotated) = step(&renewed, at(70));
        assert!(
            matches!(plan.new_ca, Some(NewCaReason::DueForRotation { .. })),
            "{plan}"
        );
        assert_eq!(rotated.ca_certs().len(), 2);
        assert_eq!(rotated.ca_certs()[1], *first.current_ca());
        assert_ne!(rotated.current_ca(), first.current_ca());
        // Serving chain: leaf from the new CA, then the cross-signed new CA.
        assert_eq!(rotated.serving_chain().len(), 2);
        let cross = &rotated.serving_chain()[1];
        assert!(rotated.serving_cert().is_signed_by(rotated.current_ca()));
        assert!(cross.is_signed_by(first.current_ca()));
        assert_eq!(cross.subject, rotated.current_ca().subject);
        assert_eq!(cross.not_after, first.current_ca().not_after);

        // During the overlap nothing changes.
        let plan = plan_renewal(&existing(&rotated), &request(), &policy(), at(71));
        assert!(plan.is_noop(), "{plan}");
        // After the overlap the old CA goes, the cross-signed cert stays.
        let (plan, settled) = step(&rotated, at(72));
        assert_eq!(plan.retire_cas, vec![first.current_ca().clone()]);
        assert_eq!(plan.new_serving_cert, None);
        assert_eq!(settled.ca_certs(), &[rotated.current_ca().clone()]);
        assert_eq!(settled.serving_chain(), rotated.serving_chain());
        let plan = plan_renewal(&existing(&settled), &request(), &policy(), at(73));
        assert!(plan.is_noop(), "{plan}");

        // A later serving renewal keeps the cross-signed cert while it is valid...
        let (_, renewed) = step(&settled, at(85));
        assert_eq!(renewed.serving_chain().len(), 2);
        assert_eq!(renewed.serving_chain()[1], *cross);
        // ...and drops it once the old CA (and so the cross cert) expired.
        let (_, renewed) = step(&renewed, at(101));
        assert_eq!(renewed.serving_chain().len(), 1);
    }

    #[test]
    fn expired_ca_is_replaced_without_overlap() {
        let first = generate_bundle(&request(), &policy(), t0()).unwrap();
        let (plan, next) = step(&first, at(100));
        assert!(matches!(plan.new_ca, Some(NewCaReason::Expired { .. })));
        assert_eq!(next.ca_certs().len(), 1);
        assert_eq!(next.serving_chain().len(), 1);
    }

    #[test]
    fn lost_ca_key_makes_a_new_ca_but_keeps_trusting_the_old_one() {
        let first = generate_bundle(&request(), &policy(), t0()).unwrap();
        let mut files = first.to_pem_files();
        files.ca_key = None;
        let existing = Existing::from_files(&files, "test");
        let plan = plan_renewal(&existing, &request(), &policy(), at(1));
        assert_eq!(plan.new_ca, Some(NewCaReason::Missing));
        let next = apply_plan(&existing, &plan, &request(), &policy(), at(1)).unwrap();
        assert_eq!(next.ca_certs().len(), 2);
        assert_eq!(next.ca_certs()[1], *first.current_ca());
        assert_eq!(
            next.serving_chain().len(),
            1,
            "no cross-signing without the key"
        );
    }

    #[test]
    fn broken_or_mismatched_serving_files_are_reissued() {
        let first = generate_bundle(&request(), &policy(), t0()).unwrap();
        let other = generate_bundle(&request(), &policy(), t0()).unwrap();
        let cases: Vec<(PemFiles, NewServingReason)> = vec![
            (
                PemFiles {
                    tls_crt: Some("garbage".into()),
                    ..first.to_pem_files()
                },
                NewServingReason::Missing,
            ),
            (
                PemFiles {
                    tls_key: Some(other.tls_key_pem().clone()),
                    ..first.to_pem_files()
                },
                NewServingReason::Missing,
            ),
            (
                PemFiles {
                    tls_crt: Some(other.tls_crt_pem()),
                    tls_key: Some(other.tls_key_pem().clone()),
                    ..first.to_pem_files()
                },
                NewServingReason::NotSignedByCurrentCa,
            ),
        ];
        for (files, reason) in cases {
            let existing = Existing::from_files(&files, "test");
            let plan = plan_renewal(&existing, &request(), &policy(), at(1));
            assert_eq!(plan.new_ca, None);
            assert_eq!(plan.new_serving_cert, Some(reason));
        }
    }

    #[test]
    fn plan_display_names_the_steps() {
        let plan = plan_renewal(&Existing::default(), &request(), &policy(), t0());
        let text = plan.to_string();
        assert!(text.contains("new CA (no CA yet)"), "{text}");
        assert!(
            text.contains("new serving certificate (issued by the new CA)"),
            "{text}"
        );
        assert_eq!(
            RenewalPlan::default().to_string(),
            "reuse the stored certificates"
        );
    }
}
