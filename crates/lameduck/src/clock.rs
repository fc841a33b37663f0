//! Instant arithmetic that cannot panic.
//!
//! `Instant + Duration` panics when the sum does not fit the platform's clock (a duration
//! of `u64::MAX` seconds, or `500000000000y`, which humantime parses). Configured durations
//! are bounded where they are set (see [`MAX_GRACE_PERIOD`](crate::MAX_GRACE_PERIOD)), but
//! deadlines are still computed through [`deadline_after`] so that no value, however it got
//! in, can turn into a panic in the shutdown sequence.

use std::time::Duration;

use tokio::time::Instant;

/// How far ahead the furthest deadline lies: about 30 years, as tokio's own `sleep` caps
/// its durations (100 years already overflows some platforms' clocks). No lifecycle lasts
/// that long after its trigger, so a deadline there is "never".
pub(crate) const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// `from + after`, but never further than [`FAR_FUTURE`] from `from`: a longer (or
/// overflowing) duration means "never", and gets the far future. Never panics.
///
/// The cap matters beyond overflow: tokio rounds a timer's deadline up by adding to it,
/// so an instant at the very end of the clock would panic inside the timer instead.
pub(crate) fn deadline_after(from: Instant, after: Duration) -> Instant {
    let mut after = after.min(FAR_FUTURE);
    // Only a clock that ends within 30 years of `from` fails the first try; halve until
    // it fits. Terminates: a halved `Duration` ends at zero, and `from + 0` always fits.
    loop {
        if let Some(at) = from.checked_add(after) {
            return at;
        }
        if after.is_zero() {
            return from;
        }
        after /= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_what_fits() {
        let now = Instant::now();
        let d = Duration::from_millis(1500);
        assert_eq!(deadline_after(now, d), now + d);
        assert_eq!(deadline_after(now, Duration::ZERO), now);
    }

    #[test]
    fn what_overflows_becomes_the_far_future() {
        let now = Instant::now();
        for d in [
            Duration::MAX,
            Duration::from_secs(u64::MAX),
            // humantime's `500000000000y`
            Duration::from_secs(500_000_000_000 * 31_557_600),
            // Fits the clock on Linux, but is "never" all the same.
            FAR_FUTURE * 4,
        ] {
            assert_eq!(deadline_after(now, d), now + FAR_FUTURE, "{d:?}");
        }
    }
}
