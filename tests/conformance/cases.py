"""Conformance cases for tests/conformance.rs: each case runs a few system calls in a fresh
directory under ROOT (argv[1]), as root and (`as_other`) as uid/gid 65534 in a child process,
and prints one line: the case's name and its results (return values, errno names, and lstat
summaries: kind, permission bits, link count, owner, size of files and links). The same
script runs on a tmpfs directory and on a lockfs mount; the lines must agree. argv[2:] names
cases to run (default: all)."""
import errno, os, stat, sys

ROOT = sys.argv[1]
OTHER = 65534

def res(fn):
    try:
        v = fn()
        if v is None or isinstance(v, (int, os.stat_result)):
            return "ok"
        return "ok:" + repr(v)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))

def as_other(fn):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.setgroups([])
            os.setresgid(OTHER, OTHER, OTHER)
            os.setresuid(OTHER, OTHER, OTHER)
            out = res(fn)
        except Exception as e:
            out = "exc:" + type(e).__name__
        os.write(w, out.encode())
        os._exit(0)
    os.close(w)
    out = os.read(r, 1000).decode()
    os.close(r)
    os.waitpid(pid, 0)
    return out

def st(path):
    try:
        s = os.lstat(path)
    except OSError as e:
        return errno.errorcode[e.errno]
    kind = "d" if stat.S_ISDIR(s.st_mode) else "l" if stat.S_ISLNK(s.st_mode) else "f"
    size = s.st_size if kind != "d" else "-"
    return f"{kind} {stat.S_IMODE(s.st_mode):o} n{s.st_nlink} {s.st_uid}:{s.st_gid} s{size}"

def creat(p, mode=0o644, flags=os.O_WRONLY | os.O_CREAT):
    fd = os.open(p, flags, mode)
    os.close(fd)

def write(p, data=b"x", flags=os.O_WRONLY):
    fd = os.open(p, flags)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)

CASES = {}
def case(fn):
    CASES[fn.__name__] = fn
    return fn

# ---- open flags
@case
def open_excl(d):
    creat("f")
    return [res(lambda: creat("f", flags=os.O_WRONLY | os.O_CREAT | os.O_EXCL)),
            res(lambda: creat("g", flags=os.O_WRONLY | os.O_CREAT | os.O_EXCL)), st("g")]
@case
def open_missing(d):
    return [res(lambda: os.open("nope", os.O_RDONLY)), res(lambda: os.open("nope/x", os.O_RDONLY | os.O_CREAT))]
@case
def open_dir_for_write(d):
    os.mkdir("d")
    return [res(lambda: os.open("d", os.O_WRONLY)), res(lambda: os.open("d", os.O_RDWR)), res(lambda: os.close(os.open("d", os.O_RDONLY)))]
@case
def open_directory_flag_on_file(d):
    creat("f")
    return [res(lambda: os.open("f", os.O_RDONLY | os.O_DIRECTORY)), res(lambda: os.open("f/x", os.O_RDONLY))]
@case
def open_trunc(d):
    write("f0", flags=os.O_WRONLY | os.O_CREAT)
    write("f0", b"hello", os.O_WRONLY)
    fd = os.open("f0", os.O_WRONLY | os.O_TRUNC)
    size = os.fstat(fd).st_size
    os.close(fd)
    return [size]
@case
def isatty_on_files(d):
    # isatty(3) asks the terminal ioctl TCGETS, as every Python open() and stdio does.
    creat("f")
    fd = os.open("f", os.O_RDONLY)
    try:
        tty = os.isatty(fd)
        import fcntl, termios
        got = res(lambda: fcntl.ioctl(fd, termios.TCGETS, bytes(64)))
    finally:
        os.close(fd)
    return [tty, got]
@case
def open_modes_and_umask(d):
    old = os.umask(0o022)
    creat("a", 0o777); os.mkdir("b", 0o777); creat("c", 0o4755)
    os.umask(old)
    return [st("a"), st("b"), st("c")]
@case
def open_no_permission(d):
    creat("r", 0o600); os.chmod(".", 0o755)
    return [as_other(lambda: os.open("r", os.O_RDONLY)), as_other(lambda: creat("new"))]
@case
def open_append(d):
    write("f", b"abc", os.O_WRONLY | os.O_CREAT)
    write("f", b"de", os.O_WRONLY | os.O_APPEND)
    return [st("f"), open("f").read()]

# ---- mkdir / rmdir
@case
def mkdir_rmdir(d):
    return [res(lambda: os.mkdir("m")), res(lambda: os.mkdir("m")), res(lambda: os.mkdir("m/n/o")),
            res(lambda: os.rmdir("m/n")), res(lambda: os.mkdir("m/n")), st("m"),
            res(lambda: os.rmdir("m")), res(lambda: os.rmdir("m/n")), res(lambda: os.rmdir("m")), st("m")]
@case
def rmdir_file_and_unlink_dir(d):
    creat("f"); os.mkdir("e")
    return [res(lambda: os.rmdir("f")), res(lambda: os.unlink("e")), res(lambda: os.rmdir("."))]
@case
def mkdir_in_file(d):
    creat("f")
    return [res(lambda: os.mkdir("f/x")), res(lambda: creat("f/x"))]

# ---- names
@case
def name_limits(d):
    return [res(lambda: creat("a" * 255)), res(lambda: creat("b" * 256)), res(lambda: os.mkdir("c" * 256)),
            st("a" * 255)]

# ---- unlink
@case
def unlink_cases(d):
    creat("f"); os.mkdir("e")
    return [res(lambda: os.unlink("f")), res(lambda: os.unlink("f")), res(lambda: os.unlink("e/x")), st("f")]
@case
def unlink_no_permission(d):
    os.mkdir("ro", 0o755); creat("ro/f"); os.chmod(".", 0o777)
    return [as_other(lambda: os.unlink("ro/f")), st("ro/f")]
@case
def sticky_directory(d):
    os.mkdir("t", 0o1777); creat("t/root")
    return [as_other(lambda: os.unlink("t/root")), as_other(lambda: creat("t/mine")),
            as_other(lambda: os.unlink("t/mine")), st("t")]

# ---- rename
@case
def rename_files_and_dirs(d):
    creat("a"); creat("b"); os.mkdir("x"); os.mkdir("y"); creat("y/f"); os.mkdir("z")
    return [res(lambda: os.rename("a", "b")), res(lambda: os.rename("b", "x")), res(lambda: os.rename("x", "b")),
            res(lambda: os.rename("x", "y")), res(lambda: os.rename("x", "z")), res(lambda: os.rename("z", "z/sub")),
            res(lambda: os.rename("y/f", "y/f")), res(lambda: os.rename("nope", "q")),
            st("a"), st("b"), st("x"), st("z"), st("y")]
@case
def rename_into_missing_dir(d):
    creat("a")
    return [res(lambda: os.rename("a", "nope/a")), res(lambda: os.rename("a", "a/b"))]

# ---- links
@case
def hard_links(d):
    creat("f"); os.mkdir("e")
    return [res(lambda: os.link("f", "g")), st("f"), res(lambda: os.link("f", "g")), res(lambda: os.link("e", "e2")),
            res(lambda: os.link("nope", "h")), res(lambda: os.unlink("f")), st("g")]
@case
def symlinks(d):
    return [res(lambda: os.symlink("target", "l")), st("l"), res(lambda: os.readlink("l")),
            res(lambda: os.symlink("x", "l")), res(lambda: os.readlink(".")),
            res(lambda: os.stat("l")), res(lambda: os.unlink("l")), st("l")]

# ---- truncate
@case
def truncate_cases(d):
    write("f", b"hello", os.O_WRONLY | os.O_CREAT); os.mkdir("e")
    return [res(lambda: os.truncate("f", 2)), st("f"), res(lambda: os.truncate("f", 10)), st("f"),
            res(lambda: os.truncate("e", 0)), res(lambda: os.truncate("nope", 0)), res(lambda: os.truncate("f", -1))]
@case
def truncate_no_permission(d):
    write("f", b"hello", os.O_WRONLY | os.O_CREAT); os.chmod("f", 0o644)
    return [as_other(lambda: os.truncate("f", 0)), st("f")]

# ---- chmod / chown
@case
def chmod_cases(d):
    creat("f")
    return [res(lambda: os.chmod("f", 0o7777)), st("f"), res(lambda: os.chmod("nope", 0o600)),
            as_other(lambda: os.chmod("f", 0o600)), st("f")]
@case
def chmod_by_owner(d):
    creat("f"); os.chown("f", OTHER, OTHER); os.chmod(".", 0o777)
    return [as_other(lambda: os.chmod("f", 0o640)), st("f")]
@case
def chown_cases(d):
    creat("f"); os.chmod("f", 0o6755)
    return [res(lambda: os.chown("f", 7, 8)), st("f"), as_other(lambda: os.chown("f", OTHER, -1)),
            res(lambda: os.chown("f", -1, -1)), st("f")]
@case
def chown_by_owner_to_own_group(d):
    creat("f"); os.chown("f", OTHER, OTHER); os.chmod("f", 0o2775)
    return [as_other(lambda: os.chown("f", -1, OTHER)), as_other(lambda: os.chown("f", -1, 0)),
            as_other(lambda: os.chown("f", 0, -1)), st("f")]

# ---- set-id bits on write
@case
def write_clears_set_ids(d):
    creat("u"); os.chmod("u", 0o6777); creat("g"); os.chmod("g", 0o2767)
    return [as_other(lambda: write("u")), as_other(lambda: write("g")), st("u"), st("g")]

# ---- times
@case
def utimensat_explicit(d):
    creat("f")
    os.utime("f", ns=(1_000_000_123, 2_000_000_456))
    s = os.stat("f")
    return [s.st_atime_ns, s.st_mtime_ns, as_other(lambda: os.utime("f", ns=(1, 2))),
            as_other(lambda: os.utime("f"))]

# ---- xattrs
@case
def xattrs(d):
    creat("f")
    return [res(lambda: os.setxattr("f", "user.a", b"1")), res(lambda: os.getxattr("f", "user.a")),
            res(lambda: os.getxattr("f", "user.nope")), res(lambda: os.removexattr("f", "user.a")),
            res(lambda: os.getxattr("f", "user.a"))]

# ---- more renames
@case
def renameat2_flags(d):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    def rn(a, b, flags):
        def go():
            if libc.renameat2(-100, a.encode(), -100, b.encode(), flags) != 0:
                e = ctypes.get_errno()
                raise OSError(e, os.strerror(e))
        return go
    creat("a"); creat("b"); os.mkdir("d")
    return [res(rn("a", "b", 1)), res(rn("a", "c", 1)), res(rn("c", "d", 2)), st("c"), st("d"),
            res(rn("c", "nope", 2)), res(rn("c", "d", 3)), res(rn("c", "d", 4))]
@case
def rename_dir_needs_write_on_itself(d):
    os.mkdir("p1", 0o777); os.mkdir("p2", 0o777); os.mkdir("p1/mine")
    os.chown("p1/mine", OTHER, OTHER); os.chmod("p1/mine", 0o555)
    os.mkdir("p1/w"); os.chown("p1/w", OTHER, OTHER)
    return [as_other(lambda: os.rename("p1/mine", "p2/mine")), as_other(lambda: os.rename("p1/mine", "p1/m2")),
            as_other(lambda: os.rename("p1/w", "p2/w")), st("p2/w")]
@case
def sticky_rename(d):
    os.mkdir("t", 0o1777); creat("t/root"); os.mkdir("o", 0o777)
    return [as_other(lambda: os.rename("t/root", "o/root")), as_other(lambda: creat("t/mine")),
            as_other(lambda: os.rename("t/mine", "t/root")), st("t/root")]
@case
def dir_link_counts(d):
    os.mkdir("a"); os.mkdir("a/b"); os.mkdir("a/c"); creat("a/f")
    r = [st("a")]
    os.rename("a/b", "b2"); r.append(st("a")); os.rmdir("a/c"); r.append(st("a"))
    return r
@case
def search_permission(d):
    os.mkdir("nx", 0o766); creat("nx/f")
    return [as_other(lambda: os.stat("nx/f")), as_other(lambda: os.listdir("nx")), as_other(lambda: creat("nx/g"))]
@case
def read_permission_on_dir(d):
    os.mkdir("nr", 0o733); creat("nr/f")
    return [as_other(lambda: os.listdir("nr")), as_other(lambda: os.stat("nr/f"))]
@case
def chmod_setgid_by_non_member(d):
    creat("f"); os.chown("f", OTHER, 0); os.chmod(".", 0o777)
    return [as_other(lambda: os.chmod("f", 0o2755)), st("f")]
@case
def symlink_by_other(d):
    os.chmod(".", 0o777)
    return [as_other(lambda: os.symlink("t", "l")), st("l"), as_other(lambda: os.lchown("l", 0, -1))]
@case
def unlinked_open_file(d):
    fd = os.open("f", os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"abc"); os.unlink("f")
    s = os.fstat(fd)
    r = [s.st_nlink, s.st_size, os.pread(fd, 3, 0), res(lambda: os.write(fd, b"d"))]
    os.close(fd)
    return r + [st("f")]
@case
def listing(d):
    os.mkdir("e"); creat("e/b"); os.mkdir("e/a"); os.symlink("x", "e/c")
    return [sorted(os.listdir("e")), res(lambda: os.listdir("e/b")), res(lambda: os.listdir("nope"))]
@case
def times_change(d):
    import time
    creat("f"); os.mkdir("e")
    s0, e0 = os.stat("f"), os.stat("e")
    time.sleep(0.02)
    write("f", b"y")
    s1 = os.stat("f")
    time.sleep(0.02)
    os.chmod("f", 0o600)
    s2 = os.stat("f")
    creat("e/x")
    e1 = os.stat("e")
    ch = lambda a, b: "changed" if a != b else "same"
    return [ch(s0.st_mtime_ns, s1.st_mtime_ns), ch(s0.st_ctime_ns, s1.st_ctime_ns),
            ch(s1.st_mtime_ns, s2.st_mtime_ns), ch(s1.st_ctime_ns, s2.st_ctime_ns),
            ch(e0.st_mtime_ns, e1.st_mtime_ns)]
@case
def exclusive_create_races_on_symlink(d):
    os.symlink("target", "l")
    return [res(lambda: creat("l", flags=os.O_WRONLY | os.O_CREAT | os.O_EXCL)), st("target")]

# ---- more open flags and times
@case
def open_nofollow(d):
    creat("f"); os.symlink("f", "l")
    return [res(lambda: os.open("l", os.O_RDONLY | os.O_NOFOLLOW)),
            res(lambda: os.close(os.open("f", os.O_RDONLY | os.O_NOFOLLOW)))]
@case
def utime_now_by_writer_and_stranger(d):
    creat("w", 0o666); creat("r", 0o644); os.chmod("w", 0o666)
    return [as_other(lambda: os.utime("w")), as_other(lambda: os.utime("r")),
            as_other(lambda: os.utime("w", ns=(5, 6)))]
@case
def ctime_on_chown_and_link(d):
    import time
    creat("f")
    c0 = os.stat("f").st_ctime_ns
    time.sleep(0.02)
    os.chown("f", -1, -1)
    c1 = os.stat("f").st_ctime_ns
    time.sleep(0.02)
    os.link("f", "g")
    c2 = os.stat("f").st_ctime_ns
    time.sleep(0.02)
    os.rename("g", "h")
    c3 = os.stat("f").st_ctime_ns
    ch = lambda a, b: "changed" if a != b else "same"
    return [ch(c0, c1), ch(c1, c2), ch(c2, c3)]
@case
def exec_permission(d):
    creat("f", 0o644)
    return [os.access("f", os.X_OK), as_other(lambda: os.open("f", os.O_WRONLY)), os.access("f", os.W_OK)]
@case
def rmdir_dot_and_nonempty(d):
    os.mkdir("e"); os.mkdir("e/f")
    return [res(lambda: os.rmdir("e/.")), res(lambda: os.rmdir("e/..")), res(lambda: os.rmdir("e"))]
@case
def rename_root_of_case_dir_entries(d):
    os.mkdir("a"); creat("a/x")
    return [res(lambda: os.rename("a", "a/x")), res(lambda: os.rename("a/x", "a/x/y")), res(lambda: os.rename("a/.", "b"))]
@case
def create_in_unwritable_dir(d):
    os.mkdir("ro", 0o555)
    return [as_other(lambda: creat("ro/f")), as_other(lambda: os.mkdir("ro/d")), as_other(lambda: os.symlink("x", "ro/l")),
            res(lambda: creat("ro/rootfile"))]
@case
def chmod_dir_and_sticky_by_stranger(d):
    os.mkdir("s")
    os.chown("s", OTHER, OTHER)
    return [as_other(lambda: os.chmod("s", 0o1777)), st("s"), as_other(lambda: os.chmod("s", 0o2777)), st("s")]
@case
def truncate_grows_with_zeros(d):
    write("f", b"ab", os.O_WRONLY | os.O_CREAT)
    os.truncate("f", 5)
    return [open("f", "rb").read()]
@case
def pwrite_beyond_end(d):
    fd = os.open("f", os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, b"z", 4)
    out = [os.pread(fd, 10, 0), os.fstat(fd).st_size]
    os.close(fd)
    return out

@case
def atime_on_read(d):
    creat("f")
    os.utime("f", ns=(1, 2))
    write("f", b"new")
    a0 = os.stat("f").st_atime_ns
    open("f").read()
    return ["changed" if os.stat("f").st_atime_ns != a0 else "same"]

# ---- set-id bits and groups
@case
def setgid_directory_inheritance(d):
    os.mkdir("sg"); os.chown("sg", 0, 7); os.chmod("sg", 0o2777)
    return [as_other(lambda: creat("sg/f")), as_other(lambda: os.mkdir("sg/d", 0o755)),
            as_other(lambda: os.symlink("x", "sg/l")), st("sg/f"), st("sg/d"), st("sg/l"),
            res(lambda: os.mkdir("sg/r", 0o700)), st("sg/r"), res(lambda: creat("sg/rf", 0o6755)), st("sg/rf")]
@case
def truncate_clears_set_ids(d):
    creat("u"); os.chmod("u", 0o6777); creat("g"); os.chmod("g", 0o2767); creat("r"); os.chmod("r", 0o6777)
    def ftrunc(p, n):
        def go():
            fd = os.open(p, os.O_WRONLY)
            try:
                os.ftruncate(fd, n)
            finally:
                os.close(fd)
        return go
    return [as_other(lambda: os.truncate("u", 3)), as_other(ftrunc("g", 2)), res(lambda: os.truncate("r", 0)),
            st("u"), st("g"), st("r")]
@case
def chown_clears_set_ids(d):
    creat("x"); os.chmod("x", 0o6755); creat("n"); os.chmod("n", 0o6745); os.mkdir("e"); os.chmod("e", 0o2755)
    r = [res(lambda: os.chown("x", -1, 5)), res(lambda: os.chown("n", 5, -1)), res(lambda: os.chown("e", 5, 5))]
    return r + [st("x"), st("n"), st("e")]

# ---- times, part 2
def utimensat(p, a, m, flags=0):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    class TS(ctypes.Structure):
        _fields_ = [("s", ctypes.c_long), ("ns", ctypes.c_long)]
    def go():
        ts = (TS * 2)(TS(*a), TS(*m))
        if libc.utimensat(-100, p.encode(), ts, flags) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
    return go
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
@case
def utimensat_omit_and_now(d):
    import time
    creat("f"); os.utime("f", ns=(5_000_000_000, 6_000_000_000))
    r = [res(utimensat("f", (7, 0), (0, UTIME_OMIT)))]
    s = os.stat("f"); r += [s.st_atime_ns, s.st_mtime_ns]
    r.append(res(utimensat("f", (0, UTIME_OMIT), (8, 9))))
    s = os.stat("f"); r += [s.st_atime_ns, s.st_mtime_ns]
    c0 = s.st_ctime_ns
    time.sleep(0.02)
    r.append(res(utimensat("f", (0, UTIME_OMIT), (0, UTIME_OMIT))))
    r.append("same" if os.stat("f").st_ctime_ns == c0 else "changed")
    r.append(res(utimensat("f", (0, 1_000_000_000), (0, 0))))
    creat("w", 0o666); os.chmod("w", 0o666)
    r += [as_other(utimensat("w", (0, UTIME_NOW), (0, UTIME_NOW))), as_other(utimensat("w", (0, UTIME_NOW), (0, UTIME_OMIT))),
          as_other(utimensat("w", (0, UTIME_OMIT), (9, 0))), as_other(utimensat("w", (0, UTIME_OMIT), (0, UTIME_OMIT)))]
    return r
@case
def dir_times_on_unlink_and_rename(d):
    import time
    os.mkdir("a"); os.mkdir("b"); creat("a/f"); creat("a/g")
    ch = lambda x, y: "changed" if x != y else "same"
    a0, b0 = os.stat("a"), os.stat("b"); time.sleep(0.02)
    os.unlink("a/g"); a1 = os.stat("a"); time.sleep(0.02)
    os.rename("a/f", "b/f"); a2, b2 = os.stat("a"), os.stat("b"); time.sleep(0.02)
    os.mkdir("b/s"); b3 = os.stat("b"); time.sleep(0.02)
    os.rmdir("b/s"); b4 = os.stat("b")
    return [ch(a0.st_mtime_ns, a1.st_mtime_ns), ch(a0.st_ctime_ns, a1.st_ctime_ns), ch(a1.st_mtime_ns, a2.st_mtime_ns),
            ch(b0.st_mtime_ns, b2.st_mtime_ns), ch(b0.st_ctime_ns, b2.st_ctime_ns), ch(b2.st_mtime_ns, b3.st_mtime_ns),
            ch(b3.st_mtime_ns, b4.st_mtime_ns)]
@case
def truncate_times(d):
    import time
    write("f", b"abc", os.O_WRONLY | os.O_CREAT); write("g", b"abc", os.O_WRONLY | os.O_CREAT)
    ch = lambda x, y: "changed" if x != y else "same"
    f0, g0 = os.stat("f"), os.stat("g"); time.sleep(0.02)
    os.truncate("f", 3)
    fd = os.open("g", os.O_WRONLY); os.ftruncate(fd, 1); os.close(fd)
    f1, g1 = os.stat("f"), os.stat("g")
    return [ch(f0.st_mtime_ns, f1.st_mtime_ns), ch(f0.st_ctime_ns, f1.st_ctime_ns), ch(g0.st_mtime_ns, g1.st_mtime_ns),
            ch(g0.st_ctime_ns, g1.st_ctime_ns), g1.st_size]

# ---- what the mount does not implement itself fails at once, as the kernel's fallbacks do
@case
def fallocate_seek_and_copy(d):
    fd = os.open("f", os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"abc")
    r = [res(lambda: os.posix_fallocate(fd, 0, 10)), os.fstat(fd).st_size, os.pread(fd, 20, 0)]
    r.append(res(lambda: str(os.lseek(fd, 0, os.SEEK_DATA))))
    r.append(res(lambda: str(os.lseek(fd, 0, os.SEEK_HOLE))))
    r.append(res(lambda: str(os.lseek(fd, 20, os.SEEK_DATA))))
    out = os.open("g", os.O_RDWR | os.O_CREAT, 0o644)
    r.append(res(lambda: str(os.copy_file_range(fd, out, 5, 0, 0))))
    r.append(os.pread(out, 20, 0))
    os.close(fd); os.close(out)
    return r

@case
def mknod_regular_file(d):
    import stat as st_
    return [res(lambda: os.mknod("r", 0o640 | st_.S_IFREG)), st("r"), res(lambda: os.mknod("r", 0o640)),
            res(lambda: os.mknod("z", 0o600)), st("z"), as_other(lambda: os.mknod("o", 0o600))]
@case
def fallocate_modes(d):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    def fa(fd, mode, off, ln):
        def go():
            if libc.fallocate(fd, mode, ctypes.c_long(off), ctypes.c_long(ln)) != 0:
                e = ctypes.get_errno()
                raise OSError(e, os.strerror(e))
        return go
    fd = os.open("f", os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"abcdefgh")
    r = [res(fa(fd, 1, 0, 100)), os.fstat(fd).st_size, res(fa(fd, 3, 2, 3)), os.pread(fd, 20, 0),
         res(fa(fd, 0x10, 6, 4)), os.pread(fd, 20, 0), res(fa(fd, 0x11, 0, 100)), os.fstat(fd).st_size,
         res(fa(fd, 0, 0, 4)), res(fa(fd, 0, 12, 2)), os.fstat(fd).st_size, res(fa(fd, 2, 0, 1)), res(fa(fd, 8, 0, 4096))]
    os.close(fd)
    ro = os.open("f", os.O_RDONLY)
    r.append(res(fa(ro, 0, 0, 100)))
    os.close(ro)
    return r
@case
def odd_operations_on_files_and_dirs(d):
    import fcntl, termios, struct, ctypes
    fd = os.open("f", os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"hello")
    dfd = os.open(".", os.O_RDONLY)
    libc = ctypes.CDLL(None, use_errno=True)
    r = [res(lambda: struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]),
         res(lambda: os.close(os.open("f", os.O_RDONLY | os.O_DIRECT))),
         res(lambda: fcntl.flock(os.open("f", os.O_PATH), fcntl.LOCK_EX)),
         res(lambda: os.fsync(dfd)), res(lambda: fcntl.flock(dfd, fcntl.LOCK_EX | fcntl.LOCK_NB)),
         res(lambda: os.write(dfd, b"x")), res(lambda: os.read(dfd, 10)), res(lambda: os.fdatasync(fd)),
         libc.sync_file_range(fd, 0, 0, 2), res(lambda: os.readlink("f")), res(lambda: os.link(".", "dl")),
         res(lambda: os.rename(".", "x")), res(lambda: os.unlink(".")), res(lambda: os.mkdir("f")),
         res(lambda: os.open(".", os.O_CREAT | os.O_RDONLY)),
         res(lambda: os.open("nd", os.O_CREAT | os.O_EXCL | os.O_DIRECTORY)),
         res(lambda: os.stat("/".join(["a" * 255] * 20))), os.statvfs(".").f_namemax]
    os.close(fd); os.close(dfd)
    return r
@case
def utime_of_a_symlink_itself(d):
    creat("f"); os.symlink("f", "l")
    os.utime("l", ns=(1, 2), follow_symlinks=False)
    return [os.lstat("l").st_mtime_ns, os.stat("f").st_mtime_ns != 2]

names = sys.argv[2:] or list(CASES)
for name in names:
    d = os.path.join(ROOT, name)
    os.mkdir(d)
    os.chdir(d)
    try:
        out = CASES[name](d)
    except Exception as e:
        out = ["exc:" + type(e).__name__ + ":" + str(e)]
    os.chdir(ROOT)
    print(name, "|", " | ".join(str(o) for o in out))
