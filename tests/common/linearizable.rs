//! A linearizability checker for one read/write register, after Wing and Gong with Lowe's
//! memoization (the algorithm Porcupine and Knossos use).
//!
//! A history is a list of operations with the times they were invoked and returned. An
//! operation whose outcome is unknown (a write whose connection broke, say) may have taken
//! effect at any point after its invocation, or never: it gets `ret = u64::MAX`, and a
//! linearization may leave it out. The search tries, at each step, every operation that could
//! come next (invoked before any pending operation returned), applies it to the register, and
//! backtracks when a read disagrees; states already explored (which operations are done, and
//! the register's value) are cached, which keeps typical histories of hundreds of operations
//! fast.

use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A read that returned this value.
    Read(String),
    Write(String),
}

#[derive(Debug, Clone)]
pub struct Op {
    pub client: u64,
    pub kind: Kind,
    pub call: u64,
    /// `u64::MAX` when the outcome is unknown.
    pub ret: u64,
}

/// Whether `history`, starting from the register holding `initial`, is linearizable. On
/// failure, the operations of the longest linearizable prefix found and the first one that
/// could not be placed, for the report.
pub fn check(initial: &str, history: &[Op]) -> Result<(), String> {
    let n = history.len();
    if n == 0 {
        return Ok(());
    }
    // Operations in invocation order.
    let mut ops: Vec<&Op> = history.iter().collect();
    ops.sort_by_key(|o| o.call);
    let words = n.div_ceil(64);
    let mut done = vec![0u64; words];
    let is_done = |d: &[u64], i: usize| d[i / 64] >> (i % 64) & 1 == 1;
    let mut cache: HashSet<(Vec<u64>, String)> = HashSet::new();
    // The stack of choices: (operation index, value before it).
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut state = initial.to_string();
    let mut best: Vec<usize> = Vec::new();
    // Unknown-outcome operations may be left out: the search succeeds once every operation
    // with a known return is placed.
    let required = ops.iter().filter(|o| o.ret != u64::MAX).count();
    let mut placed_required = 0usize;
    let mut next_candidate = 0usize;
    loop {
        if placed_required == required {
            return Ok(());
        }
        // The earliest return among pending operations bounds which may go next.
        let horizon = (0..n)
            .filter(|&i| !is_done(&done, i))
            .map(|i| ops[i].ret)
            .min()
            .unwrap_or(u64::MAX);
        let mut advanced = false;
        let mut i = next_candidate;
        while i < n {
            if !is_done(&done, i) && ops[i].call <= horizon {
                let fits = match &ops[i].kind {
                    Kind::Read(v) => *v == state,
                    Kind::Write(_) => true,
                };
                if fits {
                    let new_state = match &ops[i].kind {
                        Kind::Read(_) => state.clone(),
                        Kind::Write(v) => v.clone(),
                    };
                    let mut new_done = done.clone();
                    new_done[i / 64] |= 1 << (i % 64);
                    if cache.insert((new_done.clone(), new_state.clone())) {
                        stack.push((i, state.clone()));
                        done = new_done;
                        state = new_state;
                        if ops[i].ret != u64::MAX {
                            placed_required += 1;
                        }
                        if stack.len() > best.len() {
                            best = stack.iter().map(|(j, _)| *j).collect();
                        }
                        next_candidate = 0;
                        advanced = true;
                        break;
                    }
                }
            }
            i += 1;
        }
        if advanced {
            continue;
        }
        // Nothing fits here: undo the last choice and try the one after it.
        let Some((last, before)) = stack.pop() else {
            let placed: HashSet<usize> = best.iter().copied().collect();
            let stuck = (0..n)
                .filter(|i| !placed.contains(i) && ops[*i].ret != u64::MAX)
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
            return Err(format!(
                "not linearizable: after the longest valid order found (last steps: {prefix:?}), \
                 no order places {stuck}"
            ));
        };
        done[last / 64] &= !(1 << (last % 64));
        if ops[last].ret != u64::MAX {
            placed_required -= 1;
        }
        state = before;
        next_candidate = last + 1;
    }
}
