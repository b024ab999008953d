//! The fault suite's lock checkers, over the histories its clients log (`tests/faults.rs`): a
//! lock with fencing (no two critical sections overlap but when the older holder's host was cut
//! off, then every late write of it is refused) and a semaphore (never more holders than it
//! admits, with the same excuse). With lock-loss enforcement the caller grants no excuse: a
//! holder killed when its lock was lost must have stopped before anyone else got it. A section
//! or turn that was killed ends at the last thing it logged. Pure functions of the logs, so each
//! is tested on histories made up to pass and to fail.

use std::collections::BTreeMap;
use std::path::Path;

/// How many holders the semaphore `$M/sem` admits at once.
pub const SEM_SLOTS: usize = 2;

/// The semaphore checker: never more than [`SEM_SLOTS`] turns at once, but while a holder on
/// a cut-off host may have lost its place (the excess must include that host's turn), and every
/// client had turns. Returns the anomalies.
pub fn check_semaphore(
    dir: &Path,
    clients: &[(String, String)],
    cut_off: &[(String, u64, u64)],
) -> Vec<String> {
    let mut anomalies = Vec::new();
    // (time, +1 begin / -1 end, client, host)
    let mut events: Vec<(u64, i32, String, String)> = Vec::new();
    for (id, host) in clients {
        let text = std::fs::read_to_string(dir.join(format!("sem-{id}.log"))).unwrap_or_default();
        let mut turns = 0;
        // The turn begun and not ended yet: (begin, last logged).
        let mut open: Option<(u64, u64)> = None;
        let mut turn = |begin: u64, end: u64| {
            events.push((begin, 1, id.clone(), host.clone()));
            events.push((end, -1, id.clone(), host.clone()));
        };
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let Some(t) = f.get(2).and_then(|v| v.parse::<u64>().ok()) else {
                continue;
            };
            match f.get(3) {
                Some(&"begin") => {
                    turns += 1;
                    // A turn still open was killed: it ended after the last thing it logged.
                    if let Some((begin, last)) = open.replace((t, t)) {
                        turn(begin, last + 1);
                    }
                }
                Some(&"tick") => {
                    if let Some((_, last)) = open.as_mut() {
                        *last = t;
                    }
                }
                Some(&"end") => {
                    if let Some((begin, _)) = open.take() {
                        turn(begin, t);
                    }
                }
                _ => {}
            }
        }
        if let Some((begin, last)) = open {
            turn(begin, last + 1);
        }
        if turns == 0 {
            anomalies.push(format!("semaphore client {id} never had a turn"));
        }
    }
    // Ends first at equal times: a turn that ended as another began did not overlap it.
    events.sort_by_key(|e| (e.0, e.1));
    let mut inside: Vec<(String, String, u64)> = Vec::new();
    for (t, step, id, host) in events {
        if step < 0 {
            inside.retain(|(c, _, _)| *c != id);
            continue;
        }
        inside.push((id, host, t));
        if inside.len() > SEM_SLOTS {
            let excused = inside.iter().any(|(_, h, since)| {
                cut_off
                    .iter()
                    .any(|(cut, p0, p1)| cut == h && *p0 < t && *p1 > *since)
            });
            if !excused {
                anomalies.push(format!(
                    "{} semaphore turns at once (at most {SEM_SLOTS}) with no cut-off host among them: {inside:?}",
                    inside.len()
                ));
            }
        }
    }
    anomalies
}

#[derive(Debug, Clone)]
pub struct Section {
    pub client: String,
    pub host: String,
    pub gen: u64,
    /// When `flock` was invoked, was granted (the section began), and the section ended.
    pub invoked: u64,
    pub t0: u64,
    pub t1: u64,
    /// Logged its end; otherwise it was killed, and spans its first to its last write.
    pub completed: bool,
}

#[derive(Debug, Clone)]
pub struct StoreWrite {
    pub client: String,
    pub host: String,
    pub gen: u64,
    pub accepted: bool,
    pub t: u64,
}

#[derive(Default)]
pub struct LockHistory {
    pub sections: Vec<Section>,
    pub writes: Vec<StoreWrite>,
    /// Writes about to be made (`accepted` means nothing here).
    pub intents: Vec<StoreWrite>,
    /// flock(1) exit status -> count.
    pub attempts: BTreeMap<i32, usize>,
}

pub fn parse_lock_logs(dir: &Path, clients: &[String]) -> LockHistory {
    let mut h = LockHistory::default();
    for id in clients {
        let text =
            std::fs::read_to_string(dir.join(format!("client-{id}.log"))).unwrap_or_default();
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
            match f.first() {
                Some(&"cs") if f.len() == 7 => h.sections.push(Section {
                    client: f[1].into(),
                    gen: num(2).unwrap_or(0),
                    invoked: num(3).unwrap_or(0),
                    t0: num(4).unwrap_or(0),
                    t1: num(5).unwrap_or(0),
                    host: f[6].into(),
                    completed: true,
                }),
                Some(&"w") if f.len() == 5 || f.len() == 6 => h.writes.push(StoreWrite {
                    client: f[1].into(),
                    host: f.get(5).unwrap_or(&"").to_string(),
                    gen: num(2).unwrap_or(0),
                    accepted: f[3] == "ok",
                    t: num(4).unwrap_or(0),
                }),
                Some(&"i") if f.len() == 5 => h.intents.push(StoreWrite {
                    client: f[1].into(),
                    host: f[4].into(),
                    gen: num(2).unwrap_or(0),
                    accepted: false,
                    t: num(3).unwrap_or(0),
                }),
                Some(&"attempt") if f.len() == 4 => {
                    *h.attempts.entry(f[2].parse().unwrap_or(-1)).or_default() += 1
                }
                _ => {}
            }
        }
    }
    h.sections.extend(killed_sections(&h));
    h.sections.sort_by_key(|s| s.t0);
    h
}

/// The sections that wrote (or were about to) and never logged their end (killed): each from
/// its first write to its last, what it did while it held the lock as far as anyone can tell.
/// A write is made within moments of its intent: a holder is killed or stuck only after it.
fn killed_sections(h: &LockHistory) -> Vec<Section> {
    let mut spans: BTreeMap<(String, u64), (String, u64, u64)> = BTreeMap::new();
    for w in h.writes.iter().chain(&h.intents) {
        let completed = h
            .sections
            .iter()
            .any(|s| s.client == w.client && s.gen == w.gen);
        if completed {
            continue;
        }
        let span = spans
            .entry((w.client.clone(), w.gen))
            .or_insert((w.host.clone(), w.t, w.t));
        span.1 = span.1.min(w.t);
        span.2 = span.2.max(w.t);
    }
    spans
        .into_iter()
        .map(|((client, gen), (host, t0, t1))| Section {
            client,
            host,
            gen,
            invoked: t0,
            t0,
            t1,
            completed: false,
        })
        .collect()
}

/// The lock checker; returns the anomalies, each with the history that shows it.
pub fn check_locks(h: &LockHistory, cut_off: &[(String, u64, u64)]) -> Vec<String> {
    let mut anomalies = Vec::new();
    let mut by_gen: BTreeMap<u64, &Section> = BTreeMap::new();
    for s in &h.sections {
        if !(s.invoked <= s.t0 && s.t0 <= s.t1) {
            anomalies.push(format!("a section's times are out of order: {s:?}"));
        }
        if s.gen == 0 {
            anomalies.push(format!("no fencing token after a grant: {s:?}"));
        }
        if let Some(other) = by_gen.insert(s.gen, s) {
            anomalies.push(format!(
                "generation {} granted twice:\n  {other:?}\n  {s:?}",
                s.gen
            ));
        }
    }
    for (i, x) in h.sections.iter().enumerate() {
        for y in &h.sections[i + 1..] {
            // y started after x (sorted by t0).
            if x.t1 < y.t0 && x.gen >= y.gen {
                anomalies.push(format!(
                    "a later grant has a lower or equal generation:\n  {x:?}\n  {y:?}"
                ));
            }
            let overlap = x.t0 < y.t1 && y.t0 < x.t1;
            if !overlap || x.gen == y.gen {
                continue;
            }
            let (older, newer) = if x.gen < y.gen { (x, y) } else { (y, x) };
            // Allowed only if the older holder's host was cut off past its TTL meanwhile.
            let excused = cut_off
                .iter()
                .any(|(host, p0, p1)| *host == older.host && *p0 < newer.t0 && *p1 > older.t0);
            if !excused {
                anomalies.push(format!(
                    "two critical sections overlap and the older holder was never cut off:\n  \
                     {older:?}\n  {newer:?}"
                ));
                continue;
            }
            // Fencing: once the newer holder's write was accepted, none of the older's is.
            let first_newer = h
                .writes
                .iter()
                .filter(|w| w.client == newer.client && w.gen == newer.gen && w.accepted)
                .map(|w| w.t)
                .min();
            if let Some(t) = first_newer {
                for w in h.writes.iter().filter(|w| {
                    w.client == older.client && w.gen == older.gen && w.accepted && w.t > t
                }) {
                    anomalies.push(format!(
                        "a stale holder's write was accepted after a newer holder's:\n  \
                         older {older:?}\n  newer {newer:?}\n  accepted {w:?}"
                    ));
                }
            }
        }
    }
    anomalies
}

/// The times (ns since the epoch) at which a node's log says it became the leader.
pub fn elections_ns(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("is now the leader"))
        .filter_map(log_time_ns)
        .collect()
}

/// The time of a log line that starts `[YYYY-MM-DDTHH:MM:SS.mmmZ ...`, in ns since the epoch.
fn log_time_ns(line: &str) -> Option<u64> {
    let stamp = line.strip_prefix('[')?.get(..24)?;
    let num = |range: std::ops::Range<usize>| stamp.get(range)?.parse::<u64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    // Days from 1970-01-01 to the date (the proleptic Gregorian calendar).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s;
    Some(secs * 1_000_000_000 + ms * 1_000_000)
}

/// The ephemeral file of a host cut off at `cut_ns`, as another host saw it (`seen`: (time,
/// present)): present until the host's keep-alives could have lapsed (half a TTL after the
/// cut), gone within a TTL and `grace_ns` after the host's session timer last started, and
/// never back. A leader elected during the cut starts every session's timer afresh (so a
/// failover never expires a healthy session), so the timer starts at the cut or at the last
/// election (`elections_ns`) before the file went, whichever is later. Returns the anomalies.
pub fn check_ephemeral(
    seen: &[(u64, bool)],
    cut_ns: u64,
    elections_ns: &[u64],
    ttl_ns: u64,
    grace_ns: u64,
) -> Vec<String> {
    let mut anomalies = Vec::new();
    let vanished = seen.iter().find(|(_, present)| !present).map(|(t, _)| *t);
    match vanished {
        None => anomalies.push("the ephemeral file of the cut-off host never vanished".into()),
        Some(t) if t < cut_ns + ttl_ns / 2 => anomalies.push(format!(
            "the ephemeral file vanished while its host was connected ({:.1} s before the \
             cut-off + TTL/2); seen: {seen:?}",
            (cut_ns + ttl_ns / 2 - t) as f64 / 1e9
        )),
        Some(t) => {
            let timer = elections_ns
                .iter()
                .copied()
                .filter(|&e| e > cut_ns && e < t)
                .max()
                .unwrap_or(cut_ns);
            if t > timer + ttl_ns + grace_ns {
                let since = if timer > cut_ns {
                    format!(
                        ", {:.1} s after the last election during the cut",
                        (t - timer) as f64 / 1e9
                    )
                } else {
                    String::new()
                };
                anomalies.push(format!(
                    "the ephemeral file outlived its cut-off host's TTL: gone {:.1} s after the \
                     cut-off{since}",
                    (t - cut_ns) as f64 / 1e9
                ));
            }
        }
    }
    if seen.iter().skip_while(|(_, p)| *p).any(|(_, p)| *p) {
        anomalies.push(format!("the ephemeral file came back: {seen:?}"));
    }
    anomalies
}
