//! Mounting and unmounting: the FUSE session in the background, requests answered on the
//! caller's tokio runtime.
//!
//! [`mount`] returns once the kernel has completed the FUSE handshake, so a mount error (no
//! `/dev/fuse`, a busy mountpoint, a kernel without lock support) is reported to the caller
//! before anything detaches. fuser reads requests on a thread of its own; every request is
//! answered from a task on `runtime` (see `filesystem.rs`).
//!
//! Unmounting ([`MountHandle::unmount`] or drop) unmounts and waits for the request loop to
//! end. If processes still have files open the kernel refuses (EBUSY); the mount is then
//! detached lazily: it vanishes from the tree now and the loop ends when the last file closes.
//! When the loop ends, lock waits still in flight are withdrawn. Ending the cluster session
//! (which releases this mount's locks, handles and ephemeral files at once) is the caller's
//! job, after unmounting.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{BackgroundSession, Config, MountOption, Session, SessionACL};

use super::backend::Backend;
use super::filesystem::LockFs;
use super::metrics::MountMetrics;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountConfig {
    /// Let users other than the mounting one use the mount (needs root, or
    /// `user_allow_other` in /etc/fuse.conf).
    pub allow_other: bool,
    /// Let the kernel check mode, uid and gid against the caller, as on a local filesystem.
    pub default_permissions: bool,
    pub read_only: bool,
    /// Send uid and gid 0 to the cluster as `nobody` (65534), as NFS's root_squash.
    pub root_squash: bool,
    /// The type shows as `fuse.<subtype>` in /proc/mounts.
    pub subtype: Option<String>,
    /// What `user.lockfs.cluster` on the mount's root says: how tools on this host reach the
    /// cluster (see `xattr.rs`).
    pub cluster: String,
    /// How the processes holding locks here are signalled when the session is lost
    /// (`lock_loss.rs`); the mountpoint in it is filled in at mount time.
    pub lock_loss: super::LockLossPolicy,
}

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            allow_other: false,
            default_permissions: true,
            read_only: false,
            root_squash: false,
            subtype: Some("lockfs".into()),
            cluster: String::new(),
            lock_loss: super::LockLossPolicy::default(),
        }
    }
}

impl MountConfig {
    fn to_fuser(&self) -> Config {
        let mut config = Config::default();
        let mut options = vec![
            MountOption::FSName("lockfs".into()),
            MountOption::NoDev,
            MountOption::NoSuid,
        ];
        if let Some(subtype) = &self.subtype {
            options.push(MountOption::Subtype(subtype.clone()));
        }
        if self.default_permissions {
            options.push(MountOption::DefaultPermissions);
        }
        options.push(if self.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        });
        config.mount_options = options;
        config.acl = if self.allow_other {
            SessionACL::All
        } else {
            SessionACL::Owner
        };
        config
    }
}

/// A live mount; unmounts when dropped.
#[derive(Debug)]
pub struct MountHandle {
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
    echoes: std::sync::Arc<super::echo::Echoes>,
}

/// Mounts `backend` at `mountpoint`. See the module docs.
pub fn mount(
    backend: Arc<dyn Backend>,
    mountpoint: &Path,
    options: MountConfig,
    runtime: tokio::runtime::Handle,
) -> io::Result<MountHandle> {
    let (metrics, _) = MountMetrics::new(None);
    mount_counting(backend, mountpoint, options, runtime, Arc::new(metrics))
}

/// [`mount`], counting requests and lock waits in `metrics` (see `metrics.rs`).
pub fn mount_counting(
    backend: Arc<dyn Backend>,
    mountpoint: &Path,
    options: MountConfig,
    runtime: tokio::runtime::Handle,
    metrics: Arc<MountMetrics>,
) -> io::Result<MountHandle> {
    let backend_kernel = backend.clone();
    let backend_kernel = backend_kernel.kernel();
    let mut lock_loss = options.lock_loss.clone();
    lock_loss.mountpoint = mountpoint
        .canonicalize()
        .unwrap_or_else(|_| mountpoint.to_path_buf());
    let fs = LockFs::new(backend.clone(), runtime, options.root_squash, metrics)
        .with_cluster(&options.cluster)
        .with_lock_loss(lock_loss);
    let echoes = fs.echoes();
    let session = Session::new(fs, mountpoint, &options.to_fuser())?;
    if let Some(kernel) = backend_kernel {
        use std::os::fd::AsFd;
        kernel.attach(session.notifier(), session.as_fd().try_clone_to_owned()?);
    }
    let session = session.spawn()?;
    Ok(MountHandle {
        session: Some(session),
        mountpoint: mountpoint.to_path_buf(),
        echoes,
    })
}

impl MountHandle {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// What replays other hosts' changes to this mount's kernel (`echo.rs`).
    pub fn kernel(&self) -> super::echo::Kernel {
        super::echo::Kernel {
            mountpoint: self.mountpoint.clone(),
            echoes: self.echoes.clone(),
        }
    }

    /// Whether the request loop has ended: someone ran `umount` (or `fusermount3 -u`).
    pub fn is_finished(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    /// Unmounts and waits for the request loop to end (lazily if files are still open).
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_now()
    }

    fn unmount_now(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        match session.umount_and_join() {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                log::warn!(
                    "{} is busy: detaching it; it goes when its last file is closed",
                    self.mountpoint.display()
                );
                detach(&self.mountpoint)
            }
            result => result,
        }
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_now() {
            log::warn!("unmounting {}: {e}", self.mountpoint.display());
        }
    }
}

fn detach(mountpoint: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(mountpoint.as_os_str().as_bytes())?;
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
