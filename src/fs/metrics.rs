//! A host's metrics (`lockfs mount -o metrics=HOST:PORT`), served by `crate::metrics`.
//!
//! - requests by FUSE operation, with their latency from the kernel's request to the mount's
//!   answer (answers from the cache included);
//! - lock waits in progress (flock or fcntl blocked in the cluster's queue) and the age of
//!   the oldest;
//! - the mount's session state: live, jeopardy (its lease ran out; still trying) or expired;
//! - the mount's cache: lookups, attributes, listings and reads it answered, and those it
//!   had to ask the cluster for.
//!
//! Labels come from fixed sets (operation names, states), so nothing a process does on the
//! mount can grow the number of series.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

fn latency() -> Histogram {
    // 5 µs to about 80 s: cached answers, round trips and long lock waits alike.
    Histogram::new(exponential_buckets(0.000_005, 3.0, 16))
}

pub struct MountMetrics {
    requests: Family<OpLabel, Counter>,
    request_seconds: Family<OpLabel, Histogram>,
    waiting: Gauge,
    oldest_wait: Gauge<f64, AtomicU64>,
    session: Family<StateLabel, Gauge>,
    /// Lock waits in progress: id -> since when.
    waits: Mutex<HashMap<u64, Instant>>,
    next_wait: AtomicU64,
}

impl MountMetrics {
    /// The metrics and their registry; `cache` is the cache's (hits, misses) counters, if the
    /// mount caches.
    pub fn new(cache: Option<(Counter, Counter)>) -> (MountMetrics, Registry) {
        let m = MountMetrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency as fn() -> Histogram),
            waiting: Gauge::default(),
            oldest_wait: Gauge::default(),
            session: Family::default(),
            waits: Mutex::new(HashMap::new()),
            next_wait: AtomicU64::new(1),
        };
        let mut registry = Registry::with_prefix("lockfs_mount");
        let r = &mut registry;
        r.register(
            "requests",
            "FUSE requests answered, by operation",
            m.requests.clone(),
        );
        r.register_with_unit(
            "request",
            "From a FUSE request to its answer, by operation",
            Unit::Seconds,
            m.request_seconds.clone(),
        );
        if let Some((hits, misses)) = cache {
            r.register(
                "cache_hits",
                "Lookups, attributes, listings and reads answered by the mount's cache",
                hits,
            );
            r.register(
                "cache_misses",
                "Lookups, attributes, listings and reads the cache had to ask the cluster for",
                misses,
            );
        }
        r.register("lock_waits", "Lock waits in progress", m.waiting.clone());
        r.register_with_unit(
            "oldest_lock_wait",
            "Age of the oldest lock wait in progress (0 when none)",
            Unit::Seconds,
            m.oldest_wait.clone(),
        );
        r.register(
            "session",
            "1 for the mount session's state: live, jeopardy or expired",
            m.session.clone(),
        );
        (m, registry)
    }

    /// Times one request of `op` until the returned value is dropped.
    pub fn timing(self: &Arc<Self>, op: &'static str) -> Timing {
        Timing {
            op,
            started: Instant::now(),
            metrics: self.clone(),
        }
    }

    /// Notes a lock wait in progress until the returned value is dropped.
    pub fn waiting(self: &Arc<Self>) -> Waiting {
        let id = self.next_wait.fetch_add(1, Ordering::Relaxed);
        self.waits
            .lock()
            .expect("poisoned")
            .insert(id, Instant::now());
        Waiting {
            id,
            metrics: self.clone(),
        }
    }

    /// Brings the gauges up to date; `state` is the session's ("live", "jeopardy",
    /// "expired").
    pub fn refresh(&self, state: &'static str) {
        let (count, oldest) = {
            let waits = self.waits.lock().expect("poisoned");
            let oldest = waits
                .values()
                .min()
                .map_or(0.0, |t| t.elapsed().as_secs_f64());
            (waits.len(), oldest)
        };
        self.waiting.set(i64::try_from(count).unwrap_or(i64::MAX));
        self.oldest_wait.set(oldest);
        for s in ["live", "jeopardy", "expired"] {
            let on = i64::from(s == state);
            self.session.get_or_create(&StateLabel { state: s }).set(on);
        }
    }
}

/// One request being answered (see [`MountMetrics::timing`]).
pub struct Timing {
    op: &'static str,
    started: Instant,
    metrics: Arc<MountMetrics>,
}

impl Drop for Timing {
    fn drop(&mut self) {
        let label = OpLabel { op: self.op };
        self.metrics.requests.get_or_create(&label).inc();
        self.metrics
            .request_seconds
            .get_or_create(&label)
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// One lock wait in progress (see [`MountMetrics::waiting`]).
pub struct Waiting {
    id: u64,
    metrics: Arc<MountMetrics>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.metrics
            .waits
            .lock()
            .expect("poisoned")
            .remove(&self.id);
    }
}
