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
//!
//! Opening the file costs more than reading it (a path lookup in /proc, then a size query and
//! three reads to get to the end of it), and a process that locks in a loop asks from the
//! same thread every time: [`CallerFiles`] keeps the files of the latest callers open and
//! reads each with one `pread`. An open file stays bound to its thread: once the thread is
//! gone, reading it fails (even if a new thread got the same number), and it is opened anew.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use super::backend::LockStyle;

/// `/proc/<tid>/syscall` files of the latest callers, kept open. At most [`CallerFiles::KEEP`].
#[derive(Default)]
pub struct CallerFiles {
    files: Mutex<HashMap<u32, File>>,
}

impl CallerFiles {
    /// Threads whose file stays open; past this, one of them (any) is closed.
    pub const KEEP: usize = 64;

    /// The style of the lock request that thread `tid` is making right now, if we can tell.
    pub fn style_of(&self, tid: u32) -> Option<LockStyle> {
        if tid == 0 {
            return None;
        }
        // The line is at most 9 numbers, under 200 bytes.
        let mut buf = [0u8; 256];
        let kept = self.files.lock().expect("poisoned").remove(&tid);
        let read = |file: &File, buf: &mut [u8]| file.read_at(buf, 0).ok().filter(|n| *n > 0);
        let (file, n) = match kept.and_then(|f| read(&f, &mut buf).map(|n| (f, n))) {
            Some(kept) => kept,
            None => {
                let file = File::open(format!("/proc/{tid}/syscall")).ok()?;
                let n = read(&file, &mut buf)?;
                (file, n)
            }
        };
        let style = style_of_syscall(std::str::from_utf8(&buf[..n]).ok()?);
        let mut files = self.files.lock().expect("poisoned");
        if files.len() >= Self::KEEP {
            let any = *files.keys().next().expect("not empty");
            files.remove(&any);
        }
        files.insert(tid, file);
        style
    }

    /// How many files are open.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.files.lock().expect("poisoned").len()
    }
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

    /// Waits until thread `tid` is seen in a lock call of `style`, then asks three times more
    /// (through the kept file).
    fn seen_in(files: &CallerFiles, tid: u32, style: LockStyle) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while files.style_of(tid) != Some(style) {
            assert!(
                std::time::Instant::now() < deadline,
                "thread {tid} never seen in {style:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for _ in 0..3 {
            assert_eq!(files.style_of(tid), Some(style));
        }
    }

    /// A thread blocked in flock(2) and one blocked in fcntl(2) are told apart, again with
    /// their files kept open; a thread gone is not mistaken for anything; at most `KEEP` files
    /// stay open.
    #[test]
    fn tells_blocked_threads_apart_with_files_kept_open() {
        use std::os::fd::AsRawFd;
        let dir = crate::testdir::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"").unwrap();
        // An open file description lock (fcntl, F_OFD_*) conflicts with another open file
        // description even in the same process, unlike a classic POSIX lock.
        let ofd = |fd: i32, cmd: i32| {
            let mut fl: libc::flock = unsafe { std::mem::zeroed() };
            fl.l_type = libc::F_WRLCK as libc::c_short;
            fl.l_whence = libc::SEEK_SET as libc::c_short;
            unsafe { libc::fcntl(fd, cmd, &fl) }
        };
        let holder = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        assert_eq!(unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX) }, 0);
        assert_eq!(ofd(holder.as_raw_fd(), libc::F_OFD_SETLK), 0);
        let files = CallerFiles::default();
        let waiter = |fcntl: bool| {
            let path = path.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            let thread = std::thread::spawn(move || {
                tx.send(unsafe { libc::gettid() } as u32).unwrap();
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .unwrap();
                let r = if fcntl {
                    ofd(f.as_raw_fd(), libc::F_OFD_SETLKW)
                } else {
                    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }
                };
                assert_eq!(r, 0);
            });
            (thread, rx.recv().unwrap())
        };
        let (in_flock, flock_tid) = waiter(false);
        let (in_fcntl, fcntl_tid) = waiter(true);
        seen_in(&files, flock_tid, LockStyle::Flock);
        seen_in(&files, fcntl_tid, LockStyle::Posix);
        assert_eq!(files.open(), 2);
        drop(holder);
        in_flock.join().unwrap();
        in_fcntl.join().unwrap();
        // The threads are gone: their kept files read nothing, their numbers name no thread.
        assert_eq!(files.style_of(flock_tid), None);
        assert_eq!(files.style_of(fcntl_tid), None);

        // This thread is in no lock call while it asks about itself.
        let me = unsafe { libc::gettid() } as u32;
        assert_eq!(files.style_of(me), None);
        for tid in 1..=(CallerFiles::KEEP as u32 + 10) {
            let _ = files.style_of(tid);
        }
        assert!(files.open() <= CallerFiles::KEEP);
    }
}
