//! POSIX behaviour through real mounts of a real 3-node cluster, two mounts standing for two
//! hosts: what a program written for a local filesystem relies on.
//!
//! These need root and `/dev/fuse`; without them they fail loudly. Background processes and
//! mounts are stopped when a test ends, then the cluster.

mod common;

use std::time::Duration;

use lockfs::auth::Tls;
use lockfs::client::Client;

use common::hosts::{wait_until, Hosts};
use common::{block_on, tls};

/// Open handles of the sessions of `host`, as the cluster lists them.
fn handles_of(h: &Hosts, host: &str) -> u64 {
    let creds = Tls::load(Some(&tls::admin_dir()), false).expect("credentials");
    let client = Client::new(
        h.cluster.servers().split(',').map(String::from).collect(),
        Duration::from_secs(15),
        "posix-test".into(),
        creds,
    );
    block_on(client.all_sessions())
        .expect("sessions")
        .iter()
        .filter(|s| s.host == host)
        .map(|s| s.handles)
        .sum()
}

/// Each host holds descriptors on files that host B then unlinks or replaces: with a handle
/// (read-write) and without one (read-only opens take none). Every descriptor keeps reading,
/// writing, locking and `fstat`ing its file (with no links) until it is closed, on both hosts,
/// while the name already names a new file. The cluster keeps a nameless file that no handle
/// holds for twice the mounts' TTL and a second (5 s here): the test waits longer, so the
/// read-only descriptors work only through the handles their mounts took to keep them, and
/// those go at the close.
#[test]
fn files_unlinked_while_open_stay_usable_on_every_host_until_the_last_close() {
    let mut h = Hosts::start_with("allow_other,ttl=2");
    h.ok("echo hello > \"$A/f\"; echo gee > \"$A/g\"; echo old > \"$A/r\"; echo new > \"$A/r2\"");
    // Both hosts read every file once, so their caches hold them when the names go.
    h.ok("cat \"$A/f\" \"$A/g\" \"$A/r\" \"$B/f\" \"$B/g\" \"$B/r\" >/dev/null");
    let held_by_b = handles_of(&h, "host-b");
    let script = r#"
import errno, fcntl, os, sys, time
m, out, me = os.environ["M"], os.environ["OUT"], os.environ["ME"]
rw = os.open(m + "/f", os.O_RDWR)
ro = os.open(m + "/g", os.O_RDONLY)
rr = os.open(m + "/r", os.O_RDONLY)
assert os.pread(ro, 100, 0) == b"gee\n"
open(out + "/" + me + "-open", "w").close()
deadline = time.time() + 60
while not os.path.exists(out + "/go") and time.time() < deadline:
    time.sleep(0.02)
# B reads after A wrote.
while me == "b" and not os.path.exists(out + "/a-said") and time.time() < deadline:
    time.sleep(0.02)
said = []
def attempt(what, op):
    try:
        said.append(what + "=" + str(op()))
    except OSError as e:
        said.append(what + "=" + errno.errorcode[e.errno])
if me == "a":
    attempt("write", lambda: os.pwrite(rw, b"!", 6))
attempt("f", lambda: os.pread(rw, 100, 0))
attempt("f-links", lambda: os.fstat(rw).st_nlink)
attempt("g", lambda: os.pread(ro, 100, 0))
attempt("g-links", lambda: os.fstat(ro).st_nlink)
attempt("g-size", lambda: os.fstat(ro).st_size)
attempt("r", lambda: os.pread(rr, 100, 0))
attempt("r-links", lambda: os.fstat(rr).st_nlink)
if me == "a":
    attempt("flock-f", lambda: fcntl.flock(rw, fcntl.LOCK_EX | fcntl.LOCK_NB))
    attempt("flock-g", lambda: fcntl.flock(ro, fcntl.LOCK_EX | fcntl.LOCK_NB))
def report():
    with open(out + "/" + me + "-said.tmp", "w") as f:
        f.write(" ".join(said))
    os.rename(out + "/" + me + "-said.tmp", out + "/" + me + "-said")
report()
while not os.path.exists(out + "/" + me + "-close") and time.time() < deadline:
    time.sleep(0.02)
if me == "b":
    # A's exclusive flocks still hold the nameless files.
    attempt("flock-f", lambda: fcntl.flock(rw, fcntl.LOCK_EX | fcntl.LOCK_NB))
    attempt("flock-g", lambda: fcntl.flock(ro, fcntl.LOCK_SH | fcntl.LOCK_NB))
    report()
for fd in (rw, ro, rr):
    os.close(fd)
"#;
    std::fs::write(h.out("holder.py"), script).unwrap();
    let a = h.spawn_ready("M=\"$A\" ME=a exec python3 \"$OUT/holder.py\"", "a-open");
    let b = h.spawn_ready("M=\"$B\" ME=b exec python3 \"$OUT/holder.py\"", "b-open");
    // B takes the names away: unlinks f and g, and renames r2 over r.
    h.ok("rm \"$B/f\" \"$B/g\" && mv \"$B/r2\" \"$B/r\"");
    h.ok("test ! -e \"$A/f\" && test ! -e \"$A/g\" && test ! -e \"$B/g\"");
    assert_eq!(h.ok("cat \"$A/r\""), "new\n");
    // The names are free for new files, which the descriptors never see.
    h.ok("echo other > \"$A/f\"");
    // Each mount holds f through its read-write descriptor, and took a handle on g and r for
    // its read-only ones; past the time the cluster keeps unheld nameless files, only those
    // handles hold g and r.
    wait_until("B's mount to keep g and r", || {
        handles_of(&h, "host-b") == held_by_b + 3
    });
    std::thread::sleep(Duration::from_secs(6));
    std::fs::write(h.out("go"), b"").unwrap();
    wait_until("A's holder to report", || h.out("a-said").exists());
    assert_eq!(
        h.read_out("a-said"),
        "write=1 f=b'hello\\n!' f-links=0 g=b'gee\\n' g-links=0 g-size=4 r=b'old\\n' \
         r-links=0 flock-f=None flock-g=None"
    );
    wait_until("B's holder to report", || h.out("b-said").exists());
    // B reads A's write to the nameless file.
    assert_eq!(
        h.read_out("b-said"),
        "f=b'hello\\n!' f-links=0 g=b'gee\\n' g-links=0 g-size=4 r=b'old\\n' r-links=0"
    );
    std::fs::write(h.out("b-close"), b"").unwrap();
    wait_until("B's holder to try the locks", || {
        h.read_out("b-said").contains("flock-g")
    });
    assert!(
        h.read_out("b-said")
            .ends_with("flock-f=EAGAIN flock-g=EAGAIN"),
        "{}",
        h.read_out("b-said")
    );
    std::fs::write(h.out("a-close"), b"").unwrap();
    assert!(h.wait_child(a).success());
    assert!(h.wait_child(b).success());
    assert_eq!(h.ok("cat \"$B/f\""), "other\n");
    // B's mount closed the handles it took to keep its read-only descriptors' files.
    wait_until("B's keepers to close", || {
        handles_of(&h, "host-b") == held_by_b
    });
}

/// Python's `tempfile.TemporaryFile` creates a file and unlinks it at once, then uses it.
#[test]
fn temporary_files_work_with_tmpdir_on_the_mount() {
    let h = Hosts::start();
    let out = h.ok("mkdir \"$A/tmp\" && TMPDIR=\"$A/tmp\" python3 -c '
import os, tempfile
t = tempfile.TemporaryFile()
t.write(b\"x\" * 1000); t.seek(0)
print(len(t.read()), os.fstat(t.fileno()).st_nlink, os.listdir(tempfile.gettempdir()))
t.close()
print(os.listdir(tempfile.gettempdir()))'");
    assert_eq!(out, "1000 0 []\n[]\n");
}

/// Directories move as on a local filesystem, and the other host sees the move at once, with
/// the errors Linux gives: never below themselves, never over a non-empty directory.
#[test]
fn directories_move_and_the_other_host_sees_it_at_once() {
    let h = Hosts::start();
    h.ok("mkdir -p \"$A/d/e\" && echo x > \"$A/d/e/f\"");
    assert_eq!(h.ok("cat \"$B/d/e/f\""), "x\n");
    h.ok("mv \"$A/d\" \"$A/d2\"");
    h.ok("test ! -e \"$B/d\" && test ! -e \"$B/d/e/f\"");
    assert_eq!(h.ok("cat \"$B/d2/e/f\""), "x\n");
    h.ok("cd \"$B/d2/e\" && mv \"$B/d2/e\" \"$B/e2\" && pwd -P >/dev/null");
    assert_eq!(h.ok("cat \"$A/e2/f\"; ls \"$A/d2\" | wc -l"), "x\n0\n");
    // Link counts follow: a directory has 2 and one per subdirectory, as on ext4.
    h.ok("mkdir \"$B/e2/s1\" \"$B/e2/s2\"");
    assert_eq!(h.ok("stat -c %h \"$A/e2\" \"$A/d2\""), "4\n2\n");
    h.ok("mv \"$B/e2/s1\" \"$B/d2/\"");
    assert_eq!(h.ok("stat -c %h \"$A/e2\" \"$A/d2\""), "3\n3\n");
    h.ok("rmdir \"$A/e2/s2\" \"$A/d2/s1\"");
    h.ok("mkdir \"$A/full\" && touch \"$A/full/x\"");
    let out = h.ok("cd \"$B\" && python3 -c '
import errno, os
for src, dst in ((\"e2\", \"e2/sub\"), (\"e2\", \"full\"), (\"e2\", \"full/x\"),
                 (\"full/x\", \"d2\")):
    try:
        os.rename(src, dst)
        print(\"moved\")
    except OSError as e:
        print(errno.errorcode[e.errno])
os.rename(\"e2\", \"d2\")
print(sorted(os.listdir(\".\")), os.listdir(\"d2\"))'");
    assert_eq!(
        out,
        "EINVAL\nENOTEMPTY\nENOTDIR\nEISDIR\n['d2', 'full'] ['f']\n"
    );
}

/// `mv -n` (RENAME_NOREPLACE) from both hosts at once: exactly one file takes the name.
#[test]
fn mv_no_clobber_racing_from_two_hosts_has_exactly_one_winner() {
    let h = Hosts::start();
    for round in 0..5 {
        let out = h.ok(&format!(
            "for i in 1 2 3 4; do echo \"a$i\" > \"$A/a$i.{round}\"; echo \"b$i\" > \"$B/b$i.{round}\"; done
             for i in 1 2 3 4; do
               mv -n \"$A/a$i.{round}\" \"$A/won.{round}\" &
               mv -n \"$B/b$i.{round}\" \"$B/won.{round}\" &
             done
             wait
             ls \"$A\" | grep -c '\\.{round}$'"
        ));
        // Seven candidates left where they were, one became the winner.
        assert_eq!(out, "8\n", "round {round}");
        let won = h.ok(&format!("cat \"$B/won.{round}\""));
        let left = h.ok(&format!("ls \"$A\" | grep -v won | grep '\\.{round}$'"));
        let winner = format!("{}.{round}", won.trim());
        assert!(
            !left.contains(&winner),
            "{winner} won and also stayed: {left}"
        );
    }
}

/// RENAME_EXCHANGE swaps two names at once: a reader on the other host never finds either
/// name missing, and always one whole version.
#[test]
fn rename_exchange_publishes_atomically_across_hosts() {
    let mut h = Hosts::start();
    h.ok("echo 1 > \"$A/cur\" && echo 2 > \"$A/next\"");
    let reader = h.spawn_ready(
        "touch \"$OUT/reading\"; bad=0; n=0
         while [ ! -e \"$OUT/stop\" ] && [ $n -lt 100000 ]; do
           v=$(cat \"$B/cur\") || bad=$((bad+1)); n=$((n+1))
           case \"$v\" in 1|2) ;; *) bad=$((bad+1));; esac
           test -e \"$B/next\" || bad=$((bad+1))
         done
         echo \"$n $bad\" > \"$OUT/read\"",
        "reading",
    );
    let out = h.ok("cd \"$A\" && python3 -c '
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
for _ in range(200):
    if libc.renameat2(AT_FDCWD, b\"cur\", AT_FDCWD, b\"next\", RENAME_EXCHANGE) != 0:
        raise OSError(ctypes.get_errno(), \"renameat2\")
missing = libc.renameat2(AT_FDCWD, b\"cur\", AT_FDCWD, b\"nope\", RENAME_EXCHANGE)
print(open(\"cur\").read().strip(), open(\"next\").read().strip(), missing, ctypes.get_errno())'");
    assert_eq!(out, "1 2 -1 2\n");
    std::fs::write(h.out("stop"), b"").unwrap();
    assert!(h.wait_child(reader).success());
    let read = h.read_out("read");
    let (n, bad) = read.trim().split_once(' ').expect("n bad");
    eprintln!("reader on B: {n} reads during 200 exchanges on A, {bad} bad");
    assert_eq!(bad, "0", "a read found a name missing or a mixed version");
}

/// The NFS-safe lockfile idiom (a unique file, `link(2)` to the lock's name, a link count of
/// two), as `dotlockfile` from liblockfile does it: six tries from two hosts at once, exactly
/// one holder; after it lets go, the next try gets it.
#[test]
fn dotlockfile_on_two_hosts_has_exactly_one_holder() {
    let h = Hosts::start();
    h.ok("mkdir \"$A/spool\"");
    let out = h.ok("for i in 1 2 3; do
           (dotlockfile -l -r 0 \"$A/spool/mail.lock\" && echo got) &
           (dotlockfile -l -r 0 \"$B/spool/mail.lock\" && echo got) &
         done 2>/dev/null; wait");
    assert_eq!(out, "got\n", "exactly one of six takes the lock");
    // Nothing of the losers is left behind; the lock file has one name.
    assert_eq!(
        h.ok("ls -A \"$B/spool\"; stat -c %h \"$A/spool/mail.lock\""),
        "mail.lock\n1\n"
    );
    h.ok("dotlockfile -u \"$B/spool/mail.lock\"");
    h.ok("dotlockfile -l -r 0 \"$A/spool/mail.lock\" && dotlockfile -u \"$A/spool/mail.lock\"");
    assert_eq!(h.ok("ls -A \"$A/spool\""), "");
}

/// py-filelock (the system's, Debian's python3-filelock): its `FileLock` (flock) and
/// `SoftFileLock` (a file made with O_EXCL) guard one counter from two hosts; every increment
/// is kept.
#[test]
fn py_filelock_guards_a_counter_from_two_hosts() {
    let mut h = Hosts::start();
    let script = r#"
import os, sys, filelock
m, kind, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
lock = (filelock.FileLock if kind == "flock" else filelock.SoftFileLock)(m + "/" + kind + ".lock")
for _ in range(n):
    with lock:
        path = m + "/" + kind + ".count"
        value = int(open(path).read()) if os.path.exists(path) else 0
        with open(path, "w") as f:
            f.write(str(value + 1))
"#;
    std::fs::write(h.out("counter.py"), script).unwrap();
    for kind in ["flock", "soft"] {
        let pids: Vec<u32> = ["$A", "$A", "$B", "$B"]
            .iter()
            .map(|m| {
                h.spawn(
                    "bash",
                    &[
                        "-c",
                        &format!("exec /usr/bin/python3 \"$OUT/counter.py\" \"{m}\" {kind} 25"),
                    ],
                )
            })
            .collect();
        for pid in pids {
            assert!(h.wait_child(pid).success(), "a {kind} client failed");
        }
        assert_eq!(h.ok(&format!("cat \"$B/{kind}.count\"")), "100", "{kind}");
    }
}

/// Hard and symbolic links made on one host are what the other host sees.
#[test]
fn links_made_on_one_host_are_seen_on_the_other() {
    let h = Hosts::start();
    h.ok("mkdir \"$A/conf\" && echo v1 > \"$A/conf/app.v1\" && ln -s app.v1 \"$A/conf/app\" && ln \"$A/conf/app.v1\" \"$A/conf/pinned\"");
    assert_eq!(
        h.ok("readlink \"$B/conf/app\"; cat \"$B/conf/app\"; stat -c %h \"$B/conf/pinned\""),
        "app.v1\nv1\n2\n"
    );
    // Switching a symlink atomically: a new link renamed over the old one.
    h.ok("echo v2 > \"$B/conf/app.v2\" && ln -s app.v2 \"$B/conf/app.new\" && mv -T \"$B/conf/app.new\" \"$B/conf/app\"");
    assert_eq!(
        h.ok("cat \"$A/conf/app\"; readlink \"$A/conf/app\""),
        "v2\napp.v2\n"
    );
    // The old version lives on under its other name.
    h.ok("rm \"$B/conf/app.v1\"");
    assert_eq!(
        h.ok("cat \"$A/conf/pinned\"; stat -c %h \"$A/conf/pinned\""),
        "v1\n1\n"
    );
}

/// What the mount does not do (README, Mounting) fails at once with the errno it documents.
#[test]
fn what_the_mount_does_not_do_fails_at_once_with_its_errno() {
    let h = Hosts::start();
    let out = h.ok("cd \"$A\" && python3 -c '
import errno, fcntl, os, struct
def said(op):
    try:
        op()
        return \"ok\"
    except OSError as e:
        return errno.errorcode[e.errno]
print(said(lambda: os.mkfifo(\"fifo\")))
print(said(lambda: os.mknod(\"dev\", 0o600 | 0o020000, os.makedev(1, 3))))
print(said(lambda: os.mknod(\"sock\", 0o600 | 0o140000)))
print(said(lambda: os.open(\".\", os.O_TMPFILE | os.O_RDWR, 0o600)))
print(said(lambda: os.open(b\"bad\\xff\", os.O_WRONLY | os.O_CREAT, 0o600)))
print(said(lambda: os.symlink(b\"bad\\xff\", \"l\")))
fd = os.open(\"f\", os.O_RDWR | os.O_CREAT, 0o600)
print(said(lambda: fcntl.ioctl(fd, 0x80086601, bytes(8))))
print(said(lambda: os.setxattr(\"f\", \"trusted.x\", b\"1\")))
acl = struct.pack(\"<I\", 2) + b\"\".join(struct.pack(\"<HHI\", t, p, 0xffffffff) for t, p in ((1, 6), (4, 4), (32, 4)))
print(said(lambda: os.setxattr(\"f\", \"system.posix_acl_access\", acl)))
print(said(lambda: os.posix_fallocate(fd, 0, 100)), os.fstat(fd).st_size)
os.close(fd)
print(sorted(os.listdir(\".\")))'");
    assert_eq!(
        out,
        "EPERM\nEPERM\nEPERM\nENOTSUP\nEINVAL\nEINVAL\nENOTTY\nENOTSUP\nENOTSUP\nok 100\n['f']\n"
    );
    // A mount that keeps no cache hears nothing of other hosts' writes, which would leave
    // mapped pages stale: it refuses shared mappings.
    let mut m = h.extra_mount("nocache", "host-b", "cache=off");
    let out = h.ok(&format!(
        "cd \"{}\" && python3 -c '
import errno, mmap, os
fd = os.open(\"f\", os.O_RDWR | os.O_CREAT, 0o600)
os.write(fd, b\"x\" * 10)
try:
    mmap.mmap(fd, 10, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    print(\"ok\")
except OSError as e:
    print(errno.errorcode[e.errno])
print(mmap.mmap(fd, 10, mmap.MAP_PRIVATE, mmap.PROT_READ)[:])'",
        m.path.display()
    ));
    m.stop();
    assert_eq!(out, "ENODEV\nb'xxxxxxxxxx'\n");
}

/// A write by a user without CAP_FSETID clears the set-user-id bit, and the set-group-id bit
/// of a group-executable file, as Linux does (pjdfstest chmod/12.t).
#[test]
fn a_write_clears_set_id_bits_as_linux_does() {
    let h = Hosts::start();
    let out = h.ok(
        "cd \"$A\" && touch u g && chmod 06777 u && chmod 02777 g && touch r && chmod 04777 r
         setpriv --reuid 65534 --regid 65534 --clear-groups sh -c 'echo x >> u; echo x >> g'
         echo x >> r
         stat -c %a u g r \"$B/u\" \"$B/g\"",
    );
    assert_eq!(out, "777\n777\n4777\n777\n777\n");
}

/// What the kernel checks against another file's owner and mode (the sticky rule checks the
/// owner of the file removed, not of the directory) follows a change made on another host:
/// a host that looked the file up before another host gave it away lets its new owner remove
/// it, and one that looked it up before it was given away from a user refuses that user.
/// (`unlink`, not `rm`: rm looks at the file first, which would refresh what the kernel has.)
#[test]
fn a_sticky_directory_checks_owners_changed_on_another_host() {
    let h = Hosts::start();
    let out = h.ok(
        "cd \"$A\" && mkdir -m 1777 t && touch t/given t/taken && chown 65534 t/taken
         stat -c %u \"$B/t/given\" \"$B/t/taken\" >/dev/null
         stat -c %u \"$B/t/given\" \"$B/t/taken\"
         chown 65534 t/given && chown 0 t/taken
         cd \"$B/t\" && setpriv --reuid 65534 --regid 65534 --clear-groups sh -c \
           'unlink given && echo removed; unlink taken 2>/dev/null || echo refused'
         ls \"$A/t\"",
    );
    assert_eq!(out, "0\n65534\nremoved\nrefused\ntaken\n");
}

/// A read sees every write acknowledged before it started, at whatever offset it reads,
/// except that a read pass (reads from offset 0, each where the last ended, without a pause)
/// reads one version of the file to its end, as one read would: a descriptor that read the
/// file before another host replaced it reads the new contents at any other offset, and after
/// a pause at any offset.
#[test]
fn reads_at_any_offset_see_another_hosts_earlier_write() {
    let h = Hosts::start();
    let out = h.ok("python3 -c '
import os, time
a, b = os.environ[\"A\"], os.environ[\"B\"]
open(b + \"/f\", \"w\").write(\"a\" * 100)
fd = os.open(a + \"/f\", os.O_RDONLY)
print(os.pread(fd, 4, 0), os.pread(fd, 4, 4))
open(b + \"/f\", \"w\").write(\"b\" * 100)
print(os.pread(fd, 4, 8))
print(os.pread(fd, 4, 50), os.pread(fd, 4, 0), os.pread(fd, 4, 4))
with open(b + \"/f\", \"r+\") as f:
    f.seek(8)
    f.write(\"c\")
time.sleep(1.5)
print(os.pread(fd, 4, 8), os.read(fd, 4) + os.read(fd, 4) + os.read(fd, 4))'");
    assert_eq!(
        out,
        "b'aaaa' b'aaaa'\nb'aaaa'\nb'bbbb' b'bbbb' b'bbbb'\nb'cbbb' b'bbbbbbbbcbbb'\n"
    );
}

/// Shared mappings: processes of one host share the pages; a store and `msync` reach the other
/// host, whose writes reach the mapping once its event arrives (the pages are dropped then).
#[test]
fn shared_mappings_carry_writes_both_ways() {
    let h = Hosts::start();
    let out = h.ok("python3 -c '
import mmap, os, time
a, b = os.environ[\"A\"], os.environ[\"B\"]
fd = os.open(a + \"/m\", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
os.ftruncate(fd, 8192)
m = mmap.mmap(fd, 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
other = mmap.mmap(os.open(a + \"/m\", os.O_RDONLY), 8192, mmap.MAP_SHARED, mmap.PROT_READ)
m[0:3] = b\"abc\"
m[4096:4099] = b\"def\"
print(other[0:3], other[4096:4099])
m.flush()
# The stores went where they were mapped, though the file is open with O_APPEND.
data = open(b + \"/m\", \"rb\").read()
print(len(data), data[0:3], data[4096:4099])
with open(b + \"/m\", \"r+b\") as f:
    f.seek(4097)
    f.write(b\"EF\")
deadline = time.time() + 30
while m[4096:4099] != b\"dEF\" and time.time() < deadline:
    time.sleep(0.01)
print(m[4096:4099], other[4096:4099], m[0:3])
os.write(fd, b\"end\")
print(os.fstat(fd).st_size, open(b + \"/m\", \"rb\").read()[-3:])'");
    assert_eq!(
        out,
        "b'abc' b'def'\n8192 b'abc' b'def'\nb'dEF' b'dEF' b'abc'\n8195 b'end'\n"
    );
}

/// SQLite, as programs use it: in its default rollback-journal mode from processes on both
/// hosts (fcntl byte-range locks and reads that see the last commit), and in WAL mode from
/// processes of one host (the WAL index is a shared mapping). Every increment counts.
#[test]
fn sqlite_counts_exactly_from_two_hosts_and_in_wal_mode() {
    let mut h = Hosts::start();
    let script = r#"
import sqlite3, sys
db, n = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db, timeout=120)
for _ in range(n):
    with c:
        c.execute("update t set v = v + 1")
c.close()
"#;
    std::fs::write(h.out("count.py"), script).unwrap();
    let setup = |h: &Hosts, db: &str, mode: &str| {
        h.ok(&format!(
            "python3 -c '
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
print(c.execute(\"pragma journal_mode={mode}\").fetchone()[0])
c.execute(\"create table t(v integer)\")
c.execute(\"insert into t values (0)\")
c.commit()' \"{db}\""
        ))
    };
    // Each commit adds a page to the WAL, which stays below the mount's 256 KiB per file
    // even if no checkpoint could restart it.
    for (db, mode, mounts) in [
        ("rollback.db", "delete", ["$A", "$A", "$B", "$B"]),
        ("wal.db", "wal", ["$A", "$A", "$A", "$A"]),
    ] {
        assert_eq!(setup(&h, &format!("$A/{db}"), mode), format!("{mode}\n"));
        let pids: Vec<u32> = mounts
            .iter()
            .map(|m| {
                let run = format!("exec python3 \"$OUT/count.py\" \"{m}/{db}\" 12");
                h.spawn("bash", &["-c", &run])
            })
            .collect();
        for pid in pids {
            assert!(h.wait_child(pid).success(), "a {mode} client failed");
        }
        let count = format!(
            "python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(\"select v from t\").fetchone()[0])' \"$B/{db}\""
        );
        assert_eq!(h.ok(&count), "48\n", "{mode}");
    }
}
