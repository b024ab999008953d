//! flock(2) and fcntl(2) locks through FUSE: SETLK, SETLKW and GETLK become cluster-wide
//! locks of the mount's session.
//!
//! What the kernel tells us (fuser 0.18, `setlk`/`getlk`): the open file (`fh`), a lock owner,
//! an inclusive byte range (`end` = `OFFSET_MAX` for "to EOF"), the type (F_RDLCK, F_WRLCK,
//! F_UNLCK), the caller's tgid as `pid` (0 for unlocks), and `sleep` for the blocking forms.
//! The owner is the kernel's id of the open file description for flock(2) and OFD locks, and of
//! the process's file table for classic POSIX locks. For flock we use our handle instead: the
//! kernel's id is the address of the `struct file`, which it may hand to the next open while
//! the RELEASE of the previous one is still on its way to us (FUSE sends it in the
//! background). The cluster would then take the new open for the old holder, grant it without
//! a new fencing generation, and let the late release take the new holder's lock. A handle is
//! one open file description and its id is never reused, so a late release never takes a
//! later holder's lock, and every grant bumps the generation.
//! Which of flock or fcntl the request is, fuser does not say: see `lock_style.rs`.
//!
//! A lock needs a backend handle: a file opened lazily (read-only, not ephemeral: see
//! `open_files.rs`) gets one at its first SETLK, SETLKW or GETLK, opened by inode in the
//! session the file was opened in. If the file was deleted since the open(2), that first lock
//! fails with ENOENT, the open's error (a lock through a handle opened before the deletion
//! fails with ENOENT as well); if the session ended, with EIO. A flock unlock through a file
//! without a handle has nothing to release and costs nothing.
//!
//! A blocking request that the cluster queues is answered from its own task when the grant is
//! pushed to us, so the FUSE request loop never waits. Signals to the waiting process end the
//! wait (see `signal.rs`): the wait is withdrawn in the cluster, and if the grant won that race
//! the cluster releases it, so a lock is never left granted to a process that saw EINTR. The
//! mount going away ends every wait the same way.

use super::backend::{Errno, Grant, LockKind, LockReply, LockSpec, LockStyle};
use super::filesystem::Inner;
use super::lock_loss::LockKey;
use super::open_files::OpenFile;
use super::signal;

/// The kernel's "to the end of the file" (`OFFSET_MAX`).
const OFFSET_MAX: u64 = i64::MAX as u64;

/// A lock request as the kernel sent it.
pub struct KernelLock {
    pub ino: u64,
    pub fh: u64,
    pub owner: u64,
    /// Inclusive, as `struct file_lock` has it.
    pub start: u64,
    pub end: u64,
    pub typ: i32,
    /// The caller's tgid, shown to F_GETLK callers.
    pub pid: u32,
    /// The calling thread (the request header's pid): watched for signals.
    pub tid: u32,
}

/// The backend's half-open range of an inclusive kernel range.
fn backend_range(start: u64, end: u64) -> (u64, u64) {
    let end = if end >= OFFSET_MAX { u64::MAX } else { end + 1 };
    (start, end)
}

/// The kernel's inclusive end of a half-open backend range.
fn kernel_end(end: u64) -> u64 {
    if end == u64::MAX || end > OFFSET_MAX {
        OFFSET_MAX
    } else {
        end.saturating_sub(1)
    }
}

fn kind_of(typ: i32) -> Result<LockKind, Errno> {
    match typ {
        libc::F_RDLCK => Ok(LockKind::Shared),
        libc::F_WRLCK => Ok(LockKind::Exclusive),
        _ => Err(Errno::EINVAL),
    }
}

/// SETLK (`sleep == false`) and SETLKW.
pub async fn setlk(inner: &Inner, req: KernelLock, sleep: bool) -> Result<(), Errno> {
    let file = inner.files.get(req.fh)?;
    let style = inner.callers.style_of(req.tid).unwrap_or_else(|| {
        log::debug!("cannot tell flock from fcntl for thread {}: POSIX", req.tid);
        LockStyle::Posix
    });
    // flock locks belong to the handle: without one, nothing is held through this file.
    let unlock = req.typ == libc::F_UNLCK;
    if unlock && style == LockStyle::Flock && file.opened_handle().await.is_none() {
        return Ok(());
    }
    let handle = file.handle(&*inner.backend).await?;
    let (start, end) = backend_range(req.start, req.end);
    let owner = match style {
        LockStyle::Flock => handle,
        LockStyle::Posix => req.owner,
    };
    if unlock {
        inner
            .backend
            .unlock(handle, owner, style, start, end)
            .await?;
        if style == LockStyle::Flock || (start, end) == (0, u64::MAX) {
            inner.holders.released(LockKey {
                fh: req.fh,
                ino: req.ino,
                owner,
                style,
            });
        }
        return Ok(());
    }
    let spec = LockSpec {
        handle,
        owner,
        style,
        kind: kind_of(req.typ)?,
        start,
        end,
        pid: req.pid,
    };
    if style == LockStyle::Posix {
        inner.owners.note(req.ino, req.owner, req.fh);
    }
    let granted = |grant| note_holder(inner, &file, &req, (owner, style), grant);
    match inner.backend.lock(spec, sleep).await? {
        LockReply::Granted(grant) => {
            usable(inner, &file).await?;
            granted(grant);
            Ok(())
        }
        LockReply::WouldBlock { .. } => Err(Errno::EAGAIN),
        LockReply::Queued { wait } if sleep => {
            log::debug!("wait {wait} of thread {} queued (handle {handle})", req.tid);
            let _waiting = inner.metrics.waiting();
            let grant = wait_for_grant(inner, wait, req.tid).await?;
            usable(inner, &file).await?;
            granted(grant);
            Ok(())
        }
        LockReply::Queued { wait } => {
            inner.backend.cancel_wait(wait).await?;
            Err(Errno::EAGAIN)
        }
    }
}

/// A grant reaches the process only while the lease of the session that holds it certainly
/// holds: a mount that was frozen or cut off may hear of a grant after its lease ran out, when
/// the cluster may have ended the session and given the lock to another host. Otherwise the
/// process gets EIO, as for everything of a lost session; the lock goes with the session, or
/// with the file's close.
async fn usable(inner: &Inner, file: &OpenFile) -> Result<(), Errno> {
    if inner.backend.lease_holds(file.opened_in()).await? {
        Ok(())
    } else {
        log::warn!(
            "a lock on inode {} was granted after the session's lease ran out: EIO",
            file.ino
        );
        Err(Errno::EIO)
    }
}

/// Notes who holds the lock just granted, when the file's `on_loss` or the mount's
/// `on_lock_loss` asks for it to be signalled on loss (`lock_loss.rs`); the requester still
/// waits for the answer, so it is there to be seen.
fn note_holder(
    inner: &Inner,
    file: &OpenFile,
    req: &KernelLock,
    (owner, style): (u64, LockStyle),
    grant: Grant,
) {
    let Some(policy) = inner.lock_loss.get() else {
        return;
    };
    let Some(signal) = policy.signal_for(grant.on_loss) else {
        return;
    };
    let Some(session) = file.opened_in().or_else(|| inner.backend.live_session()) else {
        return;
    };
    let key = LockKey {
        fh: req.fh,
        ino: req.ino,
        owner,
        style,
    };
    inner
        .holders
        .granted(&policy.mountpoint, session, key, req.pid, signal);
    super::filesystem::tell_lease(inner);
}

/// Waits for a queued request until it is granted, its caller gets a signal or goes away, or
/// the mount ends.
async fn wait_for_grant(inner: &Inner, wait: u64, tid: u32) -> Result<Grant, Errno> {
    let mut shutdown = inner.shutdown.subscribe();
    let granted = inner.backend.wait_granted(wait);
    tokio::pin!(granted);
    let mut tick = tokio::time::interval(signal::POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let why = loop {
        if *shutdown.borrow() {
            break "the mount is ending";
        }
        tokio::select! {
            biased;
            result = &mut granted => {
                log::debug!("wait {wait} of thread {tid} ended: {result:?}");
                return result;
            }
            _ = shutdown.changed() => continue,
            _ = tick.tick() => match signal::caller(tid) {
                signal::Caller::Waiting => continue,
                signal::Caller::Signalled => break "signal",
                signal::Caller::Gone => break "caller gone",
            },
        }
    };
    let was_granted = inner.backend.cancel_wait(wait).await?;
    log::debug!("wait {wait} of thread {tid} cancelled ({why}); granted first: {was_granted}");
    Err(Errno::EINTR)
}

/// GETLK: the conflicting lock as (start, inclusive end, type, pid), or F_UNLCK with the
/// request's own range when nothing conflicts.
pub async fn getlk(inner: &Inner, req: KernelLock) -> Result<(u64, u64, i32, u32), Errno> {
    let file = inner.files.get(req.fh)?;
    let handle = file.handle(&*inner.backend).await?;
    let (start, end) = backend_range(req.start, req.end);
    // F_GETLK exists only for fcntl locks.
    let spec = LockSpec {
        handle,
        owner: req.owner,
        style: LockStyle::Posix,
        kind: kind_of(req.typ)?,
        start,
        end,
        pid: req.pid,
    };
    Ok(match inner.backend.getlk(spec).await? {
        Some(h) => {
            let typ = match h.kind {
                LockKind::Shared => libc::F_RDLCK,
                LockKind::Exclusive => libc::F_WRLCK,
            };
            (h.start.min(OFFSET_MAX), kernel_end(h.end), typ, h.pid)
        }
        None => (req.start, req.end, libc::F_UNLCK, 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_convert_both_ways() {
        assert_eq!(backend_range(0, OFFSET_MAX), (0, u64::MAX));
        assert_eq!(backend_range(10, 19), (10, 20));
        assert_eq!(kernel_end(u64::MAX), OFFSET_MAX);
        assert_eq!(kernel_end(20), 19);
    }
}
