//! Fuzzing, as deterministic property tests: every decoder of bytes that come from the network
//! or the disk is fed arbitrary bytes and mutated valid encodings.
//!
//! The decoders: frames (`proto::frame::Codec`); the protobuf messages a node reads from
//! clients and peers (`Hello`, `Request` and what `server::convert` makes of it, `PeerFrame`
//! and the raft messages inside), and the raft records it stores; log entries
//! (`server::entry::Envelope`, conf change contexts, check and report entries); snapshots
//! (`server::membership::SnapshotData`, `StateMachine::restore`); state records
//! (`StateMachine::from_records`); sealed values and the RocksDB-backed loads (`storage`).
//!
//! What every target checks:
//! - no panic: a decoder answers an error or a value, whatever it is given;
//! - no hang: a case that runs longer than [`CASE_LIMIT`] aborts the test binary, naming the
//!   case's seed;
//! - no allocation from a declared length: the largest single allocation a decoder makes is
//!   bounded by the size of its input (plus the 1 MiB serde preallocates at most for one
//!   container); a counting allocator in the test binary (`alloc`) measures it;
//! - round trips: a valid value encodes and decodes to itself, and whatever a decoder accepts
//!   encodes and decodes to the same value again;
//! - what is decoded is safe to use: requests and log entries are applied to real states,
//!   and a state rebuilt from damaged records or snapshots is refused as corrupt or passes
//!   `validate()`.
//!
//! Inputs are made from a seed, so every run is reproducible. `cargo test --lib fuzz` runs a
//! short default (as CI does). `LOCKFS_FUZZ_ITERS=N` multiplies every target's number of cases
//! by `N` for a long run; `LOCKFS_FUZZ_SEED=S` starts from seed `S` instead of the fixed
//! default (`random` picks one). Each target prints its seed and number of cases (shown with
//! `--nocapture` or on failure); a failing case prints its own seed, and
//! `LOCKFS_FUZZ_SEED=<that seed> cargo test --lib fuzz::<target>` replays it as its first case.

mod alloc;
mod entries;
mod mutate;
mod records;
mod schema;
mod wire;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

pub(crate) use alloc::largest_during as largest_allocation;

/// The seed of the first case when `LOCKFS_FUZZ_SEED` is not set.
const DEFAULT_SEED: u64 = 14;
/// Longest a single case may run before it counts as a hang.
const CASE_LIMIT: Duration = Duration::from_secs(60);

fn multiplier() -> u64 {
    match std::env::var("LOCKFS_FUZZ_ITERS") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("LOCKFS_FUZZ_ITERS={v:?}: expected a number")),
        Err(_) => 1,
    }
}

fn first_seed() -> u64 {
    match std::env::var("LOCKFS_FUZZ_SEED") {
        Ok(v) if v == "random" => rand::random(),
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("LOCKFS_FUZZ_SEED={v:?}: expected a number or `random`")),
        Err(_) => DEFAULT_SEED,
    }
}

/// Runs `cases × LOCKFS_FUZZ_ITERS` cases of the test `fuzz::<target>`; case `i` gets a random
/// generator seeded with the first seed plus `i`. Each case names how it ended ("refused",
/// "applied", ...); the counts show whether the cases reach as deep as meant.
fn run(target: &str, cases: u64, mut case: impl FnMut(&mut StdRng) -> &'static str) {
    let cases = cases.saturating_mul(multiplier());
    let seed = first_seed();
    println!("fuzz::{target}: {cases} cases from seed {seed}");
    let (pet, watched) = mpsc::channel::<u64>();
    let name = target.to_string();
    std::thread::spawn(move || {
        let mut current = seed;
        loop {
            match watched.recv_timeout(CASE_LIMIT) {
                Ok(seed) => current = seed,
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {
                    eprintln!(
                        "fuzz::{name}: the case of seed {current} ran over {CASE_LIMIT:?}; replay \
                         it with LOCKFS_FUZZ_SEED={current} cargo test --lib fuzz::{name}"
                    );
                    std::process::abort();
                }
            }
        }
    });
    let started = Instant::now();
    let mut ends: BTreeMap<&str, u64> = BTreeMap::new();
    for i in 0..cases {
        let case_seed = seed.wrapping_add(i);
        let _ = pet.send(case_seed);
        let mut rng = StdRng::seed_from_u64(case_seed);
        match catch_unwind(AssertUnwindSafe(|| case(&mut rng))) {
            Ok(end) => *ends.entry(end).or_default() += 1,
            Err(panic) => {
                eprintln!(
                    "fuzz::{target}: case {i} failed; replay it with \
                     LOCKFS_FUZZ_SEED={case_seed} cargo test --lib fuzz::{target}"
                );
                resume_unwind(panic);
            }
        }
    }
    let ends: Vec<String> = ends.iter().map(|(end, n)| format!("{n} {end}")).collect();
    println!(
        "fuzz::{target}: {cases} cases from seed {seed} in {:.1?}: {}",
        started.elapsed(),
        ends.join(", ")
    );
}
