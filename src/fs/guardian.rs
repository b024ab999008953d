//! The lock guardian: a process of its own (`lockfs lock-guard`, started by the mount with the
//! first lock it notes for lock-loss enforcement) that signals the holders of the mount's
//! locks when the mount cannot: its process frozen (SIGSTOP, a hang), or dead.
//!
//! The mount tells it, on its stdin, one line each:
//! - `policy AFTER_MS GRACE_MS MOUNTPOINT`: the mount's `lock_loss_after` and
//!   `lock_loss_grace`, and where it is mounted (first, once);
//! - `hold ID SESSION SIGNAL INO PID:START...`: lock ID, of SESSION, on inode INO, is held by
//!   those processes, who get SIGNAL if it is lost;
//! - `drop ID`: the lock was released, or the mount itself took care of its loss;
//! - `lease SESSION DEADLINE`: the session's lease certainly holds until DEADLINE (ns of
//!   CLOCK_MONOTONIC, which both processes read); 0 when it ended;
//! - `exit`: the mount ends cleanly (its session is closed, and its locks with it).
//!
//! Once a session's lease deadline plus `lock_loss_after` has passed, the guardian signals the
//! holders of that session's locks, and SIGKILLs those that still run after the grace, as the
//! mount's own watcher does (`lock_loss.rs`). A frozen mount renews nothing, so the deadline it
//! last sent stands; the cluster cannot expire the session before it (the lease is counted
//! from when a keep-alive was sent), and another host gets the lock only after the expiry and
//! the lock-delay. When its stdin closes without `exit` (the mount died), the guardian stays
//! until the last deadline of a session with locks has passed and acted, then exits.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Mutex;
use std::time::Duration;

use super::lock_loss::{self, Lost, Proc};

/// How often the guardian looks at the clock.
const TICK: Duration = Duration::from_millis(50);

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes the struct it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The mount's side: the guardian process, started with the first lock, and the pipe to it.
///
/// Each line is written by the thread that has it, before that thread goes on: a lock is told
/// to the guardian before the process that asked for it hears it was granted, so a mount
/// frozen right after a grant has not kept the guardian in the dark. The pipe does not block:
/// a guardian so far behind that its pipe is full counts as gone, and the mount's own watcher
/// acts instead.
pub struct Guardian {
    program: PathBuf,
    policy_line: String,
    /// The guardian and its stdin; `None` until started, or once it is gone.
    child: Mutex<Option<(Child, ChildStdin)>>,
    started: AtomicBool,
    alive: AtomicBool,
}

impl Guardian {
    pub fn new(program: PathBuf, policy: &lock_loss::Policy) -> Self {
        Guardian {
            program,
            policy_line: format!(
                "policy {} {} {}\n",
                policy.after.as_millis(),
                policy.grace.as_millis(),
                policy.mountpoint.display()
            ),
            child: Mutex::new(None),
            started: AtomicBool::new(false),
            alive: AtomicBool::new(false),
        }
    }

    /// Starts the guardian (once). One that cannot be started is logged; the mount's own
    /// watcher still acts while the mount runs.
    fn start(&self) {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let spawned = Command::new(&self.program)
            .arg("lock-guard")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                log::error!(
                    "on_lock_loss: cannot start the lock guardian {}: {e}",
                    self.program.display()
                );
                return;
            }
        };
        log::info!("on_lock_loss: lock guardian started (pid {})", child.id());
        let stdin: ChildStdin = child.stdin.take().expect("piped");
        {
            use std::os::fd::AsRawFd;
            let fd = stdin.as_raw_fd();
            // SAFETY: fcntl(2) on the pipe this process just created and owns.
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFL);
                libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
            }
        }
        *self.child.lock().expect("poisoned") = Some((child, stdin));
        self.alive.store(true, Ordering::SeqCst);
        self.send(self.policy_line.clone());
    }

    /// Started, and not known to be gone.
    pub fn running(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    fn send(&self, line: String) {
        let mut slot = self.child.lock().expect("poisoned");
        let Some((_, stdin)) = slot.as_mut() else {
            return;
        };
        if let Err(e) = stdin.write_all(line.as_bytes()) {
            log::error!("on_lock_loss: the lock guardian is gone or stuck: {e}");
            self.alive.store(false, Ordering::SeqCst);
            if let Some((mut child, stdin)) = slot.take() {
                drop(stdin);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    pub fn hold(&self, id: u64, session: u64, lost: &Lost) {
        self.start();
        let procs: Vec<String> = lost.procs.iter().map(|p| p.encode()).collect();
        self.send(format!(
            "hold {id} {session} {} {} {}\n",
            lost.signal,
            lost.ino,
            procs.join(" ")
        ));
    }

    pub fn drop_lock(&self, id: u64) {
        self.send(format!("drop {id}\n"));
    }

    /// The session's lease holds until `deadline_ns` (CLOCK_MONOTONIC); 0: it ended.
    pub fn lease(&self, session: u64, deadline_ns: u64) {
        self.send(format!("lease {session} {deadline_ns}\n"));
    }

    /// The mount ends cleanly: the guardian exits without acting.
    pub fn exit(&self) {
        self.send("exit\n".into());
        if let Some((mut child, stdin)) = self.child.lock().expect("poisoned").take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// What the guardian knows.
#[derive(Default)]
struct State {
    after: Duration,
    grace: Duration,
    mountpoint: PathBuf,
    /// Lock id → (session, the lock).
    holds: HashMap<u64, (u64, Lost)>,
    /// Session → lease deadline (CLOCK_MONOTONIC ns); 0: ended.
    leases: HashMap<u64, u64>,
}

impl State {
    /// Applies one line; false at `exit`.
    fn apply(&mut self, line: &str) -> bool {
        log::debug!("lock guardian: {line}");
        let mut words = line.split_whitespace();
        let num = |w: Option<&str>| w.and_then(|w| w.parse::<u64>().ok());
        match words.next() {
            Some("policy") => {
                self.after = Duration::from_millis(num(words.next()).unwrap_or(0));
                self.grace = Duration::from_millis(num(words.next()).unwrap_or(2000));
                self.mountpoint = PathBuf::from(words.collect::<Vec<_>>().join(" "));
            }
            Some("hold") => {
                let (Some(id), Some(session), Some(signal), Some(ino)) = (
                    num(words.next()),
                    num(words.next()),
                    words.next().and_then(|w| w.parse::<i32>().ok()),
                    num(words.next()),
                ) else {
                    log::warn!("lock guardian: bad line {line:?}");
                    return true;
                };
                let procs = words.filter_map(Proc::decode).collect();
                self.holds
                    .insert(id, (session, Lost { ino, procs, signal }));
            }
            Some("drop") => {
                if let Some(id) = num(words.next()) {
                    self.holds.remove(&id);
                }
            }
            Some("lease") => {
                if let (Some(session), Some(deadline)) = (num(words.next()), num(words.next())) {
                    self.leases.insert(session, deadline);
                }
            }
            Some("exit") => return false,
            _ => log::warn!("lock guardian: bad line {line:?}"),
        }
        true
    }

    /// Takes the locks whose session ended (`ended`), or whose lease (plus `after`) ran out
    /// by `now`.
    fn take_due(&mut self, now: u64, ended: bool) -> Vec<Lost> {
        let after = self.after.as_nanos() as u64;
        let due: Vec<u64> = self
            .holds
            .iter()
            .filter(|(_, (session, _))| match self.leases.get(session) {
                Some(0) => ended,
                Some(&deadline) => !ended && deadline.saturating_add(after) <= now,
                None => false,
            })
            .map(|(id, _)| *id)
            .collect();
        due.into_iter()
            .filter_map(|id| self.holds.remove(&id))
            .map(|(_, lost)| lost)
            .collect()
    }
}

/// `lockfs lock-guard`: reads the mount's lines from stdin until `exit`, or until stdin
/// closes and every lock left has been acted on.
pub fn run() {
    close_inherited_fds();
    let (tx, rx) = mpsc::channel::<Option<String>>();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(Some(line)).is_err() {
                return;
            }
        }
        let _ = tx.send(None);
    });
    let mut state = State::default();
    let mut mount_gone = false;
    // Victims signalled, to be killed if they still run after the grace: (when, who).
    let mut pending: Vec<(u64, Proc)> = Vec::new();
    loop {
        if !mount_gone {
            match rx.recv_timeout(TICK) {
                Ok(Some(line)) => {
                    if !state.apply(&line) {
                        return;
                    }
                }
                Ok(None) | Err(RecvTimeoutError::Disconnected) => {
                    log::info!("lock guardian: the mount is gone; acting on its leases");
                    mount_gone = true;
                    // A lock of a session whose lease never came cannot be timed.
                    let leases = &state.leases;
                    state
                        .holds
                        .retain(|_, (session, _)| leases.contains_key(session));
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        } else {
            std::thread::sleep(TICK);
        }
        let now = monotonic_ns();
        for (ended, why) in [
            (true, "the session ended"),
            (false, "the session's lease ran out"),
        ] {
            let due = state.take_due(now, ended);
            if !due.is_empty() {
                log::debug!("lock guardian: {} locks due ({why})", due.len());
                let signalled = lock_loss::signal_victims(&due, &state.mountpoint, why);
                let kill_at = now + state.grace.as_nanos() as u64;
                pending.extend(signalled.into_iter().map(|p| (kill_at, p)));
            }
        }
        pending.retain(|(at, p)| {
            if *at > now {
                return true;
            }
            if p.alive() {
                log::warn!(
                    "on_lock_loss: pid {} still runs {:?} after the signal: SIGKILL",
                    p.pid,
                    state.grace
                );
                p.kill(libc::SIGKILL);
            }
            false
        });
        if mount_gone && pending.is_empty() && state.holds.is_empty() {
            return;
        }
    }
}

/// Closes every descriptor above stderr: the guardian must not keep the mount's FUSE device
/// (or anything else) open after the mount is gone.
fn close_inherited_fds() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: close(2) of a descriptor this process does not otherwise use (the one
        // read_dir used is already closed; closing it again fails harmlessly).
        unsafe { libc::close(fd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_fall_due_when_their_sessions_lease_ends_and_not_before() {
        let me = Proc::of(std::process::id()).expect("this process");
        let mut s = State::default();
        assert!(s.apply("policy 500 1000 /mnt/x y"));
        assert_eq!(s.mountpoint, std::path::Path::new("/mnt/x y"));
        assert_eq!(s.after, Duration::from_millis(500));
        assert!(s.apply(&format!("hold 1 7 15 42 {}", me.encode())));
        assert!(s.apply(&format!("hold 2 8 9 43 {}", me.encode())));
        assert!(s.apply(&format!("hold 3 7 15 44 {}", me.encode())));
        assert!(s.apply("drop 3"));
        // No lease known yet: nothing is due.
        assert!(s.take_due(u64::MAX, false).is_empty());
        assert!(s.apply("lease 7 1000000000"));
        assert!(s.apply("lease 8 5000000000"));
        // The deadline plus `after`.
        assert!(s.take_due(1_400_000_000, false).is_empty());
        assert!(s.take_due(1_500_000_000, true).is_empty());
        let due = s.take_due(1_500_000_000, false);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].ino, due[0].signal, due[0].procs[0]), (42, 15, me));
        // A renewal moves the deadline; an ended session's locks are due at once.
        assert!(s.apply("lease 8 9000000000"));
        assert!(s.take_due(6_000_000_000, false).is_empty());
        assert!(s.apply("lease 8 0"));
        assert!(s.take_due(6_000_000_000, false).is_empty());
        assert_eq!(s.take_due(6_000_000_000, true).len(), 1);
        assert!(s.holds.is_empty());
        assert!(!s.apply("exit"));
    }
}
