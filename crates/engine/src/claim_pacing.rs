//! When the producer claims: a claim is one statement whose cost is mostly
//! fixed (walking the queue's index to the first claimable job), so claiming
//! the moment any one slot frees makes many small claims that cost almost as
//! much as full ones. Measured on PostgreSQL (throughput bench, 4 runners of
//! 32 slots, units that return at once): claims averaged 6.5 jobs, about 3 ms
//! each, and took more database time than the units' own writes.
//!
//! The rule, after River's fetch cooldown: claim at once when at least half
//! the slots are free; otherwise wait until [`CLAIM_COOLDOWN`] has passed
//! since the previous claim (or half the slots free up, whichever first). A
//! freed slot is therefore never idle longer than the cooldown, and under a
//! flood of short units a claim fills about half the slots.

use std::time::Duration;

/// The longest a free slot waits for the next claim (the default of
/// `RunnerConfig::claim_cooldown`).
pub const CLAIM_COOLDOWN: Duration = Duration::from_millis(10);

/// What the producer does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimPace {
    /// Claim for the free slots now.
    Now,
    /// Claim once this has passed, unless enough slots free up before.
    After(Duration),
    /// Every slot is busy: wait for one to free up.
    Full,
}

/// `free` of `slots` are free; the previous claim was `since_last_claim`
/// ago (`None`: never).
pub fn pace(free: usize, slots: usize, since_last_claim: Option<Duration>, cooldown: Duration) -> ClaimPace {
    if free == 0 {
        return ClaimPace::Full;
    }
    if free.saturating_mul(2) >= slots.max(1) {
        return ClaimPace::Now;
    }
    match since_last_claim {
        None => ClaimPace::Now,
        Some(since) if since >= cooldown => ClaimPace::Now,
        Some(since) => ClaimPace::After(cooldown - since),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn no_free_slot_waits_for_one() {
        assert_eq!(pace(0, 32, None, 10 * MS), ClaimPace::Full);
        assert_eq!(
            pace(0, 32, Some(Duration::from_secs(9)), 10 * MS),
            ClaimPace::Full
        );
    }

    #[test]
    fn half_the_slots_free_claims_at_once() {
        assert_eq!(pace(16, 32, Some(MS), 10 * MS), ClaimPace::Now);
        assert_eq!(pace(32, 32, Some(Duration::ZERO), 10 * MS), ClaimPace::Now);
        // A single slot is its own half.
        assert_eq!(pace(1, 1, Some(Duration::ZERO), 10 * MS), ClaimPace::Now);
    }

    #[test]
    fn a_few_free_slots_wait_out_the_cooldown() {
        assert_eq!(pace(3, 32, Some(4 * MS), 10 * MS), ClaimPace::After(6 * MS));
        assert_eq!(pace(3, 32, Some(10 * MS), 10 * MS), ClaimPace::Now);
        assert_eq!(pace(3, 32, Some(25 * MS), 10 * MS), ClaimPace::Now);
    }

    #[test]
    fn the_first_claim_never_waits() {
        assert_eq!(pace(1, 32, None, 10 * MS), ClaimPace::Now);
    }

    #[test]
    fn a_zero_cooldown_claims_for_any_free_slot() {
        assert_eq!(pace(1, 32, Some(Duration::ZERO), Duration::ZERO), ClaimPace::Now);
    }
}
