//! Telling flock(2) requests from fcntl(2) requests.
//!
//! With FUSE_FLOCK_LOCKS the kernel sends flock(2) as SETLK/SETLKW with the FUSE_LK_FLOCK bit
//! in `lk_flags`, but fuser 0.18 does not pass `lk_flags` to the filesystem (fuser issue #155),
//! and nothing else in the request differs: a whole-file fcntl lock has the same range, type
//! and pid, and both owners are opaque ids. The two must not be confused: flock locks belong
//! to the open file description and never conflict with POSIX locks.
//!
//! The caller is blocked inside that very system call while we handle the request, so
//! `/proc/<tid>/syscall` names it exactly: `flock` or `fcntl` (lockf(3) is fcntl). Reading it
//! needs ptrace access to the caller, which the mount daemon has as root (CAP_SYS_PTRACE). When
//! it cannot tell (no access, pid 0 from another pid namespace), the request is taken as POSIX
//! with the kernel's owner; such a lock is still released when its open file description is
//! released (see `owners.rs`), so a misjudged flock lock never outlives its file.

use super::backend::LockStyle;

/// The style of the lock request that thread `tid` is making right now, if we can tell.
pub fn of_caller(tid: u32) -> Option<LockStyle> {
    if tid == 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{tid}/syscall")).ok()?;
    style_of_syscall(&text)
}

/// The first field of `/proc/<tid>/syscall` is the number of the system call the thread is
/// blocked in ("running" or -1 when it is in none).
fn style_of_syscall(text: &str) -> Option<LockStyle> {
    let number: i64 = text.split_whitespace().next()?.parse().ok()?;
    if number == libc::SYS_flock {
        Some(LockStyle::Flock)
    } else if number == libc::SYS_fcntl {
        Some(LockStyle::Posix)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_syscall_number() {
        let flock = format!(
            "{} 0x9 0x2 0x0 0x0 0x0 0x0 0x7ffd 0x7f00\n",
            libc::SYS_flock
        );
        let fcntl = format!(
            "{} 0x3 0x7 0x7ffd 0x0 0x0 0x0 0x7ffd 0x7f00\n",
            libc::SYS_fcntl
        );
        assert_eq!(style_of_syscall(&flock), Some(LockStyle::Flock));
        assert_eq!(style_of_syscall(&fcntl), Some(LockStyle::Posix));
        assert_eq!(
            style_of_syscall("0 0x3 0x0 0x0 0x0 0x0 0x0 0x1 0x2\n"),
            None
        );
        assert_eq!(style_of_syscall("running\n"), None);
        assert_eq!(style_of_syscall("-1 0x7ffd 0x7f00\n"), None);
        assert_eq!(style_of_syscall(""), None);
    }
}
