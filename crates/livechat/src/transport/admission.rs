//! How many WebSocket connections the server holds: at most `LIVECHAT_MAX_CONNECTIONS` in all
//! (by default the open-file limit less a reserve, so that HTTP requests, the store and Redis
//! always have files left and `/healthz` keeps answering) and, when set,
//! `LIVECHAT_MAX_CONNECTIONS_PER_IP` per client address. A connection holds a `Permit` for its
//! whole life; the count goes down when the permit is dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::throttle::Throttle;

/// Files kept for everything that is not a WebSocket: a fixed part and a share of the limit.
const RESERVE_FIXED: u64 = 128;
const RESERVE_PERCENT: u64 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("server at its connection limit ({0}); try again later")]
    Full(usize),
    #[error("too many connections from this address (limit {0})")]
    PerIp(u32),
}

pub struct Admission {
    max_total: usize,
    max_per_ip: Option<u32>,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    warnings: Throttle,
}

/// A connection's place under the caps.
pub struct Permit {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    /// `max_total` `None`: derived from the process's open-file limit.
    pub fn new(max_total: Option<usize>, max_per_ip: Option<u32>) -> Arc<Self> {
        let max_total = max_total.unwrap_or_else(default_max_connections);
        Arc::new(Self {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: Mutex::default(),
            warnings: Throttle::new(Duration::from_secs(60), 1),
        })
    }

    pub fn max_total(&self) -> usize {
        self.max_total
    }

    /// Takes a place for a connection from `ip`, or says why there is none.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refused> {
        let refused = self.try_admit(ip);
        if let Err(refused) = &refused
            && let Some(held_back) = self.warnings.allow()
        {
            tracing::warn!(%refused, refusals_since_last_warning = held_back, "refusing WebSocket connections");
        }
        refused.map(|()| Permit {
            admission: self.clone(),
            ip,
        })
    }

    fn try_admit(&self, ip: IpAddr) -> Result<(), Refused> {
        let admitted = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |total| {
                (total < self.max_total).then_some(total + 1)
            });
        if admitted.is_err() {
            return Err(Refused::Full(self.max_total));
        }
        if let Some(max) = self.max_per_ip {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= max {
                if *count == 0 {
                    per_ip.remove(&ip);
                }
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(Refused::PerIp(max));
            }
            *count += 1;
        }
        Ok(())
    }
}

impl Permit {
    /// The client address it was taken for.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let admission = &self.admission;
        admission.total.fetch_sub(1, Ordering::AcqRel);
        if admission.max_per_ip.is_some() {
            let mut per_ip = admission.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(count) = per_ip.get_mut(&self.ip) {
                *count -= 1;
                if *count == 0 {
                    per_ip.remove(&self.ip);
                }
            }
        }
    }
}

/// The soft open-file limit less the reserve.
fn default_max_connections() -> usize {
    let limit = open_file_limit();
    let reserve = RESERVE_FIXED + limit * RESERVE_PERCENT / 100;
    usize::try_from(limit.saturating_sub(reserve).max(1)).unwrap_or(usize::MAX)
}

fn open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, nothing else.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if read == 0 && limit.rlim_cur != libc::RLIM_INFINITY {
        limit.rlim_cur
    } else {
        1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_in_all_and_per_address() {
        let admission = Admission::new(Some(3), Some(2));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = admission.admit(a).unwrap();
        let _second = admission.admit(a).unwrap();
        assert_eq!(admission.admit(a).err(), Some(Refused::PerIp(2)));
        let _third = admission.admit(b).unwrap();
        assert_eq!(admission.admit(b).err(), Some(Refused::Full(3)));
        drop(first);
        assert!(admission.admit(a).is_ok());
        assert!(admission.per_ip.lock().unwrap().len() <= 2);
    }

    #[test]
    fn the_default_keeps_a_reserve_below_the_open_file_limit() {
        let max = default_max_connections() as u64;
        assert!(max < open_file_limit());
    }
}
