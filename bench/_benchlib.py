"""Shared by the benchmarks: the 2 KB test message and the disk's durable-commit ceiling (the
queue and delivery benchmarks' baseline); and for the POP3 and IMAP ones against Dovecot
(bench/pop3.py, imap_bench.py, imap_login.py): a free port, the PSS of a process and of a
process tree, clients that run sessions for a fixed time in parallel, the wait for a server's
port."""
import concurrent.futures
import multiprocessing
import os
import random
import shutil
import socket
import sys
import time


BOXES = 100  # the messages go to user0..user99@example.test


def message(i):
    """A 2,048-byte message to user(i % BOXES)@example.test."""
    head = ("From: sender@example.test\nTo: user%d@example.test\nSubject: bench %d\n"
            "Message-ID: <%d@example.test>\n\n" % (i % BOXES, i, i)).encode()
    line = b"The quick brown fox jumps over the lazy dog. 0123456789 abcdefghij\n"
    body = line * ((2048 - len(head)) // len(line))
    return head + body + b"." * max(0, 2048 - len(head) - len(body) - 1) + b"\n"


def ceiling(base, writers, count, data=None):
    """WRITERS threads each loop: write DATA (default a test message) to a file, fsync it,
    rename it into place, fsync the directory. Returns durable commits per second."""
    if data is None:
        data = message(0)
    d = os.path.join(base, "ceiling%d" % writers)
    os.makedirs(d)
    r = commits(d, writers, count, data)
    shutil.rmtree(d)
    return r


def commits(d, writers, count, data):
    """The commit loop of the ceiling in directory D (made by the caller): WRITERS threads, COUNT
    commits in all; returns commits per second."""
    per = count // writers

    def work(w):
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i in range(per):
                tmp = os.path.join(d, "t%d.%d" % (w, i))
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(fd, data)
                os.fsync(fd)
                os.close(fd)
                os.rename(tmp, os.path.join(d, "m%d.%d" % (w, i)))
                os.fsync(dfd)
        finally:
            os.close(dfd)

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(writers) as ex:
        list(ex.map(work, range(writers)))
    return per * writers / (time.monotonic() - t0)


FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_TOPDIR_FL = 0x80086601, 0x40086602, 0x00020000


def topdir(path):
    """Sets ext4's "top of a directory hierarchy" attribute (chattr +T) on path, so that each
    directory made in it is placed by the Orlov allocator in a block group of its own choosing
    (the one with the fewest directories among those with more free room than the average).
    Returns whether the attribute is set; advice only."""
    import array
    import fcntl
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        a = array.array("i", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, a, True)
        a[0] |= FS_TOPDIR_FL
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, a, True)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


# ext4 without a journal does not reuse an inode freed in the last 5 s, or in the last 300 s
# while its inode-table block is dirty (fs/ext4/ialloc.c, recently_deleted: RECENTCY_MIN,
# RECENTCY_DIRTY), and every allocation walks from the start of its block group over such
# inodes. A new instance is placed (Orlov, +T) in the groups a previous bench just emptied, so
# for 5 minutes after a bench deleted its trees each new file there costs a walk over them:
# 2026-12-06, the same end-to-end run right after a bench's cleanup measured 1,365-1,468 msg/s
# at 1.06-1.23 ms of CPU a message (deliver-maildir 0.58-0.63 ms of system time), and 5.5
# minutes later 2,674 msg/s at 0.51 ms (deliver-maildir 0.14). remove_tree() records when a
# bench deleted; settle() makes the next disk bench wait until that walk is over.
RECENTLY_DELETED = 300
DELETED_STAMP = "/var/tmp/pillarbox-bench.deleted"


def remove_tree(path):
    """shutil.rmtree, and the time of it in DELETED_STAMP (for settle()). With BENCH_KEEP=DIR
    the tree is moved into DIR instead (nothing is freed, so the next bench need not wait;
    remove DIR when done benchmarking)."""
    keep = os.environ.get("BENCH_KEEP")
    if keep:
        os.makedirs(keep, exist_ok=True)
        try:
            os.rename(path, os.path.join(keep, "%s.%d" % (os.path.basename(path), time.time_ns())))
            return
        except OSError:
            pass
    shutil.rmtree(path, ignore_errors=True)
    try:
        with open(DELETED_STAMP, "w") as f:
            f.write("%d\n" % time.time())
    except OSError:
        pass


def journal_less(path="/var/tmp"):
    """True if path is on ext4 without a journal (no jbd2 entry for its device)."""
    st = os.stat(path)
    dev = "%d:%d" % (os.major(st.st_dev), os.minor(st.st_dev))
    with open("/proc/self/mountinfo") as f:
        for line in f:
            a = line.split()
            if a[2] == dev:
                sep = a.index("-")
                if a[sep + 1] != "ext4":
                    return False
                name = os.path.basename(a[sep + 2])
                try:
                    return not any(j.startswith(name + "-") for j in os.listdir("/proc/fs/jbd2"))
                except OSError:
                    return True
    return False


def settle(name):
    """Waits (printing why) until RECENTLY_DELETED seconds have passed since a bench last
    deleted its trees, on a journal-less ext4; BENCH_SETTLE=0 skips the wait (and says so)."""
    try:
        since = time.time() - os.stat(DELETED_STAMP).st_mtime
    except OSError:
        return
    left = RECENTLY_DELETED + 5 - since
    if left <= 0 or not journal_less():
        return
    if os.environ.get("BENCH_SETTLE") == "0":
        print("%s: a bench deleted its files %.0f s ago; not waiting (BENCH_SETTLE=0): new "
              "inodes walk the freed ones, the figures are low" % (name, since))
        return
    print("%s: a bench deleted its files %.0f s ago; waiting %.0f s until ext4 (no journal) "
          "reuses the freed inodes without a walk over them" % (name, since, left), flush=True)
    time.sleep(left)


class Ceiling:
    """The durable-commit ceiling of ceiling() measured where a bench's runs cannot disturb it.

    ceiling() makes its files in the bench's base directory, in the block groups where the runs
    just made and deleted thousands of files; on ext4 without a journal every new inode then
    costs a walk over the inodes freed there in the last seconds (doc/performance.md,
    2026-12-05), and the ceiling moved by a factor of four from one minute to the next. Here:
    a directory of its own, made next to the base before any instance (call it first), with the
    +T attribute, so that each measurement's directory is placed apart from the instances; no
    file is deleted until close() (a measurement never walks the previous one's deletions).
    measure() records each figure; highest() and median() summarise them."""

    def __init__(self, parent=None):
        import tempfile
        self.dir = tempfile.mkdtemp(prefix="pillarbox-ceiling-",
                                    dir=parent or os.environ.get("TMPDIR", "/var/tmp"))
        self.top = topdir(self.dir)
        self.seen = []

    def measure(self, writers=20, count=2000, data=None):
        if data is None:
            data = message(0)
        d = os.path.join(self.dir, "r%d" % len(self.seen))
        os.makedirs(d)
        r = commits(d, writers, count, data)
        self.seen.append(r)
        return r

    def highest(self):
        return max(self.seen)

    def median(self):
        s = sorted(self.seen)
        return (s[(len(s) - 1) // 2] + s[len(s) // 2]) / 2

    def close(self):
        remove_tree(self.dir)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pss(pid):
    """The proportional set size of pid in kB (0 when it is gone)."""
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def children():
    """pid -> (ppid, comm) of every process."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
            comm = st[st.index("(") + 1:st.rindex(")")]
            ppid = int(st[st.rindex(")") + 2:].split()[1])
            out[int(d)] = (ppid, comm)
        except (OSError, ValueError):
            pass
    return out


def descendants(root):
    """[(pid, comm)] of every process below root."""
    procs = children()
    found, todo = [], [root]
    while todo:
        p = todo.pop()
        for pid, (pp, comm) in procs.items():
            if pp == p:
                found.append((pid, comm))
                todo.append(pid)
    return found


def sessions_for(seconds, seed, one):
    """Runs one(rng) again and again for seconds; returns how many times it ran."""
    rng = random.Random(seed)
    deadline = time.perf_counter() + seconds
    done = 0
    while time.perf_counter() < deadline:
        one(rng)
        done += 1
    return done


def pool_rate(worker, args):
    """Runs worker over args in as many processes (each returns a count of sessions); returns
    the sessions per second of them all."""
    with multiprocessing.Pool(len(args)) as pool:
        t = time.perf_counter()
        counts = pool.map(worker, args)
        took = time.perf_counter() - t
    return sum(counts) / took


def wait_port(port, proc, what, tmp, connect):
    """Waits (20 s at most) until connect(port) succeeds while proc runs; else prints the logs in
    tmp and exits."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            connect(port)
            return
        except (OSError, EOFError):
            time.sleep(0.05)
    for log in ("dovecot.err", "dovecot.log", "pillarbox.log"):
        try:
            sys.stderr.write(open(os.path.join(tmp, log)).read())
        except OSError:
            pass
    raise SystemExit("%s did not start" % what)



class Arrivals:
    """Counts the files that arrive in directory D (a Maildir's new/: a link or a rename into
    it) through inotify, so that waiting for the last of N messages costs the benchmark one
    read per batch of events instead of a listing of an ever larger directory every few
    milliseconds (that listing took about 15% of the 2-core machine during a run, on the same
    cores as the servers measured). Falls back to listing when the queue of events overflowed."""

    IN_CREATE, IN_MOVED_TO, IN_Q_OVERFLOW, IN_ISDIR = 0x100, 0x80, 0x4000, 0x40000000

    def __init__(self, d):
        import ctypes
        self.d = d
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if self.libc.inotify_add_watch(self.fd, d.encode(),
                                       self.IN_CREATE | self.IN_MOVED_TO) < 0:
            e = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(e, "inotify_add_watch " + d)
        self.base = len(os.listdir(d))  # after the watch: nothing is missed, maybe counted twice
        self.seen = 0
        self.overflow = False

    def count(self):
        """Files in D now (from the events; a listing after an overflow)."""
        return len(os.listdir(self.d)) if self.overflow else self.base + self.seen

    def wait(self, total, deadline):
        """Returns once count() >= total; raises RuntimeError at the monotonic deadline."""
        import select
        import struct
        while self.count() < total:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("only %d of %d arrived in %s" % (self.count(), total, self.d))
            r, _, _ = select.select([self.fd], [], [], min(left, 0.2 if self.overflow else left))
            if not r:
                continue
            buf = os.read(self.fd, 65536)
            i = 0
            while i + 16 <= len(buf):
                _, mask, _, ln = struct.unpack_from("iIII", buf, i)
                i += 16 + ln
                if mask & self.IN_Q_OVERFLOW:
                    self.overflow = True
                elif not mask & self.IN_ISDIR:
                    self.seen += 1

    def close(self):
        os.close(self.fd)
