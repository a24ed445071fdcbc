//! Per-account lockout with exponential backoff.
//!
//! After `threshold` consecutive failures the account is locked for
//! `base_seconds`; every further failure doubles the lock, up to
//! `max_seconds`. A success clears the count. The arithmetic is kept pure so
//! that the login flow and its tests share it.

use crate::config::LockoutConfig;
use crate::directory::FailureRecord;

#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    threshold: u32,
    base_seconds: u32,
    max_seconds: u32,
}

impl From<&LockoutConfig> for LockoutPolicy {
    fn from(config: &LockoutConfig) -> Self {
        Self {
            threshold: config.threshold.max(1),
            base_seconds: config.base_seconds,
            max_seconds: config.max_seconds,
        }
    }
}

impl LockoutPolicy {
    /// Returns the seconds left on the lock, or `None` when sign-in is allowed.
    pub fn remaining_lock(&self, record: FailureRecord, now: i64) -> Option<i64> {
        (record.locked_until > now).then(|| record.locked_until - now)
    }

    /// Returns the record after one more failure at `now`.
    pub fn after_failure(&self, record: FailureRecord, now: i64) -> FailureRecord {
        let failures = record.failures.saturating_add(1);
        if failures < self.threshold {
            return FailureRecord {
                failures,
                locked_until: record.locked_until,
            };
        }
        FailureRecord {
            failures,
            locked_until: now + i64::from(self.lock_seconds(failures)),
        }
    }

    /// Length of the lock that the `failures`-th consecutive failure starts.
    pub fn lock_seconds(&self, failures: u32) -> u32 {
        let doublings = failures.saturating_sub(self.threshold).min(31);
        self.base_seconds
            .saturating_mul(1u32 << doublings)
            .min(self.max_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LockoutPolicy {
        LockoutPolicy::from(&LockoutConfig {
            threshold: 3,
            base_seconds: 30,
            max_seconds: 300,
        })
    }

    #[test]
    fn no_lock_below_threshold() {
        let policy = policy();
        let mut record = FailureRecord::default();
        for now in [100, 101] {
            record = policy.after_failure(record, now);
            assert_eq!(policy.remaining_lock(record, now), None);
        }
        assert_eq!(record.failures, 2);
    }

    #[test]
    fn lock_starts_at_threshold() {
        let policy = policy();
        let record = FailureRecord {
            failures: 2,
            locked_until: 0,
        };
        let locked = policy.after_failure(record, 1000);
        assert_eq!(locked.locked_until, 1030);
        assert_eq!(policy.remaining_lock(locked, 1000), Some(30));
        assert_eq!(policy.remaining_lock(locked, 1029), Some(1));
        assert_eq!(policy.remaining_lock(locked, 1030), None);
    }

    #[test]
    fn lock_doubles_then_caps() {
        let policy = policy();
        assert_eq!(policy.lock_seconds(3), 30);
        assert_eq!(policy.lock_seconds(4), 60);
        assert_eq!(policy.lock_seconds(5), 120);
        assert_eq!(policy.lock_seconds(6), 240);
        assert_eq!(policy.lock_seconds(7), 300);
        assert_eq!(policy.lock_seconds(400), 300);
    }

    #[test]
    fn failure_count_saturates() {
        let policy = policy();
        let record = FailureRecord {
            failures: u32::MAX,
            locked_until: 0,
        };
        assert_eq!(policy.after_failure(record, 5).failures, u32::MAX);
    }
}
