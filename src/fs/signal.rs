//! Noticing that a process blocked in a lock wait got a signal.
//!
//! A blocking `flock`/`F_SETLKW` is a FUSE request the kernel waits on until we answer. When
//! the caller gets a signal the kernel sends FUSE_INTERRUPT, but fuser 0.18 answers that with
//! ENOSYS itself (and the kernel then stops sending interrupts for the connection), so the
//! filesystem never hears of it. Meanwhile the caller is stuck: after a fatal signal the kernel
//! waits for our answer uninterruptibly, so even Ctrl-C or `kill` cannot end it.
//!
//! So the mount watches the caller instead: every [`POLL_INTERVAL`] it reads
//! `/proc/<tid>/status` of the requesting thread and treats a pending signal that is neither
//! blocked nor ignored as an interrupt. A fatal signal shows up as SIGKILL pending on every
//! thread of the group; a handled one (the SIGALRM of `flock -w`) as pending until the thread
//! returns to user space. Answering EINTR then gives the local-filesystem behaviour: the kernel
//! turns it into ERESTARTSYS, so a handler with SA_RESTART restarts the call and anything else
//! sees EINTR (or dies).

use std::time::Duration;

/// How often a waiting request looks at its caller.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What `/proc/<tid>/status` says about the caller of a waiting request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// Still waiting, nothing pending.
    Waiting,
    /// A signal would be delivered now: end the wait with EINTR.
    Signalled,
    /// The thread is gone (or a zombie): nobody waits for the answer.
    Gone,
}

/// The signal masks of `/proc/<tid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Masks {
    thread_pending: u64,
    shared_pending: u64,
    blocked: u64,
    ignored: u64,
    zombie: bool,
}

fn parse_status(text: &str) -> Option<Masks> {
    let mut masks = Masks::default();
    let mut seen = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let field = match key {
            "SigPnd" => &mut masks.thread_pending,
            "ShdPnd" => &mut masks.shared_pending,
            "SigBlk" => &mut masks.blocked,
            "SigIgn" => &mut masks.ignored,
            "State" => {
                masks.zombie = value.starts_with('Z') || value.starts_with('X');
                continue;
            }
            _ => continue,
        };
        *field = u64::from_str_radix(value, 16).ok()?;
        seen += 1;
    }
    (seen == 4).then_some(masks)
}

fn judge(masks: &Masks) -> Caller {
    if masks.zombie {
        return Caller::Gone;
    }
    let deliverable =
        (masks.thread_pending | masks.shared_pending) & !masks.blocked & !masks.ignored;
    if deliverable != 0 {
        Caller::Signalled
    } else {
        Caller::Waiting
    }
}

/// Looks at thread `tid` (the pid in the FUSE request header, which is the calling thread).
/// A thread we cannot see (pid 0: outside our pid namespace) counts as waiting.
pub fn caller(tid: u32) -> Caller {
    if tid == 0 {
        return Caller::Waiting;
    }
    match std::fs::read_to_string(format!("/proc/{tid}/status")) {
        Ok(text) => parse_status(&text).map_or(Caller::Waiting, |m| judge(&m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Caller::Gone,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Caller::Gone,
        Err(_) => Caller::Waiting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: &str, pnd: &str, shd: &str, blk: &str, ign: &str) -> String {
        format!(
            "Name:\tflock\nUmask:\t0022\nState:\t{state}\nTgid:\t42\nPid:\t42\n\
             SigQ:\t1/63432\nSigPnd:\t{pnd}\nShdPnd:\t{shd}\nSigBlk:\t{blk}\n\
             SigIgn:\t{ign}\nSigCgt:\t0000000000004000\nCapInh:\t0000000000000000\n"
        )
    }

    fn judged(text: &str) -> Caller {
        judge(&parse_status(text).expect("parses"))
    }

    const NONE: &str = "0000000000000000";
    const SIGKILL: &str = "0000000000000100"; // signal 9 is bit 8
    const SIGALRM: &str = "0000000000002000"; // signal 14 is bit 13

    #[test]
    fn nothing_pending_keeps_waiting() {
        assert_eq!(
            judged(&status("S (sleeping)", NONE, NONE, NONE, NONE)),
            Caller::Waiting
        );
    }

    #[test]
    fn a_fatal_signal_shows_as_sigkill_on_the_thread() {
        let text = status("D (disk sleep)", SIGKILL, NONE, NONE, NONE);
        assert_eq!(judged(&text), Caller::Signalled);
    }

    #[test]
    fn a_handled_process_signal_is_shared_pending() {
        let text = status("S (sleeping)", NONE, SIGALRM, NONE, NONE);
        assert_eq!(judged(&text), Caller::Signalled);
    }

    #[test]
    fn blocked_and_ignored_signals_do_not_count() {
        assert_eq!(
            judged(&status("S", NONE, SIGALRM, SIGALRM, NONE)),
            Caller::Waiting
        );
        assert_eq!(
            judged(&status("S", SIGALRM, NONE, NONE, SIGALRM)),
            Caller::Waiting
        );
        // Blocked for the thread but SIGKILL cannot be blocked: the mask never has it.
        assert_eq!(
            judged(&status("S", SIGKILL, NONE, SIGALRM, NONE)),
            Caller::Signalled
        );
    }

    #[test]
    fn zombies_are_gone() {
        assert_eq!(
            judged(&status("Z (zombie)", NONE, NONE, NONE, NONE)),
            Caller::Gone
        );
    }

    #[test]
    fn garbage_does_not_parse() {
        assert_eq!(
            parse_status("SigPnd:\tzz\nShdPnd:\t0\nSigBlk:\t0\nSigIgn:\t0\n"),
            None
        );
        assert_eq!(parse_status("Name:\tx\n"), None);
    }

    #[test]
    fn this_thread_is_waiting_and_a_missing_one_is_gone() {
        let tid = unsafe { libc::gettid() } as u32;
        assert_eq!(caller(tid), Caller::Waiting);
        assert_eq!(caller(u32::MAX / 2), Caller::Gone);
    }
}
