//! Lock-loss enforcement: a process that holds a lock through this mount does not outlive the
//! lock. When the session that holds this host's locks is lost, or may be about to be (its
//! lease ran out: jeopardy, for longer than `lock_loss_after`), every process holding a lock
//! through the mount gets a signal, and KILL if it still runs `lock_loss_grace` later. Each is
//! logged. Which signal, lock by lock:
//! - the file's own `user.lockfs.on_loss` (`term` or `kill`), which every grant carries, so a
//!   leader's lock file can demand it of every host;
//! - otherwise the mount option `on_lock_loss=signal[:SIG]` (TERM by default);
//! - otherwise none: the lock is not even noted.
//!
//! Why at jeopardy: the mount's lease runs out no later than the cluster's view of the session,
//! so from then on the cluster may expire the session and, once the lock-delay is over, grant
//! the lock to another host. Signalled at jeopardy, a holder has the lock-delay (5 s by default)
//! to die before anyone else can hold its lock. A session that comes back from jeopardy keeps
//! its locks, but its holders have been told to stop already: safety first, as `lockfs run`
//! does for its command.
//!
//! Who holds a lock: the kernel's locks are the open file's (flock) or the process's (POSIX),
//! and a descriptor is shared with the processes that inherit it. So when a lock is granted, the
//! mount notes the requesting process and those of its ancestors that have the file open
//! through this mount (the shell of `exec 9>f; flock 9`, whose `flock(1)` child asked); when
//! the lock is lost, it signals those that still run, and their descendants that have the file
//! open (the command of `flock f -c CMD`). Each process is known by its pid and start time, so
//! a recycled pid is never signalled. A lock is forgotten when it is released: an unlock of its
//! whole range, a POSIX owner's close, or the release of the file it was taken through.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::backend::{LockStyle, OnLoss};
use super::guardian::Guardian;

/// The mount's lock-loss options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `on_lock_loss`: sent first to the holders of locks whose files set no `on_loss`; with
    /// `None` only those files' holders are signalled.
    pub signal: Option<i32>,
    /// How long the session may be in jeopardy before its holders are signalled.
    pub after: Duration,
    /// From the signal to SIGKILL.
    pub grace: Duration,
    /// Where the mount is: a holder's descriptors point below it.
    pub mountpoint: PathBuf,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            signal: None,
            after: Duration::ZERO,
            grace: Duration::from_secs(2),
            mountpoint: PathBuf::new(),
        }
    }
}

impl Policy {
    /// The signal for the holders of a lock granted with the file's `on_loss` setting, if
    /// any is due.
    pub fn signal_for(&self, on_loss: Option<OnLoss>) -> Option<i32> {
        match on_loss {
            Some(OnLoss::Term) => Some(libc::SIGTERM),
            Some(OnLoss::Kill) => Some(libc::SIGKILL),
            None => self.signal,
        }
    }
}

/// The signal of `signal` or `signal:NAME` (TERM, KILL, INT, HUP, QUIT, USR1, USR2).
pub fn parse(value: &str) -> Result<i32, String> {
    let name = match value.split_once(':') {
        None if value == "signal" => "TERM",
        Some(("signal", name)) => name.trim_start_matches("SIG"),
        _ => return Err(format!("on_lock_loss={value}: signal or signal:SIG")),
    };
    Ok(match name {
        "TERM" => libc::SIGTERM,
        "KILL" => libc::SIGKILL,
        "INT" => libc::SIGINT,
        "HUP" => libc::SIGHUP,
        "QUIT" => libc::SIGQUIT,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        _ => return Err(format!("on_lock_loss={value}: unknown signal {name}")),
    })
}

/// A process, known by its pid and its start time (clock ticks after boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Proc {
    pub pid: u32,
    started: u64,
}

impl Proc {
    pub fn of(pid: u32) -> Option<Proc> {
        let (_, started) = stat(pid)?;
        Some(Proc { pid, started })
    }

    /// Still the same process (not exited, its pid not reused).
    pub fn alive(&self) -> bool {
        stat(self.pid).is_some_and(|(_, started)| started == self.started)
    }

    /// Sends `signal`; the caller has just seen it [`Proc::alive`].
    pub fn kill(&self, signal: i32) {
        // SAFETY: kill(2) of the process identified by its start time just now.
        unsafe { libc::kill(self.pid as i32, signal) };
    }

    /// `PID:START`, as the lock guardian reads it (`guardian.rs`).
    pub fn encode(&self) -> String {
        format!("{}:{}", self.pid, self.started)
    }

    pub fn decode(word: &str) -> Option<Proc> {
        let (pid, started) = word.split_once(':')?;
        Some(Proc {
            pid: pid.parse().ok()?,
            started: started.parse().ok()?,
        })
    }
}

/// (parent pid, start time) of `pid`, from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields follow its last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // After the name: state (3), ppid (4), ... starttime (22).
    Some((fields.get(1)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

/// Whether `pid` has a descriptor on inode `ino` below `mountpoint`. Reads `/proc` only: no
/// request reaches the mount (it may be waiting for the cluster).
fn has_open(pid: u32, ino: u64, mountpoint: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        let below = std::fs::read_link(fd.path()).is_ok_and(|p| p.starts_with(mountpoint));
        below
            && std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .is_ok_and(|info| info.lines().any(|l| l == format!("ino:\t{ino}")))
    })
}

/// Which lock: the open file it was taken through, its node, its owner and its style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LockKey {
    pub fh: u64,
    pub ino: u64,
    pub owner: u64,
    pub style: LockStyle,
}

/// A lock granted here.
struct Held {
    /// Its name to the lock guardian.
    id: u64,
    session: u64,
    lost: Lost,
}

/// A lock lost: its node, who held it and the signal they get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub ino: u64,
    pub procs: Vec<Proc>,
    pub signal: i32,
}

/// The locks held through this mount and who holds them; each change is told to the lock
/// guardian, if there is one (`guardian.rs`).
#[derive(Default)]
pub struct Holders {
    held: Mutex<HashMap<LockKey, Held>>,
    next_id: std::sync::atomic::AtomicU64,
    guardian: std::sync::OnceLock<Guardian>,
    /// The last lease told to the guardian, by session.
    lease_told: Mutex<HashMap<u64, u64>>,
}

impl Holders {
    /// From now on, locks noted here are told to `guardian` too.
    pub fn set_guardian(&self, guardian: Guardian) {
        let _ = self.guardian.set(guardian);
    }

    /// Tells the guardian how long `session`'s lease certainly holds (`deadline_ns`, of
    /// CLOCK_MONOTONIC), when that changed by more than a millisecond.
    pub fn lease(&self, session: u64, deadline_ns: u64) {
        let Some(guardian) = self.guardian.get() else {
            return;
        };
        let mut told = self.lease_told.lock().expect("poisoned");
        if told
            .get(&session)
            .is_some_and(|t| t.abs_diff(deadline_ns) < 1_000_000)
        {
            return;
        }
        if told.len() > 64 {
            told.clear();
        }
        told.insert(session, deadline_ns);
        guardian.lease(session, deadline_ns);
    }

    /// Whether a running lock guardian signals the holders of lost locks.
    pub fn guarded(&self) -> bool {
        self.guardian.get().is_some_and(Guardian::running)
    }

    /// The locks of every session but `keep` are lost: forgets them here and tells the
    /// guardian that their sessions ended, so that it signals their holders.
    pub fn hand_over(&self, keep: Option<u64>) {
        let Some(guardian) = self.guardian.get() else {
            return;
        };
        let mut held = self.held.lock().expect("poisoned");
        let mut ended = BTreeSet::new();
        held.retain(|_, h| {
            let lost = Some(h.session) != keep;
            if lost {
                ended.insert(h.session);
            }
            !lost
        });
        for session in ended {
            guardian.lease(session, 0);
        }
    }

    fn forget(&self, gone: impl IntoIterator<Item = Held>) -> Vec<Held> {
        let gone: Vec<Held> = gone.into_iter().collect();
        if let Some(guardian) = self.guardian.get() {
            for h in &gone {
                guardian.drop_lock(h.id);
            }
        }
        gone
    }

    /// Lock `key` was granted to `requester` in `session`; its holders get `signal` if it is
    /// lost.
    pub fn granted(
        &self,
        mountpoint: &Path,
        session: u64,
        key: LockKey,
        requester: u32,
        signal: i32,
    ) {
        let ino = key.ino;
        let mut procs: Vec<Proc> = Proc::of(requester).into_iter().collect();
        // Ancestors that share the file: a shell whose child took the lock on its descriptor.
        let mut pid = requester;
        for _ in 0..64 {
            let Some((parent, _)) = stat(pid) else { break };
            if parent <= 1 {
                break;
            }
            if has_open(parent, ino, mountpoint) {
                procs.extend(Proc::of(parent));
            }
            pid = parent;
        }
        if procs.is_empty() {
            return;
        }
        let id = 1 + self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let held = Held {
            id,
            session,
            lost: Lost { ino, procs, signal },
        };
        let mut map = self.held.lock().expect("poisoned");
        if let Some(guardian) = self.guardian.get() {
            guardian.hold(id, session, &held.lost);
        }
        if let Some(old) = map.insert(key, held) {
            self.forget([old]);
        }
    }

    /// The flock lock `key` was released, or its POSIX owner's whole range on its node was
    /// (then through whichever open file).
    pub fn released(&self, key: LockKey) {
        let mut held = self.held.lock().expect("poisoned");
        let same = |k: &LockKey| match key.style {
            LockStyle::Flock => *k == key,
            LockStyle::Posix => (k.ino, k.owner, k.style) == (key.ino, key.owner, key.style),
        };
        let gone: Vec<LockKey> = held.keys().filter(|k| same(k)).copied().collect();
        self.forget(gone.iter().filter_map(|k| held.remove(k)));
    }

    /// Open file `fh` was released: the locks taken through it went with it.
    pub fn closed(&self, fh: u64) {
        let mut held = self.held.lock().expect("poisoned");
        let gone: Vec<LockKey> = held.keys().filter(|k| k.fh == fh).copied().collect();
        self.forget(gone.iter().filter_map(|k| held.remove(k)));
    }

    /// Takes the locks of `owner` in `style` on node `ino` (released by an administrator).
    pub fn take_lock(&self, ino: u64, owner: u64, style: LockStyle) -> Vec<Lost> {
        let mut held = self.held.lock().expect("poisoned");
        let gone: Vec<LockKey> = held
            .keys()
            .filter(|k| (k.ino, k.owner, k.style) == (ino, owner, style))
            .copied()
            .collect();
        let gone = gone.iter().filter_map(|k| held.remove(k));
        self.forget(gone).into_iter().map(|h| h.lost).collect()
    }

    /// Takes the locks of every session but `keep`.
    pub fn take_lost(&self, keep: Option<u64>) -> Vec<Lost> {
        let mut held = self.held.lock().expect("poisoned");
        let lost: Vec<_> = held
            .iter()
            .filter(|(_, h)| Some(h.session) != keep)
            .map(|(k, _)| *k)
            .collect();
        let gone = lost.iter().filter_map(|k| held.remove(k));
        self.forget(gone).into_iter().map(|h| h.lost).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.held.lock().expect("poisoned").is_empty()
    }
}

impl Drop for Holders {
    /// The mount ends: its guardian, if any, exits without acting.
    fn drop(&mut self) {
        if let Some(guardian) = self.guardian.get() {
            guardian.exit();
        }
    }
}

/// Every process's children, from `/proc`: parent pid → child pids.
pub fn children() -> HashMap<u32, Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some((parent, _)) = stat(pid) {
                children.entry(parent).or_default().push(pid);
            }
        }
    }
    children
}

/// The children of `pid`: from `/proc/PID/task/*/children`, which only the process's own
/// entries serve; where the kernel has no such files, from `all` (every process's parent,
/// scanned once).
fn children_of(pid: u32, all: &mut Option<HashMap<u32, Vec<u32>>>) -> Vec<u32> {
    if all.is_none() {
        let mut found: Option<Vec<u32>> = None;
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let Ok(text) = std::fs::read_to_string(task.path().join("children")) else {
                    continue;
                };
                let kids = found.get_or_insert_with(Vec::new);
                kids.extend(
                    text.split_whitespace()
                        .filter_map(|w| w.parse::<u32>().ok()),
                );
            }
        }
        let own = format!("/proc/self/task/{}/children", std::process::id());
        if found.is_some() || Path::new(&own).exists() {
            return found.unwrap_or_default();
        }
        *all = Some(children());
    }
    all.as_ref()
        .and_then(|m| m.get(&pid).cloned())
        .unwrap_or_default()
}

/// The holders of the `lost` locks still running, each with its lock's node and signal.
fn holders(lost: &[Lost]) -> Vec<(u64, i32, Proc)> {
    lost.iter()
        .flat_map(|l| l.procs.iter().map(move |p| (l.ino, l.signal, *p)))
        .filter(|(_, _, p)| p.alive())
        .collect()
}

/// Whom to signal, with the node of a lock it holds and its signal: every holder, and each of
/// their descendants that has the lock's file open below `mountpoint`; KILL for one whose
/// locks ask for different signals.
fn victims(
    holders: Vec<(u64, i32, Proc)>,
    descendants: Vec<(u64, i32, Proc)>,
    mountpoint: &Path,
) -> BTreeMap<Proc, (u64, i32)> {
    let mut victims: BTreeMap<Proc, (u64, i32)> = BTreeMap::new();
    let mut note = |p: Proc, ino: u64, signal: i32| {
        let e = victims.entry(p).or_insert((ino, signal));
        if e.1 != signal {
            *e = (ino, libc::SIGKILL);
        }
    };
    for (ino, signal, p) in holders {
        note(p, ino, signal);
    }
    for (ino, signal, p) in descendants {
        if has_open(p.pid, ino, mountpoint) {
            note(p, ino, signal);
        }
    }
    victims
}

/// Signals the holders of the `lost` locks (logging each) and their descendants that have
/// the lock's file open below `mountpoint`, each with its lock's signal (KILL where its locks
/// ask for different ones); returns those sent a signal other than SIGKILL, to be killed if
/// they outlive the grace. `why` is for the log.
///
/// Everyone is stopped (SIGSTOP) before anything else is looked at: the holders, then each
/// descendant as it is found, before its own children are looked for. So none forks a child
/// the search would miss (`flock f CMD` forking CMD just as its lock is lost), and none runs
/// on if the reading of `/proc` that follows is slow to return. It can be: on a frozen mount,
/// processes that close a file on it wait for the mount (in `exit`, or in `execve` holding
/// their exec locks), and a scan of `/proc` was seen to wait until the mount thawed. A stopped
/// holder does no harm meanwhile. They are continued after the signal, so that a TERM is
/// handled, and those that are no victims go on.
pub fn signal_victims(lost: &[Lost], mountpoint: &Path, why: &str) -> Vec<Proc> {
    let roots = holders(lost);
    let mut stopped: BTreeSet<Proc> = BTreeSet::new();
    for (_, _, p) in &roots {
        p.kill(libc::SIGSTOP);
        stopped.insert(*p);
    }
    let mut all = None;
    let mut descendants: Vec<(u64, i32, Proc)> = Vec::new();
    for (ino, signal, root) in &roots {
        let mut todo = vec![root.pid];
        let mut seen = BTreeSet::new();
        while let Some(pid) = todo.pop() {
            if !seen.insert(pid) || seen.len() > 10_000 {
                continue;
            }
            for child in children_of(pid, &mut all) {
                if let Some(p) = Proc::of(child) {
                    p.kill(libc::SIGSTOP);
                    stopped.insert(p);
                    descendants.push((*ino, *signal, p));
                    todo.push(child);
                }
            }
        }
    }
    if !stopped.is_empty() {
        log::debug!(
            "on_lock_loss: {why}: {} holders and descendants stopped",
            stopped.len()
        );
    }
    let victims = victims(roots, descendants, mountpoint);
    for (p, (ino, signal)) in &victims {
        log::warn!(
            "on_lock_loss: {why}: signal {signal} to pid {} (it holds a lock on inode {ino})",
            p.pid
        );
        p.kill(*signal);
    }
    for p in &stopped {
        p.kill(libc::SIGCONT);
    }
    victims
        .into_iter()
        .filter(|(_, (_, signal))| *signal != libc::SIGKILL)
        .map(|(p, _)| p)
        .collect()
}

/// Signals the holders of the `lost` locks, then kills those still running after the
/// policy's grace. `why` is for the log.
pub async fn enforce(lost: Vec<Lost>, policy: &Policy, why: &str) {
    let survivors = signal_victims(&lost, &policy.mountpoint, why);
    if survivors.is_empty() {
        return;
    }
    tokio::time::sleep(policy.grace).await;
    for p in survivors.into_iter().filter(|p| p.alive()) {
        log::warn!(
            "on_lock_loss: pid {} still runs {:?} after the signal: SIGKILL",
            p.pid,
            policy.grace
        );
        p.kill(libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_name_a_signal() {
        assert_eq!(parse("signal"), Ok(libc::SIGTERM));
        assert_eq!(parse("signal:KILL"), Ok(libc::SIGKILL));
        assert_eq!(parse("signal:SIGUSR1"), Ok(libc::SIGUSR1));
        assert!(parse("signal:NOPE").is_err());
        assert!(parse("kill").is_err());
    }

    #[test]
    fn a_process_is_known_by_its_start_time() {
        let me = Proc::of(std::process::id()).expect("this process");
        assert!(me.alive());
        let impostor = Proc {
            pid: me.pid,
            started: me.started + 1,
        };
        assert!(!impostor.alive());
    }

    #[test]
    fn released_and_closed_locks_are_forgotten_and_lost_ones_taken_once() {
        let h = Holders::default();
        let me = std::process::id();
        let mnt = Path::new("/nonexistent");
        let key = |fh, ino, owner, style| LockKey {
            fh,
            ino,
            owner,
            style,
        };
        let term = libc::SIGTERM;
        h.granted(mnt, 1, key(10, 5, 10, LockStyle::Flock), me, term);
        h.granted(mnt, 1, key(11, 5, 77, LockStyle::Posix), me, term);
        h.granted(mnt, 1, key(12, 6, 77, LockStyle::Posix), me, term);
        h.granted(mnt, 2, key(13, 7, 13, LockStyle::Flock), me, term);
        h.released(key(10, 5, 10, LockStyle::Flock));
        // A POSIX owner's whole unlock of a file, through any open file.
        h.released(key(99, 5, 77, LockStyle::Posix));
        h.released(key(99, 6, 77, LockStyle::Posix));
        assert_eq!(h.take_lost(Some(2)), vec![]);
        h.granted(mnt, 1, key(14, 8, 14, LockStyle::Flock), me, libc::SIGKILL);
        h.closed(13);
        let lost = h.take_lost(Some(2));
        assert_eq!(lost.len(), 1);
        assert_eq!((lost[0].ino, lost[0].signal), (8, libc::SIGKILL));
        assert!(h.is_empty());
    }

    #[test]
    fn a_files_setting_decides_before_the_mount_option() {
        let off = Policy::default();
        assert_eq!(off.signal_for(None), None);
        assert_eq!(off.signal_for(Some(OnLoss::Term)), Some(libc::SIGTERM));
        let usr1 = Policy {
            signal: Some(libc::SIGUSR1),
            ..Policy::default()
        };
        assert_eq!(usr1.signal_for(None), Some(libc::SIGUSR1));
        assert_eq!(usr1.signal_for(Some(OnLoss::Kill)), Some(libc::SIGKILL));
    }

    #[test]
    fn a_process_holding_locks_that_ask_for_different_signals_gets_kill() {
        let me = Proc::of(std::process::id()).expect("this process");
        let lost = |ino, signal| Lost {
            ino,
            procs: vec![me],
            signal,
        };
        let mnt = Path::new("/nonexistent");
        let one = victims(holders(&[lost(5, libc::SIGTERM)]), Vec::new(), mnt);
        assert_eq!(one.get(&me), Some(&(5, libc::SIGTERM)));
        let both = holders(&[lost(5, libc::SIGTERM), lost(6, libc::SIGUSR1)]);
        let two = victims(both, Vec::new(), mnt);
        assert_eq!(two.get(&me).map(|v| v.1), Some(libc::SIGKILL));
    }

    #[test]
    fn children_come_from_the_process_own_task_entries() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut all = None;
        let kids = children_of(std::process::id(), &mut all);
        let _ = child.kill();
        let _ = child.wait();
        assert!(kids.contains(&child.id()), "{kids:?}");
        assert!(all.is_none(), "/proc/PID/task/*/children were not used");
    }
}
