//! Dead peers and expired tokens, for every connection by one sweep (not a timer per connection,
//! which would cost memory on every idle socket).
//!
//! Each connection keeps a `Liveness` beside its outbound queue: when the client was last heard
//! from, when it was pinged, when its token expires. The sweep walks the hub's members a few
//! times per ping interval: a client silent for `ping_interval` is pinged; one still silent
//! `pong_timeout` after the ping is told to close, as is one whose token has expired. A client
//! quiet for `PARK_AFTER` has its connection asked to park (`crate::transport::parking`): its
//! task gives way until the client sends again or something comes for it that a direct write
//! cannot deliver.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::hub::Hub;
use crate::outbound::Closed;
use crate::outgoing::OutgoingFrame;
use crate::store::now_ms;

/// The clock's unit: liveness times are kept in tenths of a second, in 32 bits.
const TICK: Duration = Duration::from_millis(100);
/// How long a client stays quiet before its connection is asked to park: long enough that one
/// sending a few messages a second keeps its task, short enough that idle ones soon free theirs.
const PARK_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub struct KeepaliveSettings {
    /// Zero: never ping.
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
}

/// One connection's keepalive state, shared by its task (which reports what it hears) and the
/// sweep. 12 bytes.
#[derive(Debug)]
pub struct Liveness {
    /// When the client last sent anything, in ticks.
    heard: AtomicU32,
    /// When the outstanding ping was sent, in ticks; 0: none outstanding.
    pinged: AtomicU32,
    /// When the connection's token expires, in seconds since the Unix epoch; 0: never.
    expires: AtomicU32,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            heard: AtomicU32::new(ticks_now()),
            pinged: AtomicU32::new(0),
            expires: AtomicU32::new(0),
        }
    }
}

impl Liveness {
    /// The client sent something (a frame of any kind): it is alive.
    pub fn heard(&self) {
        self.heard.store(ticks_now(), Ordering::Relaxed);
        self.pinged.store(0, Ordering::Relaxed);
    }

    /// How long since the client last sent anything.
    fn quiet_for(&self, now_ticks: u32) -> Duration {
        elapsed(self.heard.load(Ordering::Relaxed), now_ticks)
    }

    /// The connection must close when this Unix time (seconds) passes; `None`: never.
    pub fn expire_at(&self, unix_seconds: Option<u64>) {
        let seconds = unix_seconds.map_or(0, |s| u32::try_from(s).unwrap_or(u32::MAX).max(1));
        self.expires.store(seconds, Ordering::Relaxed);
    }
}

/// What the sweep decided for one connection.
#[derive(Debug, PartialEq, Eq)]
enum Check {
    Fine,
    Ping,
    Close(Closed),
}

impl KeepaliveSettings {
    fn check(&self, liveness: &Liveness, now_ticks: u32, now_unix: u64) -> Check {
        let expires = liveness.expires.load(Ordering::Relaxed);
        if expires != 0 && now_unix >= u64::from(expires) {
            return Check::Close(Closed::TokenExpired);
        }
        if self.ping_interval.is_zero() {
            return Check::Fine;
        }
        let pinged = liveness.pinged.load(Ordering::Relaxed);
        if pinged != 0 {
            if elapsed(pinged, now_ticks) >= self.pong_timeout {
                return Check::Close(Closed::Unresponsive);
            }
            return Check::Fine;
        }
        let heard = liveness.heard.load(Ordering::Relaxed);
        if elapsed(heard, now_ticks) >= self.ping_interval {
            // Recorded before the ping is queued: a pong can only clear it afterwards.
            liveness.pinged.store(now_ticks.max(1), Ordering::Relaxed);
            return Check::Ping;
        }
        Check::Fine
    }

    /// How often the sweep runs: often enough that a deadline is acted on within a tenth of the
    /// shortest interval, at most once a second.
    fn sweep_every(&self) -> Duration {
        let shortest = match self.ping_interval.is_zero() {
            true => Duration::from_secs(1),
            false => self.ping_interval.min(self.pong_timeout),
        };
        (shortest / 10).clamp(TICK, Duration::from_secs(1))
    }
}

/// Sweeps the hub's members until the runtime stops.
pub async fn run(hub: Arc<Hub>, settings: KeepaliveSettings) {
    let ping = OutgoingFrame::ping().into_bytes();
    let mut ticks = tokio::time::interval(settings.sweep_every());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (now_ticks, now_unix) = (ticks_now(), now_ms() / 1000);
        hub.for_each_member(|outbound| {
            match settings.check(&outbound.liveness, now_ticks, now_unix) {
                Check::Fine if outbound.liveness.quiet_for(now_ticks) >= PARK_AFTER => {
                    outbound.ask_to_park();
                }
                Check::Fine => {}
                Check::Ping => outbound.push_control(ping.clone()),
                Check::Close(why) => outbound.close(why),
            }
        });
    }
}

fn elapsed(since: u32, now: u32) -> Duration {
    TICK * now.saturating_sub(since)
}

/// Ticks since the process first asked; never 0, so 0 can mean "none".
fn ticks_now() -> u32 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    let ticks = start.elapsed().as_millis() / TICK.as_millis();
    u32::try_from(ticks).unwrap_or(u32::MAX).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: KeepaliveSettings = KeepaliveSettings {
        ping_interval: Duration::from_secs(25),
        pong_timeout: Duration::from_secs(10),
    };

    fn at(liveness: &Liveness, seconds: u32) -> Check {
        let heard = liveness.heard.load(Ordering::Relaxed);
        SETTINGS.check(liveness, heard + seconds * 10, 1_000)
    }

    #[test]
    fn pings_a_silent_client_then_closes_it() {
        let liveness = Liveness::default();
        assert_eq!(at(&liveness, 24), Check::Fine);
        assert_eq!(at(&liveness, 25), Check::Ping);
        assert_eq!(at(&liveness, 34), Check::Fine, "waiting for the pong");
        assert_eq!(at(&liveness, 35), Check::Close(Closed::Unresponsive));
    }

    #[test]
    fn a_pong_keeps_it_open() {
        let liveness = Liveness::default();
        assert_eq!(at(&liveness, 25), Check::Ping);
        liveness.heard();
        assert_eq!(at(&liveness, 10), Check::Fine);
    }

    #[test]
    fn an_expired_token_closes() {
        let liveness = Liveness::default();
        liveness.expire_at(Some(1_000));
        assert_eq!(at(&liveness, 0), Check::Close(Closed::TokenExpired));
        liveness.expire_at(Some(1_001));
        assert_eq!(at(&liveness, 0), Check::Fine);
        liveness.expire_at(None);
        assert_eq!(at(&liveness, 0), Check::Fine);
    }
}
