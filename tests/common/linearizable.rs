//! A linearizability checker for one file used as a register with Chubby's content generation:
//! reads of its contents and of its generation, writes, and compare-and-set at a generation.
//! The search is Wing and Gong's with Lowe's memoization (the algorithm Porcupine and Knossos
//! use), and a failing history is shrunk to a small one that still fails.
//!
//! A history is a list of operations with the times they were invoked and returned. An
//! operation whose outcome is unknown (a write whose connection broke, say) may have taken
//! effect at any point after its invocation, or never: it gets `ret = u64::MAX`, and a
//! linearization may leave it out. The search tries, at each step, every operation that could
//! come next (invoked before any pending operation returned), applies it to the register, and
//! backtracks when an observation disagrees; states already explored (which operations are
//! done, and the register) are cached, which keeps histories of thousands of operations fast.
//!
//! The model: the register holds (contents, generation); every write and every applied
//! compare-and-set bumps the generation by one, as the state machine does.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A read of the contents that returned this value.
    Read(String),
    /// A read of the content generation that returned this number.
    ReadGen(u64),
    Write(String),
    /// Write `value` only if the generation is `gen`; `ok` is what the client was told (for an
    /// operation of unknown outcome it means nothing: it applied if it matched, or never ran).
    Cas {
        gen: u64,
        value: String,
        ok: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub client: u64,
    pub kind: Kind,
    pub call: u64,
    /// `u64::MAX` when the outcome is unknown.
    pub ret: u64,
}

impl Op {
    fn unknown(&self) -> bool {
        self.ret == u64::MAX
    }

    /// Observes the register without changing it: may be dropped from a history without
    /// making a linearizable history unlinearizable.
    fn observer(&self) -> bool {
        !self.unknown()
            && matches!(
                self.kind,
                Kind::Read(_) | Kind::ReadGen(_) | Kind::Cas { ok: false, .. }
            )
    }

    /// Depends on how many writes came before it.
    fn counts_generations(&self) -> bool {
        matches!(self.kind, Kind::ReadGen(_) | Kind::Cas { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Register {
    value: String,
    gen: u64,
}

/// The register after `op`, or None if `op` cannot take effect on `r`.
fn step(r: &Register, op: &Op) -> Option<Register> {
    match &op.kind {
        Kind::Read(v) => (*v == r.value).then(|| r.clone()),
        Kind::ReadGen(g) => (*g == r.gen).then(|| r.clone()),
        Kind::Write(v) => Some(Register {
            value: v.clone(),
            gen: r.gen + 1,
        }),
        Kind::Cas { gen, value, ok } if *ok || op.unknown() => (*gen == r.gen).then(|| Register {
            value: value.clone(),
            gen: r.gen + 1,
        }),
        Kind::Cas { gen, .. } => (*gen != r.gen).then(|| r.clone()),
    }
}

enum Verdict {
    Linearizable,
    Not(String),
    /// The search took more steps than allowed.
    GaveUp,
}

/// Whether `history`, starting from a register holding `initial` at generation `gen`, is
/// linearizable. On failure, the last steps of the longest linearizable order found and the
/// first operation that could not be placed, for the report.
pub fn check(initial: &str, gen: u64, history: &[Op]) -> Result<(), String> {
    match search(initial, gen, history, u64::MAX) {
        Verdict::Linearizable => Ok(()),
        Verdict::Not(why) => Err(why),
        Verdict::GaveUp => unreachable!("an unbounded search always ends"),
    }
}

fn search(initial: &str, gen: u64, history: &[Op], max_steps: u64) -> Verdict {
    let n = history.len();
    if n == 0 {
        return Verdict::Linearizable;
    }
    // Operations in invocation order.
    let mut ops: Vec<&Op> = history.iter().collect();
    ops.sort_by_key(|o| o.call);
    // The operations not yet placed, as a doubly linked list in invocation order (index n is
    // the head): placing unlinks, and undoing (always the last placed first) links back, so
    // the candidates are found without walking over what is placed.
    let head = n;
    let mut next: Vec<usize> = (1..=n).chain([head]).collect();
    next[n - 1] = head;
    next[head] = 0;
    let mut prev: Vec<usize> = std::iter::once(head).chain(0..n).collect();
    prev[0] = head;
    prev[head] = n - 1;
    // The returns of the operations not yet placed: the earliest bounds which may go next.
    let mut pending: BTreeMap<u64, usize> = BTreeMap::new();
    for o in &ops {
        *pending.entry(o.ret).or_default() += 1;
    }
    // States already explored: which operations are placed (a Zobrist hash of the set) and the
    // register (hashed). 192 bits make a false "explored" vanishingly unlikely.
    let zobrist: Vec<u128> = (0..n as u64)
        .map(|i| {
            let a = mix(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5851_F42D_4C95_7F2D);
            let b = mix(a ^ i.rotate_left(17));
            (u128::from(a) << 64) | u128::from(b)
        })
        .collect();
    let mut placed_hash: u128 = 0;
    let mut cache: HashSet<(u128, u64)> = HashSet::new();
    // The stack of choices: (operation index, register before it).
    let mut stack: Vec<(usize, Register)> = Vec::new();
    let mut state = Register {
        value: initial.to_string(),
        gen,
    };
    let mut best: Vec<usize> = Vec::new();
    // Unknown-outcome operations may be left out: the search succeeds once every operation
    // with a known return is placed.
    let required = ops.iter().filter(|o| !o.unknown()).count();
    let mut placed_required = 0usize;
    let mut candidate = next[head];
    let mut steps = 0u64;
    loop {
        if placed_required == required {
            return Verdict::Linearizable;
        }
        steps += 1;
        if steps > max_steps {
            return Verdict::GaveUp;
        }
        let horizon = pending.keys().next().copied().unwrap_or(u64::MAX);
        let mut advanced = false;
        let mut i = candidate;
        while i != head && ops[i].call <= horizon {
            if let Some(new_state) = step(&state, ops[i]) {
                let new_hash = placed_hash ^ zobrist[i];
                if cache.insert((new_hash, state_hash(&new_state))) {
                    // Place i.
                    next[prev[i]] = next[i];
                    prev[next[i]] = prev[i];
                    take(&mut pending, ops[i].ret);
                    placed_hash = new_hash;
                    stack.push((i, std::mem::replace(&mut state, new_state)));
                    if !ops[i].unknown() {
                        placed_required += 1;
                    }
                    if stack.len() > best.len() {
                        best = stack.iter().map(|(j, _)| *j).collect();
                    }
                    candidate = next[head];
                    advanced = true;
                    break;
                }
            }
            i = next[i];
        }
        if advanced {
            continue;
        }
        // Nothing fits here: undo the last choice and try the one after it.
        let Some((last, before)) = stack.pop() else {
            let placed: HashSet<usize> = best.iter().copied().collect();
            let stuck = (0..n)
                .filter(|i| !placed.contains(i) && !ops[*i].unknown())
                .min_by_key(|i| ops[*i].call)
                .map(|i| format!("{:?}", ops[i]))
                .unwrap_or_default();
            let prefix: Vec<String> = best
                .iter()
                .rev()
                .take(8)
                .rev()
                .map(|i| format!("{:?}", ops[*i]))
                .collect();
            return Verdict::Not(format!(
                "not linearizable: after the longest valid order found (last steps: {prefix:?}), \
                 no order places {stuck}"
            ));
        };
        next[prev[last]] = last;
        prev[next[last]] = last;
        *pending.entry(ops[last].ret).or_default() += 1;
        placed_hash ^= zobrist[last];
        if !ops[last].unknown() {
            placed_required -= 1;
        }
        state = before;
        candidate = next[last];
    }
}

/// SplitMix64's finalizer: spreads the bits of `x`.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn state_hash(r: &Register) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    r.hash(&mut h);
    h.finish()
}

/// Removes one `ret` from the multiset of pending returns.
fn take(pending: &mut BTreeMap<u64, usize>, ret: u64) {
    if let Some(count) = pending.get_mut(&ret) {
        *count -= 1;
        if *count == 0 {
            pending.remove(&ret);
        }
    }
}

/// A smaller history that is still not linearizable, found within `budget`: `history` itself
/// if it is linearizable or nothing smaller was found. Only cuts that keep a linearizable
/// history linearizable are made, so the small history's failure is the big one's, not an
/// artefact of the cutting:
/// - the tail after a quiescent moment (no operation of known outcome in flight);
/// - observations (reads, refused compare-and-sets);
/// - when no remaining operation counts generations: writes whose value nobody read.
pub fn shrink(initial: &str, gen: u64, history: &[Op], budget: Duration) -> Vec<Op> {
    let deadline = Instant::now() + budget;
    // A search too long to finish counts as "not shown to fail": the cut is not taken.
    let fails = |h: &[Op]| {
        Instant::now() < deadline && matches!(search(initial, gen, h, 2_000_000), Verdict::Not(_))
    };
    let mut h: Vec<Op> = history.to_vec();
    h.sort_by_key(|o| o.call);
    if !matches!(search(initial, gen, &h, u64::MAX), Verdict::Not(_)) {
        return h;
    }

    // The tail: the shortest prefix, cut at a quiescent moment, that still fails.
    let mut cuts: Vec<usize> = Vec::new();
    let mut latest_ret = 0u64;
    for (i, op) in h.iter().enumerate() {
        if i > 0 && op.call > latest_ret {
            cuts.push(i);
        }
        if !op.unknown() {
            latest_ret = latest_ret.max(op.ret);
        }
    }
    let (mut lo, mut hi) = (0usize, cuts.len());
    // Invariant: the prefix at cuts[hi] (or the whole history when hi == len) fails.
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(&h[..cuts[mid]]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    if hi < cuts.len() {
        h.truncate(cuts[hi]);
    }

    // Then operations one chunk at a time, halving the chunks (Zeller's ddmin, greedily).
    // Observations may always go; writes only while nothing left counts generations (a dropped
    // write would shift them), and only if nothing reads their value.
    let mut chunk = h.len().div_ceil(2).max(1);
    loop {
        let mut start = 0;
        while start < h.len() && Instant::now() < deadline {
            let end = (start + chunk).min(h.len());
            let counted = h.iter().any(Op::counts_generations);
            let read: HashSet<&str> = h
                .iter()
                .filter_map(|o| match &o.kind {
                    Kind::Read(v) => Some(v.as_str()),
                    _ => None,
                })
                .collect();
            let removable = |op: &Op| match &op.kind {
                Kind::Write(v) => !op.unknown() && !counted && !read.contains(v.as_str()),
                _ => op.observer(),
            };
            let candidate: Vec<Op> = h
                .iter()
                .enumerate()
                .filter(|(i, op)| !((start..end).contains(i) && removable(op)))
                .map(|(_, op)| op.clone())
                .collect();
            if candidate.len() < h.len() && fails(&candidate) {
                h = candidate;
            } else {
                start = end;
            }
        }
        if chunk == 1 || Instant::now() >= deadline {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    h
}
