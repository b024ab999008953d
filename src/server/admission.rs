//! How many connections a node holds at once, so that nobody can exhaust its file descriptors
//! or its memory by connecting: at most `MAX_CONNECTIONS` in all, and from one remote address
//! at most `MAX_UNAUTHENTICATED_PER_ADDR` that have not yet finished the TLS handshake and the
//! hello (each of which lasts at most the hello deadline). A connection past either cap is
//! closed at once; refusals are logged at most every few seconds, with their count, so that a
//! flood cannot fill the log either.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub const MAX_CONNECTIONS: usize = 8192;
pub const MAX_UNAUTHENTICATED_PER_ADDR: usize = 64;
const REPORT_EVERY: Duration = Duration::from_secs(5);

pub struct Admission {
    open: Arc<Semaphore>,
    unauthenticated: Mutex<HashMap<IpAddr, usize>>,
    refused: AtomicU64,
    reported: Mutex<Option<Instant>>,
}

/// A connection's place; given back when dropped.
pub struct Ticket {
    _open: OwnedSemaphorePermit,
    /// Counted against its address until it authenticates.
    pending: Option<(Arc<Admission>, IpAddr)>,
}

impl Ticket {
    /// The connection is authenticated: it no longer counts against its address.
    pub fn authenticated(&mut self) {
        if let Some((admission, ip)) = self.pending.take() {
            admission.release(ip);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.authenticated();
    }
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            open: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            unauthenticated: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
            reported: Mutex::new(None),
        }
    }
}

impl Admission {
    /// A place for a new connection from `ip`, or `None` (and the refusal counted) when a cap
    /// is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Ticket> {
        let Ok(open) = self.open.clone().try_acquire_owned() else {
            self.refuse(ip, "the node's connections");
            return None;
        };
        {
            let mut pending = self.unauthenticated.lock().expect("poisoned");
            let n = pending.entry(ip).or_insert(0);
            if *n >= MAX_UNAUTHENTICATED_PER_ADDR {
                drop(pending);
                self.refuse(ip, "unauthenticated connections from one address");
                return None;
            }
            *n += 1;
        }
        Some(Ticket {
            _open: open,
            pending: Some((self.clone(), ip)),
        })
    }

    fn release(&self, ip: IpAddr) {
        let mut pending = self.unauthenticated.lock().expect("poisoned");
        if let Some(n) = pending.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                pending.remove(&ip);
            }
        }
    }

    fn refuse(&self, ip: IpAddr, cap: &str) {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let mut reported = self.reported.lock().expect("poisoned");
        if reported.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
            *reported = Some(Instant::now());
            log::warn!(
                "refusing connections: at the cap of {cap} (latest from {ip}; {refused} refused \
                 since the node started)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthenticated_connections_are_capped_per_address() {
        let admission = Arc::new(Admission::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut held: Vec<Ticket> = (0..MAX_UNAUTHENTICATED_PER_ADDR)
            .map(|_| admission.admit(a).expect("below the cap"))
            .collect();
        assert!(admission.admit(a).is_none());
        assert!(
            admission.admit(b).is_some(),
            "other addresses are not affected"
        );
        held[0].authenticated();
        assert!(
            admission.admit(a).is_some(),
            "an authenticated one no longer counts"
        );
        held.truncate(10);
        assert!(admission.admit(a).is_some());
        assert_eq!(admission.refused.load(Ordering::Relaxed), 1);
    }
}
