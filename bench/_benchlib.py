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
        shutil.rmtree(self.dir, ignore_errors=True)


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

