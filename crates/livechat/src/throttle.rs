//! Log lines that a storm could repeat a million times are let through at most `burst` times per
//! period, each telling how many were held back since the last one let through.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Throttle {
    period: Duration,
    burst: u32,
    window: Mutex<Window>,
    held_back: AtomicU64,
}

struct Window {
    started: Option<Instant>,
    lines: u32,
}

impl Throttle {
    pub const fn new(period: Duration, burst: u32) -> Self {
        Self {
            period,
            burst,
            window: Mutex::new(Window {
                started: None,
                lines: 0,
            }),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be logged now (`n` were held back since the last one).
    pub fn allow(&self) -> Option<u64> {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if window
            .started
            .is_none_or(|started| now.duration_since(started) >= self.period)
        {
            *window = Window {
                started: Some(now),
                lines: 0,
            };
        }
        if window.lines >= self.burst {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        window.lines += 1;
        Some(self.held_back.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_a_burst_through_per_period() {
        let throttle = Throttle::new(Duration::from_secs(60), 2);
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        throttle.window.lock().unwrap().started = Some(Instant::now() - Duration::from_secs(61));
        assert_eq!(throttle.allow(), Some(2));
    }
}
