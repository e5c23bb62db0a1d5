//! Publish rate limits (token buckets, `governor`): one bucket per WebSocket connection, and one
//! per user (token `sub`) or client IP for HTTP publish. Off unless `LIVECHAT_RATE_LIMIT` is set.
//!
//! A connection over its limit gets an error frame for each refused message; one that keeps
//! sending at more than `ABUSE_FACTOR` times its limit over a whole `ABUSE_WINDOW` is closed.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::tasks::Tasks;

/// A connection sending at more than this many times its limit...
pub const ABUSE_FACTOR: u32 = 3;
/// ...over a window this long is closed with 1008.
pub const ABUSE_WINDOW: Duration = Duration::from_secs(10);
/// How often the HTTP limiter forgets callers whose bucket is full again.
const FORGET_EVERY: Duration = Duration::from_secs(10);

/// `N/s`, `N/m` or `N/h`: N messages per second, minute or hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub per: Duration,
}

impl Rate {
    pub fn parse(value: &str) -> Result<Self, String> {
        let invalid = || format!("`{value}` is not a rate such as 20/s, 600/m or 1000/h");
        let (count, unit) = value.trim().split_once('/').ok_or_else(invalid)?;
        let count: NonZeroU32 = count.trim().parse().map_err(|_| invalid())?;
        let per = match unit.trim() {
            "s" | "1s" => Duration::from_secs(1),
            "m" | "1m" => Duration::from_secs(60),
            "h" | "1h" => Duration::from_secs(3600),
            _ => return Err(invalid()),
        };
        Ok(Self { count, per })
    }

    fn quota(self, burst: Option<NonZeroU32>) -> Quota {
        // `per / count` is at least 277 ns (u32::MAX per hour), never zero.
        let period = self.per / self.count.get();
        Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(self.count))
            .allow_burst(burst.unwrap_or(self.count))
    }

    /// Messages in an `ABUSE_WINDOW` past which a connection is closed.
    fn abuse_threshold(self) -> u64 {
        let per_window = u64::from(self.count.get()) * ABUSE_WINDOW.as_nanos() as u64
            / self.per.as_nanos().max(1) as u64;
        per_window.max(1) * u64::from(ABUSE_FACTOR)
    }
}

/// The limit, as configured: shared by every limiter the server makes.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    rate: Rate,
    quota: Quota,
}

impl RateLimit {
    pub fn new(rate: Rate, burst: Option<NonZeroU32>) -> Self {
        Self {
            rate,
            quota: rate.quota(burst),
        }
    }

    pub fn for_connection(&self) -> ConnectionLimiter {
        ConnectionLimiter {
            bucket: RateLimiter::direct(self.quota),
            abuse_threshold: self.rate.abuse_threshold(),
            window_start: Instant::now(),
            in_window: 0,
        }
    }

    /// The limiter for HTTP publishes, keyed by user or IP; forgets idle keys in the background
    /// (a task of `tasks`, until the server stops).
    pub fn for_http(&self, tasks: &Tasks) -> Arc<HttpLimiter> {
        let limiter = Arc::new(HttpLimiter(RateLimiter::keyed(self.quota)));
        let forgetting = limiter.clone();
        tasks.spawn(async move {
            let mut ticks = tokio::time::interval(FORGET_EVERY);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                forgetting.0.retain_recent();
                forgetting.0.shrink_to_fit();
            }
        });
        limiter
    }
}

/// What to do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refuse it; the client may send again after this long.
    Limited {
        retry_after_ms: u64,
    },
    /// The client keeps sending far over its limit: close it.
    Abusive,
}

pub struct ConnectionLimiter {
    bucket: DefaultDirectRateLimiter,
    abuse_threshold: u64,
    window_start: Instant,
    in_window: u64,
}

impl ConnectionLimiter {
    pub fn check(&mut self) -> Verdict {
        let now = Instant::now();
        if now.duration_since(self.window_start) >= ABUSE_WINDOW {
            self.window_start = now;
            self.in_window = 0;
        }
        self.in_window += 1;
        if self.in_window > self.abuse_threshold {
            return Verdict::Abusive;
        }
        match self.bucket.check() {
            Ok(()) => Verdict::Allowed,
            Err(not_until) => Verdict::Limited {
                retry_after_ms: retry_after_ms(&not_until),
            },
        }
    }
}

pub struct HttpLimiter(DefaultKeyedRateLimiter<String>);

impl HttpLimiter {
    /// `Err(retry_after_ms)` when `key` is over its limit.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.0
            .check_key(&key.to_owned())
            .map_err(|not_until| retry_after_ms(&not_until))
    }
}

fn retry_after_ms(not_until: &governor::NotUntil<<DefaultClock as Clock>::Instant>) -> u64 {
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    (wait.as_millis() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        let rate = Rate::parse("20/s").unwrap();
        assert_eq!((rate.count.get(), rate.per), (20, Duration::from_secs(1)));
        assert_eq!(Rate::parse("600/m").unwrap().per, Duration::from_secs(60));
        for bad in ["20", "0/s", "x/s", "5/d", ""] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Rate::parse("20/s").unwrap().abuse_threshold(), 600);
    }

    #[test]
    fn a_connection_gets_its_burst_then_is_limited_then_closed() {
        let limit = RateLimit::new(Rate::parse("2/s").unwrap(), NonZeroU32::new(3));
        let mut limiter = limit.for_connection();
        for _ in 0..3 {
            assert_eq!(limiter.check(), Verdict::Allowed);
        }
        let Verdict::Limited { retry_after_ms } = limiter.check() else {
            panic!("the fourth message is over the burst");
        };
        assert!((1..=500).contains(&retry_after_ms), "{retry_after_ms}");
        // 2/s over 10 s, times 3: the 61st message in the window closes the connection.
        let verdicts: Vec<Verdict> = (0..56).map(|_| limiter.check()).collect();
        assert!(!verdicts.contains(&Verdict::Abusive));
        assert_eq!(limiter.check(), Verdict::Abusive);
    }

    #[tokio::test]
    async fn http_limits_each_key_apart() {
        let limit = RateLimit::new(Rate::parse("1/m").unwrap(), None);
        let limiter = limit.for_http(&Tasks::new());
        assert!(limiter.check("alice").is_ok());
        assert!(limiter.check("alice").is_err());
        assert!(limiter.check("bob").is_ok());
    }
}
