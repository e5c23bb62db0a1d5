//! A connection's typing frames: one is passed on per `TYPING_EVERY` (the others in between are
//! absorbed: a client may send one per keystroke), and past `MAX_PER_PERIOD` in one period they
//! are refused, so that typing cannot be used to flood the server.

use tokio::time::Instant;

use super::TYPING_EVERY;

/// Typing frames a connection may send per `TYPING_EVERY` before they are refused.
pub const MAX_PER_PERIOD: u32 = 20;

#[derive(Debug, Default)]
pub struct TypingGate {
    period_started: Option<Instant>,
    in_period: u32,
}

#[derive(Debug, PartialEq, Eq)]
pub enum TypingVerdict {
    Pass,
    /// Within the period of one already passed on.
    Absorb,
    /// Over `MAX_PER_PERIOD`: the period ends in this many ms.
    Refuse {
        retry_after_ms: u64,
    },
}

impl TypingGate {
    pub fn check(&mut self) -> TypingVerdict {
        let now = Instant::now();
        match self.period_started {
            Some(started) if now.duration_since(started) < TYPING_EVERY => {
                self.in_period += 1;
                if self.in_period > MAX_PER_PERIOD {
                    let left = TYPING_EVERY - now.duration_since(started);
                    TypingVerdict::Refuse {
                        retry_after_ms: left.as_millis() as u64,
                    }
                } else {
                    TypingVerdict::Absorb
                }
            }
            _ => {
                self.period_started = Some(now);
                self.in_period = 1;
                TypingVerdict::Pass
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn passes_one_per_period_and_refuses_a_flood() {
        let mut gate = TypingGate::default();
        assert_eq!(gate.check(), TypingVerdict::Pass);
        for _ in 1..MAX_PER_PERIOD {
            assert_eq!(gate.check(), TypingVerdict::Absorb);
        }
        assert!(
            matches!(gate.check(), TypingVerdict::Refuse { retry_after_ms } if retry_after_ms <= 2000)
        );
        tokio::time::advance(TYPING_EVERY).await;
        assert_eq!(gate.check(), TypingVerdict::Pass);
    }
}
