//! Which snapshots a forget policy keeps: a pure function of the snapshot
//! list, the policy and the current time.
//!
//! ```text
//! [(id, time)] + ForgetPolicy + now ──► apply ──► [Verdict { id, keep, reasons }] (newest first)
//! ```
//!
//! The rules are restic's `forget` policies, so what its users know holds:
//!
//! * `keep_last n` keeps the `n` newest snapshots.
//! * `keep_hourly n` (and daily, weekly, monthly, yearly): walking from the
//!   newest, the newest snapshot of each hour (day, …) that has one, for the
//!   `n` most recent such hours. Periods are calendar periods in **UTC**
//!   (restic uses the machine's local time; a pod's clock is UTC): hours
//!   `:00`–`:59`, days from midnight, ISO weeks Monday to Sunday, months,
//!   years. `u32::MAX` means unlimited.
//! * `keep_within d` keeps every snapshot taken less than `d` before the
//!   newest one (not before now: a writer that stopped a month ago keeps its
//!   last `d` of history).
//! * A snapshot kept by any rule is kept (the rules are OR-ed), with every
//!   reason that applies.
//! * When there are fewer periods with snapshots than a calendar rule asks
//!   for, the oldest snapshot is kept as well ("oldest daily snapshot"), as
//!   restic 0.17 does, so a young history is not cut short.
//! * **tether's own rules**: the newest snapshot is always kept; snapshots
//!   dated in the future (after `now`: a writer with a wrong clock) are
//!   kept and take no part in the rules; a policy without any rule is
//!   refused rather than read as "keep nothing".
//!
//! One spelling for every place a policy is written (`tether sync
//! --retention`, the `tether.dev/retention` annotation): `FromStr` reads
//! `within=24h,hourly=48,daily=14,weekly=8,monthly=6,yearly=2,last=10` and
//! `Display` writes it back. [`DEFAULT_SIDECAR_POLICY`] is what a sidecar
//! keeps unless told otherwise.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

/// What to keep (see the module doc). `None` leaves a rule out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForgetPolicy {
    /// The `n` newest snapshots.
    pub keep_last: Option<u32>,
    /// The newest snapshot of each of the last `n` hours that have one.
    pub keep_hourly: Option<u32>,
    /// … days.
    pub keep_daily: Option<u32>,
    /// … ISO weeks (Monday to Sunday).
    pub keep_weekly: Option<u32>,
    /// … months.
    pub keep_monthly: Option<u32>,
    /// … years.
    pub keep_yearly: Option<u32>,
    /// Every snapshot less than this older than the newest.
    pub keep_within: Option<Duration>,
}

impl ForgetPolicy {
    /// True when no rule is set.
    pub fn is_empty(&self) -> bool {
        self.keep_last.is_none()
            && self.keep_hourly.is_none()
            && self.keep_daily.is_none()
            && self.keep_weekly.is_none()
            && self.keep_monthly.is_none()
            && self.keep_yearly.is_none()
            && self.keep_within.is_none()
    }
}

/// tether's default policy for a sidecar's remote, as a policy spec (see
/// [`DEFAULT_SIDECAR_POLICY`]).
pub const DEFAULT_SIDECAR_POLICY_SPEC: &str = "within=1h,hourly=48,daily=14,weekly=8";

/// tether's default policy for a sidecar's remote: every checkpoint of the
/// last hour (fine-grained undo of what was just typed), then the newest of
/// each hour for two days, of each day for two weeks and of each week for
/// two months. At the default 10 s checkpoint rate that is at most about
/// 360 + 47 + 12 + 6 ≈ 430 snapshots, however long the pod lives.
pub const DEFAULT_SIDECAR_POLICY: ForgetPolicy = ForgetPolicy {
    keep_last: None,
    keep_hourly: Some(48),
    keep_daily: Some(14),
    keep_weekly: Some(8),
    keep_monthly: None,
    keep_yearly: None,
    keep_within: Some(Duration::from_secs(3600)),
};

/// A policy spec that could not be read (see `ForgetPolicy`'s `FromStr`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("retention policy {spec:?}: {reason}")]
pub struct ParsePolicyError {
    /// The spec as given (a policy holds no secret).
    pub spec: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The rule names of a spec, in the order [`Display`](std::fmt::Display)
/// writes them.
const SPEC_KEYS: &str = "within, hourly, daily, weekly, monthly, yearly, last";

impl std::str::FromStr for ForgetPolicy {
    type Err = ParsePolicyError;

    /// Reads `within=24h,hourly=48,daily=14,weekly=8,monthly=6,yearly=2,last=10`
    /// (any non-empty subset, any order, each rule once, spaces around
    /// `,` and `=` allowed): counts are whole numbers from 1, or
    /// `unlimited` (`u32::MAX`: every period that has a snapshot; for
    /// `last`, every snapshot); `within` is a duration (`90m`, `24h`, `7d`, `1h30m`; a
    /// bare number is seconds). An empty spec, and `off`, are refused: "no
    /// retention" is not a policy, and where it may be switched off the
    /// caller reads `off` itself.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| ParsePolicyError {
            spec: spec.to_owned(),
            reason,
        };
        let t = spec.trim();
        if t.is_empty() {
            return Err(err(format!(
                "no rule; give at least one of {SPEC_KEYS} (e.g. {DEFAULT_SIDECAR_POLICY_SPEC})"
            )));
        }
        if t.eq_ignore_ascii_case("off") {
            return Err(err(
                "\"off\" keeps everything and is not a policy; it is accepted only where retention can be switched off (tether sync --retention, the tether.dev/retention annotation)".into(),
            ));
        }
        let mut policy = ForgetPolicy::default();
        for part in t.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(err("an empty rule between commas".into()));
            }
            let Some((key, value)) = part.split_once('=') else {
                return Err(err(format!(
                    "{part:?} is not RULE=VALUE (rules: {SPEC_KEYS})"
                )));
            };
            let (key, value) = (key.trim(), value.trim());
            let count = || -> Result<u32, ParsePolicyError> {
                if value.eq_ignore_ascii_case("unlimited") {
                    return Ok(u32::MAX);
                }
                match value.parse::<u32>() {
                    Ok(0) => Err(err(format!(
                        "{key}=0 keeps nothing; leave the rule out, or give at least 1"
                    ))),
                    Ok(n) => Ok(n),
                    Err(_) => Err(err(format!(
                        "{key}={value:?}: expected a whole number from 1 to {} or \"unlimited\"",
                        u32::MAX
                    ))),
                }
            };
            let twice = match key {
                "last" => policy.keep_last.replace(count()?).is_some(),
                "hourly" => policy.keep_hourly.replace(count()?).is_some(),
                "daily" => policy.keep_daily.replace(count()?).is_some(),
                "weekly" => policy.keep_weekly.replace(count()?).is_some(),
                "monthly" => policy.keep_monthly.replace(count()?).is_some(),
                "yearly" => policy.keep_yearly.replace(count()?).is_some(),
                "within" => {
                    let d = if let Ok(secs) = value.parse::<u64>() {
                        Duration::from_secs(secs)
                    } else {
                        humantime::parse_duration(value).map_err(|e| {
                            err(format!(
                                "within={value:?}: {e} (expected a duration like 90m, 24h, 7d)"
                            ))
                        })?
                    };
                    if d.is_zero() {
                        return Err(err(
                            "within=0 keeps nothing but the newest; leave the rule out, or give a positive duration".into(),
                        ));
                    }
                    policy.keep_within.replace(d).is_some()
                }
                other => {
                    return Err(err(format!("unknown rule {other:?} (rules: {SPEC_KEYS})")));
                }
            };
            if twice {
                return Err(err(format!("{key} is given twice")));
            }
        }
        Ok(policy)
    }
}

/// A duration as a spec writes it: whole days, hours, minutes or seconds
/// when exact, else humantime's spelling (which parses back).
fn spec_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 || secs == 0 {
        return humantime::format_duration(d).to_string().replace(' ', "");
    }
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

/// The policy as a spec that [`FromStr`](std::str::FromStr) reads back to
/// the same policy (`within`, `hourly`, `daily`, `weekly`, `monthly`,
/// `yearly`, `last`, in that order). An empty policy is written as the
/// empty string (which the parser refuses, as [`apply`] does).
impl std::fmt::Display for ForgetPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(d) = self.keep_within {
            parts.push(format!("within={}", spec_duration(d)));
        }
        for (key, n) in [
            ("hourly", self.keep_hourly),
            ("daily", self.keep_daily),
            ("weekly", self.keep_weekly),
            ("monthly", self.keep_monthly),
            ("yearly", self.keep_yearly),
            ("last", self.keep_last),
        ] {
            match n {
                None => {}
                Some(u32::MAX) => parts.push(format!("{key}=unlimited")),
                Some(n) => parts.push(format!("{key}={n}")),
            }
        }
        f.write_str(&parts.join(","))
    }
}

/// Why a snapshot is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The newest snapshot (always kept).
    Newest,
    /// Dated after `now`; not judged.
    InTheFuture,
    /// One of the `keep_last` newest.
    Last,
    /// The newest of its hour.
    Hourly,
    /// The newest of its day.
    Daily,
    /// The newest of its week.
    Weekly,
    /// The newest of its month.
    Monthly,
    /// The newest of its year.
    Yearly,
    /// Within `keep_within` of the newest.
    Within,
    /// The oldest snapshot, kept because a calendar rule asked for more
    /// periods than have snapshots.
    Oldest(Period),
}

/// A calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Period {
    /// An hour.
    Hour,
    /// A day.
    Day,
    /// An ISO week.
    Week,
    /// A month.
    Month,
    /// A year.
    Year,
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Period::Hour => "hourly",
            Period::Day => "daily",
            Period::Week => "weekly",
            Period::Month => "monthly",
            Period::Year => "yearly",
        })
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Newest => f.write_str("newest"),
            Reason::InTheFuture => f.write_str("dated in the future"),
            Reason::Last => f.write_str("last snapshot"),
            Reason::Hourly => f.write_str("hourly snapshot"),
            Reason::Daily => f.write_str("daily snapshot"),
            Reason::Weekly => f.write_str("weekly snapshot"),
            Reason::Monthly => f.write_str("monthly snapshot"),
            Reason::Yearly => f.write_str("yearly snapshot"),
            Reason::Within => f.write_str("within the keep-within duration"),
            Reason::Oldest(p) => write!(f, "oldest {p} snapshot"),
        }
    }
}

/// One snapshot to judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its id.
    pub id: String,
    /// When it was taken.
    pub time: SystemTime,
}

/// What the policy says of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The snapshot's id.
    pub id: String,
    /// When it was taken.
    pub time: SystemTime,
    /// Every reason it is kept; empty when it is to be removed.
    pub reasons: Vec<Reason>,
}

impl Verdict {
    /// True when the snapshot is kept.
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// A policy that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// No rule is set: refusing rather than removing everything.
    #[error(
        "the forget policy has no rule (keep-last, keep-hourly, keep-daily, keep-weekly, keep-monthly, keep-yearly or keep-within); refusing to remove snapshots without one"
    )]
    Empty,
    /// A rule asks to keep zero periods.
    #[error("{0} 0 keeps nothing; leave it out, or give at least 1")]
    Zero(&'static str),
}

/// A calendar rule while it walks the snapshots.
struct Bucket {
    reason: Reason,
    period: Option<Period>,
    left: u32,
    last: Option<i64>,
}

fn bucket_of(period: Period, t: SystemTime) -> i64 {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    let Ok(dt) = OffsetDateTime::from_unix_timestamp(secs) else {
        // Beyond year ±9999: one bucket per second is as good as any.
        return secs;
    };
    let (year, month, day, hour) = (
        i64::from(dt.year()),
        i64::from(u8::from(dt.month())),
        i64::from(dt.day()),
        i64::from(dt.hour()),
    );
    match period {
        Period::Hour => ((year * 100 + month) * 100 + day) * 100 + hour,
        Period::Day => (year * 100 + month) * 100 + day,
        Period::Week => {
            let (iso_year, week, _) = dt.to_iso_week_date();
            i64::from(iso_year) * 100 + i64::from(week)
        }
        Period::Month => year * 100 + month,
        Period::Year => year,
    }
}

/// Judges every snapshot (see the module doc); verdicts are newest first
/// (ties by id).
pub fn apply(
    policy: &ForgetPolicy,
    snapshots: &[Candidate],
    now: SystemTime,
) -> Result<Vec<Verdict>, PolicyError> {
    if policy.is_empty() {
        return Err(PolicyError::Empty);
    }
    let rules = [
        ("keep-last", policy.keep_last, Reason::Last, None),
        (
            "keep-hourly",
            policy.keep_hourly,
            Reason::Hourly,
            Some(Period::Hour),
        ),
        (
            "keep-daily",
            policy.keep_daily,
            Reason::Daily,
            Some(Period::Day),
        ),
        (
            "keep-weekly",
            policy.keep_weekly,
            Reason::Weekly,
            Some(Period::Week),
        ),
        (
            "keep-monthly",
            policy.keep_monthly,
            Reason::Monthly,
            Some(Period::Month),
        ),
        (
            "keep-yearly",
            policy.keep_yearly,
            Reason::Yearly,
            Some(Period::Year),
        ),
    ];
    let mut buckets = Vec::new();
    for (name, n, reason, period) in rules {
        match n {
            None => {}
            Some(0) => return Err(PolicyError::Zero(name)),
            Some(left) => buckets.push(Bucket {
                reason,
                period,
                left,
                last: None,
            }),
        }
    }

    let mut verdicts: Vec<Verdict> = snapshots
        .iter()
        .map(|c| Verdict {
            id: c.id.clone(),
            time: c.time,
            reasons: Vec::new(),
        })
        .collect();
    verdicts.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.id.cmp(&b.id)));

    let mut judged: Vec<usize> = Vec::new();
    for (i, v) in verdicts.iter_mut().enumerate() {
        if v.time > now {
            v.reasons.push(Reason::InTheFuture);
        } else {
            judged.push(i);
        }
    }
    let newest = judged.first().map(|&i| verdicts[i].time);
    if let Some(&i) = judged.first() {
        verdicts[i].reasons.push(Reason::Newest);
    }
    for (k, &i) in judged.iter().enumerate() {
        let time = verdicts[i].time;
        for b in &mut buckets {
            if b.left == 0 {
                continue;
            }
            // keep-last: every snapshot is a period of its own.
            let key = match b.period {
                Some(p) => bucket_of(p, time),
                None => i64::try_from(k).unwrap_or(i64::MAX),
            };
            if b.last != Some(key) {
                b.last = Some(key);
                if b.left != u32::MAX {
                    b.left -= 1;
                }
                verdicts[i].reasons.push(b.reason);
            }
        }
        if let (Some(within), Some(newest)) = (policy.keep_within, newest)
            && newest.duration_since(time).is_ok_and(|age| age < within)
        {
            verdicts[i].reasons.push(Reason::Within);
        }
    }
    // Fewer periods than asked for: keep the oldest too (restic 0.17).
    if let Some(&oldest) = judged.last() {
        for b in &buckets {
            if let Some(period) = b.period
                && b.left > 0
                && b.left != u32::MAX
                && !verdicts[oldest].reasons.contains(&b.reason)
            {
                verdicts[oldest].reasons.push(Reason::Oldest(period));
            }
        }
    }
    for v in &mut verdicts {
        let unique: BTreeSet<Reason> = v.reasons.drain(..).collect();
        v.reasons = unique.into_iter().collect();
    }
    Ok(verdicts)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn at(dt: OffsetDateTime) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(dt.unix_timestamp()).unwrap())
    }

    fn snaps(times: &[OffsetDateTime]) -> Vec<Candidate> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| Candidate {
                id: format!("s{i:04}"),
                time: at(*t),
            })
            .collect()
    }

    fn kept(v: &[Verdict]) -> Vec<String> {
        v.iter()
            .filter(|v| v.keep())
            .map(|v| v.id.clone())
            .collect()
    }

    const NOW: OffsetDateTime = datetime!(2030-01-01 0:00 UTC);

    /// restic's documentation: one backup every Sunday for 12 weeks,
    /// `--keep-daily 4` keeps the last four.
    #[test]
    fn twelve_sundays_keep_daily_4_keeps_the_last_four() {
        let sundays: Vec<OffsetDateTime> = (0..12)
            .map(|w| datetime!(2019-09-01 11:00 UTC) + time::Duration::weeks(w))
            .collect();
        let s = snaps(&sundays);
        let policy = ForgetPolicy {
            keep_daily: Some(4),
            ..ForgetPolicy::default()
        };
        let v = apply(&policy, &s, at(NOW)).unwrap();
        assert_eq!(kept(&v), ["s0011", "s0010", "s0009", "s0008"]);
        assert_eq!(v[0].reasons, [Reason::Newest, Reason::Daily]);
        assert_eq!(v[3].reasons, [Reason::Daily]);
        assert_eq!(v.iter().filter(|v| !v.keep()).count(), 8);
        // The weeks are Monday to Sunday: 12 Sundays are 12 weeks.
        let weekly = ForgetPolicy {
            keep_weekly: Some(12),
            ..ForgetPolicy::default()
        };
        assert_eq!(kept(&apply(&weekly, &s, at(NOW)).unwrap()).len(), 12);
    }

    /// restic's documentation: daily backups, `--keep-daily 7 --keep-weekly
    /// 5 --keep-monthly 12 --keep-yearly 75` keep 7 dailies, 4 more
    /// end-of-week ones (the dailies hold one), 12 or 11 end-of-month and
    /// 75 or 74 end-of-year ones. Here: daily for 100 years.
    #[test]
    fn a_century_of_daily_backups() {
        let start = datetime!(1971-01-01 12:00 UTC);
        let days: Vec<OffsetDateTime> = (0..36_525)
            .map(|d| start + time::Duration::days(d))
            .collect();
        let s = snaps(&days);
        let policy = ForgetPolicy {
            keep_daily: Some(7),
            keep_weekly: Some(5),
            keep_monthly: Some(12),
            keep_yearly: Some(75),
            ..ForgetPolicy::default()
        };
        let v = apply(&policy, &s, at(datetime!(2100-01-01 0:00 UTC))).unwrap();
        let count = |r: Reason| v.iter().filter(|v| v.reasons.contains(&r)).count();
        assert_eq!(count(Reason::Daily), 7);
        assert_eq!(count(Reason::Weekly), 5);
        assert_eq!(count(Reason::Monthly), 12);
        assert_eq!(count(Reason::Yearly), 75);
        // The same by another method: group by period, take the newest of
        // each of the n newest periods, and unite.
        let mut expected = std::collections::BTreeSet::new();
        for (period, n) in [
            (Period::Day, 7),
            (Period::Week, 5),
            (Period::Month, 12),
            (Period::Year, 75),
        ] {
            let mut newest: std::collections::BTreeMap<i64, &Candidate> = Default::default();
            for c in &s {
                let e = newest.entry(bucket_of(period, c.time)).or_insert(c);
                if c.time > e.time {
                    *e = c;
                }
            }
            expected.extend(newest.values().rev().take(n).map(|c| c.id.clone()));
        }
        let got: std::collections::BTreeSet<String> = kept(&v).into_iter().collect();
        assert_eq!(got, expected);
        // restic's "7 + 4 + 12 or 11 + 75 or 74" is an estimate: the 7
        // dailies may hold two week ends, and so on.
        assert!((90..=99).contains(&got.len()), "{}", got.len());
        // Each yearly one is the last day of its year (but the newest).
        for y in v
            .iter()
            .filter(|v| v.reasons.contains(&Reason::Yearly))
            .skip(1)
        {
            let t = OffsetDateTime::from(y.time);
            assert_eq!((u8::from(t.month()), t.day()), (12, 31), "{t}");
        }
    }

    #[test]
    fn keep_last_and_hourly_are_ored_with_every_reason_listed() {
        let t0 = datetime!(2026-11-30 10:05 UTC);
        let times: Vec<OffsetDateTime> = [0, 10, 20, 65, 70, 130]
            .iter()
            .map(|m| t0 + time::Duration::minutes(*m))
            .collect();
        // 10:05 10:15 10:25 | 11:10 11:15 | 12:15
        let s = snaps(&times);
        let policy = ForgetPolicy {
            keep_last: Some(2),
            keep_hourly: Some(2),
            ..ForgetPolicy::default()
        };
        let v = apply(&policy, &s, at(NOW)).unwrap();
        assert_eq!(kept(&v), ["s0005", "s0004"]);
        assert_eq!(v[0].reasons, [Reason::Newest, Reason::Last, Reason::Hourly]);
        assert_eq!(v[1].reasons, [Reason::Last, Reason::Hourly]);
        // Three hours asked, three exist: 10:25 is 10 o'clock's newest.
        let three = ForgetPolicy {
            keep_hourly: Some(3),
            ..ForgetPolicy::default()
        };
        assert_eq!(
            kept(&apply(&three, &s, at(NOW)).unwrap()),
            ["s0005", "s0004", "s0002"]
        );
        // Five asked, three exist: the oldest is kept as well.
        let five = ForgetPolicy {
            keep_hourly: Some(5),
            ..ForgetPolicy::default()
        };
        let v = apply(&five, &s, at(NOW)).unwrap();
        assert_eq!(kept(&v), ["s0005", "s0004", "s0002", "s0000"]);
        assert_eq!(v[5].reasons, [Reason::Oldest(Period::Hour)]);
        assert_eq!(v[5].reasons[0].to_string(), "oldest hourly snapshot");
        // Unlimited: every hour.
        let all = ForgetPolicy {
            keep_hourly: Some(u32::MAX),
            ..ForgetPolicy::default()
        };
        assert_eq!(kept(&apply(&all, &s, at(NOW)).unwrap()).len(), 3);
    }

    #[test]
    fn keep_within_counts_from_the_newest_snapshot_not_from_now() {
        let t0 = datetime!(2026-01-01 0:00 UTC);
        let s = snaps(&[
            t0,
            t0 + time::Duration::hours(20),
            t0 + time::Duration::hours(30),
            t0 + time::Duration::hours(48),
        ]);
        let policy = ForgetPolicy {
            keep_within: Some(Duration::from_secs(24 * 3600)),
            ..ForgetPolicy::default()
        };
        // "now" is four years later: the last day of history is kept.
        let v = apply(&policy, &s, at(NOW)).unwrap();
        assert_eq!(kept(&v), ["s0003", "s0002"]);
        assert_eq!(v[1].reasons, [Reason::Within]);
    }

    #[test]
    fn the_newest_and_future_snapshots_are_always_kept() {
        let t0 = datetime!(2026-01-01 0:00 UTC);
        let s = snaps(&[
            t0,
            t0 + time::Duration::days(1),
            t0 + time::Duration::days(3_000),
        ]);
        let policy = ForgetPolicy {
            keep_within: Some(Duration::from_secs(1)),
            ..ForgetPolicy::default()
        };
        let v = apply(&policy, &s, at(t0 + time::Duration::days(2))).unwrap();
        assert_eq!(kept(&v), ["s0002", "s0001"]);
        assert_eq!(v[0].reasons, [Reason::InTheFuture]);
        assert_eq!(v[1].reasons, [Reason::Newest, Reason::Within]);
        assert!(!v[2].keep());
    }

    #[test]
    fn an_empty_or_zero_policy_is_refused() {
        let s = snaps(&[datetime!(2026-01-01 0:00 UTC)]);
        assert_eq!(
            apply(&ForgetPolicy::default(), &s, at(NOW)),
            Err(PolicyError::Empty)
        );
        let zero = ForgetPolicy {
            keep_daily: Some(0),
            ..ForgetPolicy::default()
        };
        let e = apply(&zero, &s, at(NOW)).unwrap_err();
        assert!(e.to_string().contains("keep-daily 0"), "{e}");
        assert!(
            apply(
                &ForgetPolicy {
                    keep_last: Some(1),
                    ..ForgetPolicy::default()
                },
                &[],
                at(NOW)
            )
            .unwrap()
            .is_empty()
        );
    }

    #[test]
    fn a_spec_reads_every_rule_and_writes_itself_back() {
        let p: ForgetPolicy = "within=24h,hourly=48,daily=14,weekly=8,monthly=6,yearly=2,last=10"
            .parse()
            .unwrap();
        assert_eq!(
            p,
            ForgetPolicy {
                keep_last: Some(10),
                keep_hourly: Some(48),
                keep_daily: Some(14),
                keep_weekly: Some(8),
                keep_monthly: Some(6),
                keep_yearly: Some(2),
                keep_within: Some(Duration::from_secs(24 * 3600)),
            }
        );
        assert_eq!(
            p.to_string(),
            "within=1d,hourly=48,daily=14,weekly=8,monthly=6,yearly=2,last=10"
        );
        // Any subset, any order, spaces, `unlimited`, durations humantime reads.
        let q: ForgetPolicy = " daily = unlimited , within=1h30m,last=3 ".parse().unwrap();
        assert_eq!(q.keep_daily, Some(u32::MAX));
        assert_eq!(q.keep_within, Some(Duration::from_secs(5400)));
        assert_eq!(q.to_string(), "within=90m,daily=unlimited,last=3");
        assert_eq!(
            "within=90".parse::<ForgetPolicy>().unwrap().keep_within,
            Some(Duration::from_secs(90))
        );
        // Display round-trips through FromStr.
        for p in [
            p,
            q,
            DEFAULT_SIDECAR_POLICY,
            ForgetPolicy {
                keep_within: Some(Duration::from_millis(1500)),
                keep_last: Some(u32::MAX),
                ..ForgetPolicy::default()
            },
            ForgetPolicy {
                keep_within: Some(Duration::from_secs(3661)),
                keep_yearly: Some(1),
                ..ForgetPolicy::default()
            },
        ] {
            assert_eq!(p.to_string().parse::<ForgetPolicy>(), Ok(p), "{p}");
        }
    }

    #[test]
    fn the_default_sidecar_policy_is_its_spec_and_stays_bounded() {
        assert_eq!(
            DEFAULT_SIDECAR_POLICY_SPEC.parse::<ForgetPolicy>(),
            Ok(DEFAULT_SIDECAR_POLICY)
        );
        assert_eq!(
            DEFAULT_SIDECAR_POLICY.to_string(),
            DEFAULT_SIDECAR_POLICY_SPEC
        );
        // A checkpoint every 10 s for 100 days: at most ~430 kept.
        let start = datetime!(2026-01-01 0:00 UTC);
        let times: Vec<OffsetDateTime> = (0..100 * 8640)
            .map(|i| start + time::Duration::seconds(10 * i))
            .collect();
        let s = snaps(&times);
        let end = at(*times.last().unwrap());
        let v = apply(&DEFAULT_SIDECAR_POLICY, &s, end).unwrap();
        let n = kept(&v).len();
        assert!((400..=430).contains(&n), "{n}");
    }

    #[test]
    fn bad_specs_are_refused_with_a_reason() {
        for (spec, needle) in [
            ("", "no rule"),
            ("  ", "no rule"),
            ("off", "not a policy"),
            ("OFF", "not a policy"),
            ("daily", "not RULE=VALUE"),
            ("daily=", "expected a whole number"),
            ("daily=-1", "expected a whole number"),
            ("daily=1.5", "expected a whole number"),
            ("daily=4294967296", "expected a whole number"),
            ("daily=0", "daily=0 keeps nothing"),
            ("last=0", "last=0 keeps nothing"),
            ("daily=7,daily=8", "daily is given twice"),
            ("dayly=7", "unknown rule \"dayly\""),
            ("keep-daily=7", "unknown rule"),
            ("daily=7,,weekly=2", "empty rule"),
            ("daily=7,", "empty rule"),
            ("within=soon", "expected a duration"),
            ("within=0s", "within=0"),
            ("within=0", "within=0"),
        ] {
            let e = spec.parse::<ForgetPolicy>().unwrap_err();
            assert!(e.to_string().contains(needle), "{spec:?}: {e}");
            assert!(e.to_string().starts_with("retention policy "), "{e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    #[test]
    fn weeks_are_iso_weeks_across_a_year_end() {
        // Mon 2024-12-30 and Sun 2025-01-05 are both ISO week 2025-W01.
        let s = snaps(&[
            datetime!(2024-12-29 12:00 UTC), // Sunday, week 2024-W52
            datetime!(2024-12-30 12:00 UTC),
            datetime!(2025-01-05 12:00 UTC),
        ]);
        let policy = ForgetPolicy {
            keep_weekly: Some(2),
            ..ForgetPolicy::default()
        };
        assert_eq!(
            kept(&apply(&policy, &s, at(NOW)).unwrap()),
            ["s0002", "s0000"]
        );
    }
}
