//! The in-process view of session state that `revocation = "checked"`
//! validates against, so a validation costs a map lookup instead of a
//! database read.
//!
//! A session read from the database as live is remembered with the
//! moment its read *started*, and trusted for at most
//! `revocation_staleness_ms` after that moment. A revocation marks what it
//! covers (a session, every session of a user, or everything) once the
//! database has committed it; a remembered answer whose read started
//! before a mark on its session or user is never used again. So:
//!
//! - in the revoking process, a revocation is seen at once, including by
//!   validations whose database read was in flight while it committed;
//! - in other processes, by the time their remembered answer ages out:
//!   at most `revocation_staleness_ms` after the commit; on a database
//!   whose change feed sees every writer (PostgreSQL), as soon as the
//!   revocation's change arrives (the same marks, set by the feed).
//!
//! A session seen as ended (revoked or past its end) stays ended: it is
//! remembered as such without a time limit other than the cache's.
//!
//! Memory is bounded: at most [`MAX_SESSIONS`] remembered sessions (moka
//! evicts the rest, which only costs a database read), and marks live
//! only as long as an answer read before them could (`staleness`); more
//! than [`MAX_MARKS`] marks at once collapse into one mark on everything.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use truststream_core_db::{ChangeKind, RowChange, Value};
use truststream_core_realtime::feed::{FeedHealth, FeedTarget};

/// Most sessions remembered at once.
pub(crate) const MAX_SESSIONS: u64 = 100_000;
/// Most revocation marks kept at once (sessions and users together);
/// beyond it every remembered answer is dropped instead.
pub(crate) const MAX_MARKS: usize = 65_536;
/// Below this many marks, old ones are not looked for.
const PRUNE_FROM: usize = 1024;

/// What the view knows of a session.
#[derive(Clone)]
enum Known {
    /// Live when a read that started at `read_at` looked.
    Live {
        user_id: String,
        not_after: DateTime<Utc>,
        read_at: Instant,
    },
    /// Revoked or past its end: for good.
    Ended,
}

/// What [`RevocationView::check`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Known live and owned by the user asked about, recently enough.
    Live,
    /// Known ended, or owned by someone else.
    Ended,
    /// Not known (or no longer trusted): read the database.
    Unknown,
}

/// Revocations committed recently, each with the moment it was marked.
#[derive(Default)]
struct Marks {
    sessions: HashMap<String, Instant>,
    users: HashMap<String, Instant>,
    /// A mark on every session.
    all: Option<Instant>,
    /// Size past which old marks are dropped next (twice the marks left
    /// by the last pruning, so pruning costs O(1) per mark amortized; at
    /// most [`MAX_MARKS`]).
    prune_at: usize,
}

impl Marks {
    fn len(&self) -> usize {
        self.sessions.len() + self.users.len()
    }

    /// Whether a read started at `read_at` of session `sid` of `user_id`
    /// began after every mark that covers it.
    fn read_after_marks(&self, sid: &str, user_id: &str, read_at: Instant) -> bool {
        let after = |m: Option<&Instant>| m.is_none_or(|m| read_at > *m);
        after(self.all.as_ref())
            && (self.sessions.is_empty() || after(self.sessions.get(sid)))
            && (self.users.is_empty() || after(self.users.get(user_id)))
    }

    /// Drops marks older than `keep` (no answer read before them is
    /// trusted any longer); past [`MAX_MARKS`], replaces them all with one
    /// mark on everything.
    fn prune(&mut self, now: Instant, keep: Duration) {
        let fresh = |t: &mut Instant| now.duration_since(*t) <= keep;
        self.sessions.retain(|_, t| fresh(t));
        self.users.retain(|_, t| fresh(t));
        if self.all.as_mut().is_some_and(|t| !fresh(t)) {
            self.all = None;
        }
        if self.len() > MAX_MARKS {
            self.sessions = HashMap::new();
            self.users = HashMap::new();
            self.all = Some(now);
        }
        self.prune_at = (2 * self.len()).clamp(PRUNE_FROM, MAX_MARKS);
    }
}

/// The view itself: remembered sessions and revocation marks.
pub(crate) struct RevocationView {
    staleness: Duration,
    known: moka::sync::Cache<String, Known>,
    marks: Mutex<Marks>,
    /// The change feed's health, when one is followed.
    feed_health: FeedHealth,
    /// Name of the sessions table (the feed's changes are filtered on it).
    sessions_table: String,
}

impl RevocationView {
    /// A view trusting a live answer for `staleness` (zero: never
    /// remember; every validation reads the database).
    pub(crate) fn new(staleness: Duration, sessions_table: &str) -> Self {
        // Ended sessions stay ended; the time to live only bounds memory
        // (a live answer is checked against `staleness` on use).
        let ttl = staleness.max(Duration::from_secs(60));
        RevocationView {
            staleness,
            known: moka::sync::Cache::builder()
                .max_capacity(MAX_SESSIONS)
                .time_to_live(ttl)
                .build(),
            marks: Mutex::new(Marks::default()),
            feed_health: FeedHealth::default(),
            sessions_table: sessions_table.to_string(),
        }
    }

    /// Whether answers are remembered at all.
    pub(crate) fn enabled(&self) -> bool {
        !self.staleness.is_zero()
    }

    /// What the view knows of session `sid`, claimed by `user_id`, now.
    pub(crate) fn check(&self, sid: &str, user_id: &str) -> Verdict {
        if !self.enabled() {
            return Verdict::Unknown;
        }
        match self.known.get(sid) {
            None => Verdict::Unknown,
            Some(Known::Ended) => Verdict::Ended,
            Some(Known::Live {
                user_id: owner,
                not_after,
                read_at,
            }) => {
                if read_at.elapsed() >= self.staleness
                    || !self.marks().read_after_marks(sid, &owner, read_at)
                {
                    Verdict::Unknown
                } else if owner != user_id || not_after <= Utc::now() {
                    Verdict::Ended
                } else {
                    Verdict::Live
                }
            }
        }
    }

    /// Remembers what a database read that started at `read_at` found:
    /// `Some((user_id, not_after))` of a live session, `None` of an ended
    /// one (revoked or past its end). A session not found is not
    /// remembered.
    pub(crate) fn remember(
        &self,
        sid: &str,
        read_at: Instant,
        live: Option<(&str, DateTime<Utc>)>,
    ) {
        if !self.enabled() {
            return;
        }
        let known = match live {
            Some((user_id, not_after)) => Known::Live {
                user_id: user_id.to_string(),
                not_after,
                read_at,
            },
            None => Known::Ended,
        };
        self.known.insert(sid.to_string(), known);
    }

    /// Session `sid` was revoked (its commit is done): it is ended from now
    /// on, whatever reads in flight remember.
    pub(crate) fn revoked_session(&self, sid: &str) {
        if !self.enabled() {
            return;
        }
        self.maybe_revoked_session(sid);
        self.known.insert(sid.to_string(), Known::Ended);
    }

    /// Session `sid` may have been revoked (the database answered its
    /// revocation with an error, so whether it committed is unknown): no
    /// answer about it read before now is used again, and the next
    /// validation reads what the database holds.
    pub(crate) fn maybe_revoked_session(&self, sid: &str) {
        if !self.enabled() {
            return;
        }
        self.mark(|m, now| {
            m.sessions.insert(sid.to_string(), now);
        });
    }

    /// Sessions of `user_id` were revoked (all of them, or all but one):
    /// no answer about that user's sessions read before now is used again.
    pub(crate) fn revoked_user_sessions(&self, user_id: &str) {
        if !self.enabled() {
            return;
        }
        self.mark(|m, now| {
            m.users.insert(user_id.to_string(), now);
        });
    }

    /// Something may have been revoked without the view being told which
    /// session: no answer read before now is used again.
    pub(crate) fn revoked_anything(&self) {
        if !self.enabled() {
            return;
        }
        self.mark(|m, now| m.all = Some(now));
    }

    fn mark(&self, f: impl FnOnce(&mut Marks, Instant)) {
        let mut marks = self.marks();
        // The mark's moment is taken under the lock and after the commit:
        // every read that starts later sees the revocation.
        let now = Instant::now();
        f(&mut marks, now);
        if marks.len() > marks.prune_at.max(PRUNE_FROM) {
            marks.prune(now, self.staleness);
        }
    }

    fn marks(&self) -> MutexGuard<'_, Marks> {
        // Every critical section leaves the maps consistent.
        self.marks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn marks_len(&self) -> usize {
        self.marks().len()
    }
}

impl FeedTarget for RevocationView {
    /// A change to the sessions table, made by any process: a session
    /// revoked (or deleted) is ended at once.
    fn deliver(&self, change: RowChange) {
        if change.table != self.sessions_table {
            return;
        }
        let revoked = match change.kind {
            ChangeKind::Delete => true,
            ChangeKind::Insert | ChangeKind::Update => change
                .new
                .as_ref()
                .and_then(|row| row.get("revoked_at"))
                .is_some_and(|v| !v.is_null()),
        };
        if !revoked {
            return;
        }
        match &change.key {
            Value::String(sid) => self.revoked_session(sid),
            _ => self.revoked_anything(),
        }
    }

    fn feed_health(&self) -> &FeedHealth {
        &self.feed_health
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_millis(200);

    fn later() -> DateTime<Utc> {
        Utc::now() + chrono::Duration::hours(1)
    }

    #[test]
    fn live_answers_age_out_and_marks_beat_reads_in_flight() {
        let v = RevocationView::new(S, "auth_sessions");
        assert_eq!(v.check("s1", "u1"), Verdict::Unknown);
        let read_at = Instant::now();
        v.remember("s1", read_at, Some(("u1", later())));
        assert_eq!(v.check("s1", "u1"), Verdict::Live);
        // Another user's claim on the session is refused.
        assert_eq!(v.check("s1", "u2"), Verdict::Ended);
        // A read that started before a revocation is not trusted after it,
        // even when it is remembered after the revocation.
        v.revoked_user_sessions("u1");
        v.remember("s1", read_at, Some(("u1", later())));
        assert_eq!(v.check("s1", "u1"), Verdict::Unknown);
        let read_at = Instant::now();
        v.remember("s1", read_at, Some(("u1", later())));
        assert_eq!(v.check("s1", "u1"), Verdict::Live);
        std::thread::sleep(S);
        assert_eq!(v.check("s1", "u1"), Verdict::Unknown, "aged out");
    }

    #[test]
    fn a_revoked_session_stays_ended() {
        let v = RevocationView::new(S, "auth_sessions");
        let read_at = Instant::now();
        v.revoked_session("s1");
        assert_eq!(v.check("s1", "u1"), Verdict::Ended);
        v.remember("s1", read_at, Some(("u1", later())));
        assert_eq!(v.check("s1", "u1"), Verdict::Unknown);
        v.remember("s2", Instant::now(), None);
        assert_eq!(v.check("s2", "u1"), Verdict::Ended);
        // Past its end.
        v.remember("s3", Instant::now(), Some(("u1", Utc::now())));
        assert_eq!(v.check("s3", "u1"), Verdict::Ended);
        v.remember("s4", Instant::now(), Some(("u1", later())));
        v.revoked_anything();
        assert_eq!(v.check("s4", "u1"), Verdict::Unknown);
    }

    #[test]
    fn a_revocation_that_may_not_have_committed_costs_a_read_only() {
        let v = RevocationView::new(S, "auth_sessions");
        v.remember("s1", Instant::now(), Some(("u1", later())));
        v.maybe_revoked_session("s1");
        // Not trusted any more, but not ended either: the database decides.
        assert_eq!(v.check("s1", "u1"), Verdict::Unknown);
        v.remember("s1", Instant::now(), Some(("u1", later())));
        assert_eq!(v.check("s1", "u1"), Verdict::Live);
    }

    #[test]
    fn zero_staleness_remembers_nothing() {
        let v = RevocationView::new(Duration::ZERO, "auth_sessions");
        v.remember("s1", Instant::now(), Some(("u1", later())));
        v.revoked_session("s2");
        assert_eq!(v.check("s1", "u1"), Verdict::Unknown);
        assert_eq!(v.check("s2", "u1"), Verdict::Unknown);
        assert_eq!(v.marks_len(), 0);
    }

    #[test]
    fn marks_are_bounded() {
        let v = RevocationView::new(Duration::from_secs(3600), "auth_sessions");
        v.remember("s0", Instant::now(), Some(("u0", later())));
        for i in 0..(MAX_MARKS + 10) {
            v.revoked_user_sessions(&format!("user-{i}"));
        }
        assert!(v.marks_len() <= MAX_MARKS, "{}", v.marks_len());
        // Collapsing the marks marked everything: nothing older is trusted.
        assert_eq!(v.check("s0", "u0"), Verdict::Unknown);
        // Old marks go once no answer read before them can be trusted.
        let v = RevocationView::new(Duration::from_millis(1), "auth_sessions");
        for i in 0..2000 {
            v.revoked_session(&format!("s-{i}"));
            if i == 999 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        assert!(v.marks_len() <= PRUNE_FROM, "{}", v.marks_len());
    }

    #[test]
    fn the_feed_ends_revoked_sessions_only() {
        let v = RevocationView::new(S, "auth_sessions");
        let now = Instant::now();
        v.remember("s1", now, Some(("u1", later())));
        v.remember("s2", now, Some(("u1", later())));
        let change = |sid: &str, revoked: Value, table: &str| RowChange {
            table: table.into(),
            kind: ChangeKind::Update,
            key: Value::String(sid.into()),
            old: None,
            new: Some(
                serde_json::json!({"id": sid, "revoked_at": revoked})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            ),
            committed_at: Utc::now(),
        };
        v.deliver(change("s1", Value::Null, "auth_sessions"));
        v.deliver(change("s2", "2026-12-03T00:00:00Z".into(), "other"));
        assert_eq!(v.check("s1", "u1"), Verdict::Live);
        assert_eq!(v.check("s2", "u1"), Verdict::Live);
        v.deliver(change("s2", "2026-12-03T00:00:00Z".into(), "auth_sessions"));
        assert_eq!(v.check("s2", "u1"), Verdict::Ended);
    }
}
