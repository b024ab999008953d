//! Real FUSE mounts of the in-process state machine, driven by the tools users have: bash,
//! `cat`, `echo`, `flock(1)`, `getfattr`, Python's `fcntl`. Two processes stand for two hosts.
//!
//! These need root and `/dev/fuse`; they fail loudly without them. Every wait is bounded, and
//! the fixture kills what it started and unmounts, also when a test fails.

mod mem_backend;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::mount::{mount, MountConfig, MountHandle};
use mem_backend::MemBackend;

/// The bound on any one command; generous, the machine may be busy.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

struct Fixture {
    mount: Option<MountHandle>,
    backend: std::sync::Arc<MemBackend>,
    children: Vec<Child>,
    dir: crate::testdir::TempDir,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Fixture {
    fn new() -> Fixture {
        let _ = env_logger::builder().is_test(true).try_init();
        assert!(
            Path::new("/dev/fuse").exists(),
            "FUSE is unavailable: /dev/fuse is missing (these tests need it and root)"
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .expect("tokio runtime");
        let dir = crate::testdir::tempdir().expect("temp dir");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let config = MountConfig {
            allow_other: true,
            ..MountConfig::default()
        };
        let backend = MemBackend::new();
        let handle = mount(backend.clone(), &mnt, config, runtime.handle().clone())
            .expect("FUSE mount failed (needs root and /dev/fuse)");
        Fixture {
            mount: Some(handle),
            backend,
            children: Vec::new(),
            dir,
            runtime: Some(runtime),
        }
    }

    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// A path outside the mount, for markers.
    fn outside(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(self.mnt())
            .env("OUT", self.dir.path())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a bash script in the mount and waits for it (bounded).
    fn sh(&self, script: &str) -> Output {
        let mut cmd = self.command("bash");
        cmd.arg("-c").arg(script);
        run(cmd, COMMAND_LIMIT)
    }

    /// Like `sh`, but the script must succeed; returns its stdout.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "`{script}` failed: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// Starts a program in the background; the fixture kills it at the end. Returns its pid.
    fn spawn(&mut self, program: &str, args: &[&str]) -> u32 {
        let mut cmd = self.command(program);
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Starts a bash script that holds a lock (or a file) and signals readiness by creating
    /// the marker `name` outside the mount; waits for the marker.
    fn spawn_ready(&mut self, script: &str, marker: &str) -> u32 {
        let pid = self.spawn("bash", &["-c", script]);
        let path = self.outside(marker);
        wait_until(&format!("marker {marker}"), || path.exists());
        pid
    }

    fn child_mut(&mut self, pid: u32) -> &mut Child {
        self.children
            .iter_mut()
            .find(|c| c.id() == pid)
            .expect("a child of this fixture")
    }

    /// Waits (bounded) for a background child to exit.
    fn wait_child(&mut self, pid: u32, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child_mut(pid).try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "process {pid} still running after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn running(&mut self, pid: u32) -> bool {
        self.child_mut(pid).try_wait().unwrap().is_none()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mount) = self.mount.take() {
            if let Err(e) = mount.unmount() {
                eprintln!("unmount failed: {e}");
            }
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

fn run(mut cmd: Command, limit: Duration) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    let (mut stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
        elapsed,
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < COMMAND_LIMIT,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0, "kill {pid}");
}

/// A bash script that takes `flock` on `file` through fd 9, creates `$OUT/<marker>` and then
/// becomes `sleep`, keeping the descriptor (and so the lock) while it lives.
fn holder_script(file: &str, marker: &str) -> String {
    format!("exec 9>>{file}; flock 9; touch \"$OUT/{marker}\"; exec sleep 120")
}

#[test]
fn echo_and_cat_round_trip_and_replace() {
    let fx = Fixture::new();
    assert_eq!(fx.ok("echo hello > f && cat f"), "hello\n");
    assert_eq!(fx.ok("echo x > f && cat f"), "x\n");
    assert_eq!(fx.ok("echo y >> f && cat f"), "x\ny\n");
    assert_eq!(fx.ok("printf abc > g && wc -c < g"), "3\n");
    // O_TRUNC with nothing written empties the file at the release, which the kernel sends
    // in the background after close(2) returned.
    fx.ok(": > f");
    wait_until("the truncation at release", || {
        std::fs::metadata(fx.mnt().join("f")).unwrap().len() == 0
    });
    assert_eq!(fx.ok("stat -c %s g"), "3\n");
}

#[test]
fn truncation_is_never_visible_alone() {
    let fx = Fixture::new();
    fx.ok("echo payload > f");
    let out = fx.ok(
        "for i in $(seq 200); do echo payload > f; done & \
         empty=0; for i in $(seq 200); do c=$(cat f); [ \"$c\" = payload ] || empty=$((empty+1)); done; \
         wait; echo $empty",
    );
    assert_eq!(out, "0\n", "a reader saw the file other than `payload`");
}

#[test]
fn tree_operations() {
    let fx = Fixture::new();
    fx.ok("mkdir d && echo a > d/a");
    assert_eq!(fx.ok("ls d"), "a\n");
    fx.ok("mv d/a d/b");
    assert_eq!(fx.ok("ls d && cat d/b"), "b\na\n");
    let out = fx.sh("rmdir d");
    assert!(!out.status.success());
    assert!(out.stderr.contains("Directory not empty"), "{}", out.stderr);
    fx.ok("rm d/b && rmdir d");
    assert_eq!(fx.ok("ls -A"), "");
    fx.ok("echo x > f");
    for refused in ["mkfifo p", "mknod c c 1 3"] {
        let out = fx.sh(refused);
        assert!(!out.status.success(), "{refused} succeeded");
        assert!(
            out.stderr.contains("Operation not permitted"),
            "{refused}: {}",
            out.stderr
        );
    }
    let out = fx.sh("cat missing");
    assert!(
        out.stderr.contains("No such file or directory"),
        "{}",
        out.stderr
    );
    fx.ok("chmod 600 f");
    assert_eq!(fx.ok("stat -c %a f"), "600\n");
    assert_eq!(fx.ok("stat -f -c %l ."), "255\n");
    // flock(1) locks directories too; the directory gets a backend handle for it.
    fx.ok("mkdir locks && flock -n locks true");
    assert_eq!(
        fx.sh("flock -n locks flock -n locks true").status.code(),
        Some(1)
    );
}

#[test]
fn noclobber_creates_once() {
    let fx = Fixture::new();
    fx.ok("set -o noclobber; echo 1 > lockfile");
    let out = fx.sh("set -o noclobber; echo 2 > lockfile");
    assert!(!out.status.success());
    assert!(out.stderr.contains("cannot overwrite"), "{}", out.stderr);
    assert_eq!(fx.ok("cat lockfile"), "1\n");
}

#[test]
fn flock_nonblocking_fails_while_held_and_holders_show() {
    let mut fx = Fixture::new();
    let holder = fx.spawn_ready(&holder_script("f", "held"), "held");
    assert_eq!(fx.sh("flock -n f true").status.code(), Some(1));
    assert_eq!(fx.sh("flock -s -n f true").status.code(), Some(1));
    let holders = fx.ok("getfattr --only-values -n user.lockfs.holders f");
    // The holder is flock(1), the child of the script that keeps the descriptor.
    let fields: Vec<&str> = holders.split_whitespace().collect();
    assert_eq!(fields.len(), 5, "holders: {holders}");
    assert_eq!(
        (fields[0], fields[2], fields[3]),
        ("testhost", "exclusive", "flock")
    );
    assert!(fields[1].parse::<u32>().is_ok(), "holders: {holders}");
    let generation = fx.ok("getfattr --only-values -n user.lockfs.lock_generation f");
    assert!(generation.parse::<u64>().unwrap() >= 1, "{generation}");
    // POSIX locks and flock locks do not conflict, as on Linux.
    fx.ok(
        "python3 -c 'import fcntl; fcntl.lockf(open(\"f\", \"a\"), fcntl.LOCK_EX | fcntl.LOCK_NB)'",
    );
    kill(holder, libc::SIGKILL);
    fx.wait_child(holder, COMMAND_LIMIT);
    assert_eq!(fx.sh("flock -n f true").status.code(), Some(0));
    assert_eq!(fx.ok("getfattr --only-values -n user.lockfs.holders f"), "");
}

#[test]
fn flock_timeout_returns_1_after_about_a_second() {
    let mut fx = Fixture::new();
    let holder = fx.spawn_ready(&holder_script("f", "held"), "held");
    let out = fx.sh("flock -w 1 f true");
    assert_eq!(out.status.code(), Some(1), "stderr: {}", out.stderr);
    assert!(
        out.elapsed >= Duration::from_millis(900),
        "{:?}",
        out.elapsed
    );
    eprintln!("flock -w 1 returned after {:?}", out.elapsed);
    kill(holder, libc::SIGKILL);
    fx.wait_child(holder, COMMAND_LIMIT);
    // The cancelled wait left nothing granted.
    assert_eq!(fx.sh("flock -n f true").status.code(), Some(0));
}

#[test]
fn a_signal_ends_a_blocked_flock() {
    let mut fx = Fixture::new();
    let holder = fx.spawn_ready(&holder_script("f", "held"), "held");
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let waiter = fx.spawn("flock", &["f", "true"]);
        std::thread::sleep(Duration::from_millis(300));
        assert!(fx.running(waiter), "the waiter did not block");
        let sent = Instant::now();
        kill(waiter, signal);
        let status = fx.wait_child(waiter, Duration::from_secs(10));
        assert!(!status.success(), "{status:?}");
        eprintln!("signal {signal} ended the wait in {:?}", sent.elapsed());
    }
    kill(holder, libc::SIGKILL);
    fx.wait_child(holder, COMMAND_LIMIT);
    assert_eq!(fx.sh("flock -n f true").status.code(), Some(0));
}

#[test]
fn a_killed_holder_frees_its_flock_for_the_waiter() {
    let mut fx = Fixture::new();
    let holder = fx.spawn_ready(&holder_script("f", "held"), "held");
    let waiter = fx.spawn("flock", &["-w", "25", "f", "-c", "touch \"$OUT/got\""]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(fx.running(waiter), "the waiter did not block");
    assert!(!fx.outside("got").exists());
    kill(holder, libc::SIGKILL);
    let status = fx.wait_child(waiter, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(fx.outside("got").exists());
}

const PY_HOLD: &str = r#"
import fcntl, os, sys, time
fd = os.open("f", os.O_RDWR | os.O_CREAT)
fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)   # bytes 0..9
open(os.environ["OUT"] + "/held", "w").close()
time.sleep(120)
"#;

const PY_PROBE: &str = r#"
import errno, fcntl, os, struct
FLOCK = "hhqqi4x"   # struct flock on 64-bit Linux
fd = os.open("f", os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)
    print("overlap locked")
except OSError as e:
    print("overlap", errno.errorcode[e.errno])
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 20)
print("disjoint locked")
t, w, s, l, p = struct.unpack(FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK,
                              struct.pack(FLOCK, fcntl.F_WRLCK, 0, 5, 1, 0)))
print("getlk", t == fcntl.F_WRLCK, s, l, p)
t, w, s, l, p = struct.unpack(FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK,
                              struct.pack(FLOCK, fcntl.F_WRLCK, 0, 40, 5, 0)))
print("free", t == fcntl.F_UNLCK)
"#;

#[test]
fn posix_byte_ranges_and_getlk() {
    let mut fx = Fixture::new();
    fx.ok("echo 0123456789012345678901234567890123456789 > f");
    let holder = fx.spawn("python3", &["-c", PY_HOLD]);
    let held = fx.outside("held");
    wait_until("the python holder", || held.exists());
    let out = fx.ok(&format!("python3 -c '{PY_PROBE}'"));
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0] == "overlap EAGAIN" || lines[0] == "overlap EACCES",
        "{out}"
    );
    assert_eq!(lines[1], "disjoint locked", "{out}");
    assert_eq!(lines[2], format!("getlk True 0 10 {holder}"), "{out}");
    assert_eq!(lines[3], "free True", "{out}");
    kill(holder, libc::SIGKILL);
    fx.wait_child(holder, COMMAND_LIMIT);
    // The holder's exit closed its descriptor: its POSIX lock is gone.
    let out = fx.ok(&format!("python3 -c '{PY_PROBE}'"));
    assert!(out.starts_with("overlap locked\n"), "{out}");
}

#[test]
fn xattrs_and_ephemeral_directories() {
    let mut fx = Fixture::new();
    fx.ok("echo x > f");
    let ino = fx.ok("stat -c %i f");
    assert_eq!(
        fx.ok("getfattr --only-values -n user.lockfs.instance f"),
        ino.trim()
    );
    let before: u64 = fx
        .ok("getfattr --only-values -n user.lockfs.content_generation f")
        .parse()
        .unwrap();
    fx.ok("echo y >> f");
    let after: u64 = fx
        .ok("getfattr --only-values -n user.lockfs.content_generation f")
        .parse()
        .unwrap();
    assert!(after > before, "{before} -> {after}");
    let dump = fx.ok("getfattr -d f");
    for name in [
        "lock_generation",
        "holders",
        "ephemeral",
        "instance",
        "content_generation",
    ] {
        assert!(dump.contains(&format!("user.lockfs.{name}")), "{dump}");
    }
    let out = fx.sh("getfattr -n user.nope f");
    assert!(out.stderr.contains("No such attribute"), "{}", out.stderr);
    let out = fx.sh("setfattr -n user.other -v 1 f");
    assert!(
        out.stderr.contains("Operation not supported"),
        "{}",
        out.stderr
    );
    let out = fx.sh("setfattr -n user.lockfs.instance -v 1 f");
    assert!(
        out.stderr.contains("Operation not permitted"),
        "{}",
        out.stderr
    );

    fx.ok("mkdir eph && setfattr -n user.lockfs.ephemeral -v 1 eph");
    assert_eq!(
        fx.ok("getfattr --only-values -n user.lockfs.ephemeral eph"),
        "1"
    );
    let owner = fx.spawn_ready(
        "set -o noclobber; exec 8>eph/job && echo $$ >&8; touch \"$OUT/owner\"; exec sleep 120",
        "owner",
    );
    assert_eq!(fx.ok("cat eph/job"), format!("{owner}\n"));
    assert_eq!(
        fx.ok("getfattr --only-values -n user.lockfs.ephemeral eph/job"),
        "1"
    );
    let out = fx.sh("set -o noclobber; echo other > eph/job");
    assert!(!out.status.success());
    kill(owner, libc::SIGKILL);
    fx.wait_child(owner, COMMAND_LIMIT);
    wait_until("the ephemeral file to go", || {
        !fx.mnt().join("eph/job").exists()
    });
    assert_eq!(fx.ok("ls -A eph"), "");
}

#[test]
fn reading_commits_nothing_and_locks_and_ephemeral_files_still_take_handles() {
    let mut fx = Fixture::new();
    fx.ok("echo hello > f && mkdir d");
    let before = fx.backend.applied();
    for _ in 0..5 {
        assert_eq!(fx.ok("cat f"), "hello\n");
        assert_eq!(fx.ok("head -c1 f"), "h");
        fx.ok("stat f >/dev/null && ls -l >/dev/null && ls d");
    }
    assert_eq!(fx.backend.applied(), before, "reads commit nothing");

    // A lock through a read-only open takes a handle then, and excludes like any other.
    let holder = fx.spawn_ready(
        "exec 9<f; flock 9; touch \"$OUT/held\"; exec sleep 120",
        "held",
    );
    assert!(fx.backend.applied() > before, "the lock took a handle");
    let out = fx.sh("exec 9<f; flock -n 9");
    assert_eq!(out.status.code(), Some(1), "flock -n must fail while held");
    kill(holder, libc::SIGKILL);
    fx.wait_child(holder, COMMAND_LIMIT);
    wait_until("the lock to go with its holder", || {
        fx.sh("exec 9<f; flock -n 9").status.success()
    });

    // A read-only open of an ephemeral file holds it: it is opened with a handle at once.
    fx.ok("mkdir eph && setfattr -n user.lockfs.ephemeral -v 1 eph");
    let owner = fx.spawn_ready(
        "set -o noclobber; exec 8>eph/job; touch \"$OUT/owner\"; exec sleep 120",
        "owner",
    );
    let reader = fx.spawn_ready(
        "exec 8<eph/job; touch \"$OUT/reader\"; exec sleep 120",
        "reader",
    );
    kill(owner, libc::SIGKILL);
    fx.wait_child(owner, COMMAND_LIMIT);
    std::thread::sleep(Duration::from_millis(200));
    fx.ok("test -e eph/job");
    kill(reader, libc::SIGKILL);
    fx.wait_child(reader, COMMAND_LIMIT);
    wait_until("the ephemeral file to go at its reader's close", || {
        !fx.mnt().join("eph/job").exists()
    });
}

#[test]
fn a_file_unlinked_while_open_stays_usable_until_its_last_close() {
    let fx = Fixture::new();
    let before = fx.backend.nodes();
    let out = fx.ok("python3 - <<'EOF'
import fcntl, os, tempfile
# tempfile.TemporaryFile unlinks its file at once, then uses the descriptor.
with tempfile.TemporaryFile(dir='.') as t:
    t.write(b'x' * 10); t.flush(); t.seek(0)
    st = os.fstat(t.fileno())
    print(t.read().decode(), st.st_nlink, st.st_size)
    fcntl.flock(t, fcntl.LOCK_EX)
# A read-only descriptor (opened without a handle) outlives the name.
with open('f', 'w') as w:
    w.write('hello')
fd = os.open('f', os.O_RDONLY)
os.unlink('f')
print(os.pread(fd, 5, 0).decode(), os.fstat(fd).st_nlink, os.path.exists('f'))
fcntl.flock(fd, fcntl.LOCK_SH)
os.close(fd)
# A file replaced by a rename stays writable through its descriptor.
for name, text in (('a', 'A'), ('b', 'B')):
    with open(name, 'w') as w:
        w.write(text)
fd = os.open('b', os.O_RDWR)
os.rename('a', 'b')
os.pwrite(fd, b'Z', 1)
print(os.pread(fd, 5, 0).decode(), os.fstat(fd).st_nlink, open('b').read())
os.close(fd)
EOF");
    assert_eq!(out, "xxxxxxxxxx 0 10\nhello 0 False\nBZ 0 A\n");
    // Each went at its last close: only the renamed file is left.
    assert_eq!(fx.backend.nodes(), before + 1);
    assert_eq!(fx.ok("ls -A"), "b\n");
}

#[test]
fn hard_links_are_names_of_one_file() {
    let fx = Fixture::new();
    fx.ok("echo one > f && ln f g && mkdir d && ln f d/h");
    assert_eq!(fx.ok("stat -c '%h %i' f g d/h | uniq -c | wc -l"), "1\n");
    assert_eq!(fx.ok("stat -c %h g"), "3\n");
    fx.ok("echo two > g");
    assert_eq!(fx.ok("cat f d/h"), "two\ntwo\n");
    fx.ok("rm f && mv d/h d/h2");
    assert_eq!(fx.ok("stat -c %h g; cat d/h2"), "2\ntwo\n");
    let out = fx.sh("ln d d2");
    assert!(!out.status.success());
    let out = fx.sh("ln g d/h2");
    assert!(out.stderr.contains("File exists"), "{}", out.stderr);
    fx.ok("rm g d/h2");
    assert_eq!(fx.ok("ls -A . d"), ".:\nd\n\nd:\n");
}

#[test]
fn symbolic_links_are_followed_by_the_kernel() {
    let fx = Fixture::new();
    fx.ok("mkdir d && echo one > d/f && ln -s d/f l && ln -s d dl && ln -s nowhere dangling");
    assert_eq!(fx.ok("readlink l dl dangling"), "d/f\nd\nnowhere\n");
    assert_eq!(fx.ok("cat l dl/f"), "one\none\n");
    assert_eq!(fx.ok("stat -c '%F %s %a' l"), "symbolic link 3 777\n");
    fx.ok("echo two > l");
    assert_eq!(fx.ok("cat d/f"), "two\n");
    assert!(!fx.sh("cat dangling").status.success());
    fx.ok("mv l l2 && rm dl dangling");
    assert_eq!(fx.ok("readlink l2; ls -A"), "d/f\nd\nl2\n");
    let out = fx.sh("ln -s d/f l2");
    assert!(out.stderr.contains("File exists"), "{}", out.stderr);
}

#[test]
fn writes_past_the_size_limit_fail_with_efbig() {
    let fx = Fixture::new();
    let out = fx.sh("head -c 300000 /dev/zero > big");
    assert!(!out.status.success());
    assert!(out.stderr.contains("File too large"), "{}", out.stderr);
    let out = fx.ok("python3 -c 'import os, errno\n\
         fd = os.open(\"big2\", os.O_WRONLY | os.O_CREAT)\n\
         try:\n    os.write(fd, bytes(300000)); print(\"wrote\")\n\
         except OSError as e:\n    print(errno.errorcode[e.errno])'");
    assert_eq!(out, "EFBIG\n");
    let limit = mem_backend::MAX_FILE_SIZE;
    fx.ok(&format!("head -c {limit} /dev/zero > fits"));
    assert_eq!(fx.ok("stat -c %s fits"), format!("{limit}\n"));
}
