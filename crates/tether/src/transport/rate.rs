//! The per-connection message rate limit: a token bucket.
//!
//! A connection may send `burst` messages at once and `rate` per second on average.
//! A message beyond that is refused (answered with `limit_exceeded`, not executed) and
//! the connection stays: a client that backs off when told loses nothing. Refused
//! messages still cost a token, so the bucket goes into debt; a client that sends
//! another `burst` messages while being refused is ignoring the errors, and is closed
//! (4029) rather than served error replies forever.

use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rate: handle the message.
    Allow,
    /// Over the rate: answer `limit_exceeded`.
    Refuse,
    /// Over the rate and ignoring the refusals: close the connection.
    Close,
}

#[derive(Debug, Clone)]
pub struct RateLimit {
    /// Tokens per second; 0 turns the limit off.
    rate: f64,
    burst: f64,
    /// Negative while in debt.
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    pub fn new(per_sec: u32, burst: u32, now: Instant) -> RateLimit {
        let burst = f64::from(burst.max(1));
        RateLimit {
            rate: f64::from(per_sec),
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Charges one message arriving at `now`.
    pub fn take(&mut self, now: Instant) -> Verdict {
        if self.rate == 0.0 {
            return Verdict::Allow;
        }
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - 1.0;
        if self.tokens >= 0.0 {
            Verdict::Allow
        } else if self.tokens > -self.burst {
            Verdict::Refuse
        } else {
            Verdict::Close
        }
    }

    /// The limit, for error messages: (per second, burst).
    pub fn describe(&self) -> (f64, f64) {
        (self.rate, self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refuse_then_close() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(10, 3, t0);
        for _ in 0..3 {
            assert_eq!(r.take(t0), Verdict::Allow);
        }
        // Three more are refused (debt 1..3); the one that makes the debt a whole
        // burst closes.
        assert_eq!(r.take(t0), Verdict::Refuse);
        assert_eq!(r.take(t0), Verdict::Refuse);
        assert_eq!(r.take(t0), Verdict::Close);
    }

    #[test]
    fn backing_off_pays_the_debt() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(10, 2, t0);
        assert_eq!(r.take(t0), Verdict::Allow);
        assert_eq!(r.take(t0), Verdict::Allow);
        assert_eq!(r.take(t0), Verdict::Refuse);
        // 0.3 s at 10/s refills 3 tokens, capped at the burst: debt paid, 2 allowed.
        let t1 = t0 + Duration::from_millis(300);
        assert_eq!(r.take(t1), Verdict::Allow);
        assert_eq!(r.take(t1), Verdict::Allow);
        assert_eq!(r.take(t1), Verdict::Refuse);
    }

    #[test]
    fn the_sustained_rate_is_allowed() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(100, 1, t0);
        for i in 1..1000 {
            assert_eq!(r.take(t0 + Duration::from_millis(10 * i)), Verdict::Allow);
        }
    }

    #[test]
    fn zero_turns_it_off() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(0, 0, t0);
        for _ in 0..100_000 {
            assert_eq!(r.take(t0), Verdict::Allow);
        }
    }
}
