"""Local delivery through the queue with the root spawner's hop on, against the disk's ceiling.

N (default 2,000) 2 KB messages, queued in the queue format, to 100 Maildirs, drained by:
  spawner   queue-spawn (as root: queue-run as one uid, deliver-maildir as another, the way
            the queue service runs them; not root: the same hop, one uid) -> queue-run;
  direct    queue-run starting deliver-maildir itself (posix_spawn);
  previous  the queue-run of a previous commit (BENCH_SPAWN_PREV, default the commit before
            the spawner and the index module: 11bad66), built from git into a temporary
            directory, when git and the build work (else skipped, said so).
Each is run BENCH_SPAWN_ROUNDS (default 2) times in alternating order; the rate is messages
per second from the first delivery to the last (mean of the rounds). Baseline, same run: the
20-writer durable-commit ceiling (write 2 KB, fsync, rename, fsync the directory), measured
before and after each drain in a directory of its own (_benchlib.Ceiling), mean of the two.
CPU: the drain's process tree in a cgroup (smtp_model.CpuGroup): CPU time per message.
concurrency-local 20. Each drained instance stays until the end (BENCH_SPAWN_KEEP=0: removed
before the next is made, as before 2026-12-05 night): on ext4 without a journal an instance made
right after another was deleted lands (mail-instance's +T on MAILROOT) in the block groups just
freed, and every delivery's new inode walks the freed ones (doc/performance.md, 2026-12-05
night): that measured the previous variant's clean-up, not the program.
"""
import os
import signal
import subprocess
import sys
import tempfile
import time

from _benchlib import BOXES, Ceiling, message, remove_tree, settle
from smtp_model import CpuGroup

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.join(ROOT, "build", "bin")
N = int(os.environ.get("BENCH_SPAWN_N", "2000"))
ROUNDS = int(os.environ.get("BENCH_SPAWN_ROUNDS", "2"))
PREV = os.environ.get("BENCH_SPAWN_PREV", "11bad66")
QUID, DUID = 61001, 61002
# keep each drained instance until the end (1) or remove it before the next is made (0)
KEEP = os.environ.get("BENCH_SPAWN_KEEP", "1") == "1"


def envelope(i):
    return b"Fsender@example.test\0Tuser%d@example.test\0\0" % (i % BOXES)


def instance(base, name, owned):
    root = os.path.join(base, name)
    e = dict(os.environ, PATH=BIN + ":" + os.environ.get("PATH", "/usr/bin:/bin"), MAILROOT=root)
    r = subprocess.run([os.path.join(BIN, "mail-instance"), "create", root, "--hostname",
                        "mx.example.test", "--domain", "example.test"], env=e, capture_output=True)
    if r.returncode:
        sys.exit("mail-instance: %r" % r.stderr)
    lines = []
    for b in range(BOXES):
        md = os.path.join(root, "mail", "example.test", "user%d" % b)
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(md, sub), exist_ok=True)
        lines.append("user%d@example.test:!:mail/example.test/user%d:0" % (b, b))
    with open(os.path.join(root, "control", "users"), "a") as f:
        f.write("\n".join(lines) + "\n")
    r = subprocess.run([os.path.join(BIN, "mail-user"), "rebuild"], env=e, capture_output=True)
    if r.returncode:
        sys.exit("mail-user rebuild: %r" % r.stderr)
    with open(os.path.join(root, "control", "concurrency-local"), "w") as f:
        f.write("20\n")
    q = os.path.join(root, "queue", "mess")
    os.makedirs(q, exist_ok=True)
    now = int(time.time())
    for i in range(N):
        env, msg = envelope(i), message(i)
        with open(os.path.join(q, "%d.%06d.%d" % (now - 10, i % 1000000, 5000000 + i)), "wb") as f:
            f.write(b"PBQ1 %d %d %d\n" % (now - 10, len(env), len(msg)) + env + msg)
    for sub in ("tmp", "state", "hold", "ctl", "quarantine"):
        os.makedirs(os.path.join(root, "queue", sub), exist_ok=True)
    if owned:  # the queue to one uid, the mailboxes to another
        for d, uid in (("queue", QUID), ("mail", DUID)):
            for top, dirs, files in os.walk(os.path.join(root, d)):
                os.chown(top, uid, uid)
                for n in files:
                    os.chown(os.path.join(top, n), uid, uid)
    os.sync()
    return root, e


def drain(root, e, argv, cg):
    """Returns messages per second and the CPU time (ms) a message of the drain's process tree
    (its cgroup; None without one)."""
    log = os.path.join(root, "drain.log")
    with open(log, "wb") as lf:
        t0 = time.monotonic()
        c0 = cg.usage_ms()
        p = subprocess.Popen(argv, stdout=lf, stderr=subprocess.STDOUT, env=e, preexec_fn=cg.enter)
        first = None
        try:
            while True:
                time.sleep(0.02)
                with open(log, "rb") as f:
                    data = f.read()
                if first is None and b"\ndelivery " in data:
                    first = time.monotonic()
                if data.count(b"\ndone ") >= N:
                    break
                if time.monotonic() - t0 > 300 or p.poll() is not None:
                    sys.exit("drain failed (%s): %s" % (p.poll(), data[-2000:].decode(errors="replace")))
            last = time.monotonic()
            c1 = cg.usage_ms()
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=60)
    return N / (last - first), (c1 - c0) / N if c0 is not None else None


def build_previous(base):
    src = os.path.join(base, "prev")
    os.makedirs(src)
    try:
        a = subprocess.run("git -C %s archive %s | tar -x -C %s" % (ROOT, PREV, src), shell=True,
                           capture_output=True, timeout=120)
        if a.returncode:
            return None, a.stderr.decode(errors="replace").strip()
        b = subprocess.run(["make", "-s", "-C", src, "WERROR=", "-j2", "all"], capture_output=True,
                           timeout=600)
        exe = [os.path.join(src, p, "queue-run") for p in ("build/bin", "bin")]
        exe = [x for x in exe if os.path.exists(x)]
        if not exe:
            return None, (b.stderr or b.stdout).decode(errors="replace")[-300:]
        return exe[0], None
    except (OSError, subprocess.TimeoutExpired) as ex:
        return None, str(ex)


def main():
    settle("queue_spawn")
    ceil = Ceiling()  # first: a directory apart from the instances (bench/_benchlib.py)
    base = tempfile.mkdtemp(prefix="pillarbox-bench-spawn-", dir=os.environ.get("TMPDIR", "/var/tmp"))
    os.chmod(base, 0o755)
    root_user = os.geteuid() == 0
    cg = CpuGroup("bench-spawn")
    print("queue spawner benchmark, %s UTC, %d messages of 2 KB to %d Maildirs, cpus=%d, load=%s, "
          "%s" % (time.strftime("%Y-%m-%d %H:%M", time.gmtime()), N, BOXES, os.cpu_count(),
                  " ".join("%.1f" % x for x in os.getloadavg()),
                  "as root (spawner changes uids)" if root_user else "not root (spawner: one uid)"))
    try:
        prev, why = build_previous(base)
        if not prev:
            print("previous commit %s: not built, skipped (%s)" % (PREV, why))
        variants = [("spawner", lambda: [os.path.join(BIN, "queue-spawn")] +
                     (["-q", "%d:%d" % (QUID, QUID), "-l", "%d:%d" % (DUID, DUID)] if root_user else [])
                     + [os.path.join(BIN, "queue-run")], True),
                    ("direct", lambda: [os.path.join(BIN, "queue-run")], False)]
        if prev:
            variants.append(("previous", lambda: [prev], False))
        res = {v[0]: [] for v in variants}
        ceil.measure()
        for r in range(ROUNDS):
            order = variants if r % 2 == 0 else list(reversed(variants))
            for name, argv, owned in order:
                root, e = instance(base, "%s%d" % (name, r), owned and root_user)
                rate, cpu = drain(root, e, argv(), cg)
                res[name].append((rate, cpu, (ceil.seen[-1] + ceil.measure()) / 2))
                if not KEEP:
                    remove_tree(root)
        print("%-10s %10s %12s %12s %7s" % ("variant", "msg/s", "CPU/msg ms", "ceiling/s", "ratio"))
        for name, _, _ in variants:
            rate = sum(x[0] for x in res[name]) / len(res[name])
            cpu = [x[1] for x in res[name] if x[1] is not None]
            c = sum(x[2] for x in res[name]) / len(res[name])
            print("%-10s %10.0f %12s %12.0f %7.2f" % (name, rate, "%.3f" % (sum(cpu) / len(cpu))
                                                     if cpu else "-", c, rate / c))
        print("ceiling (20 writers, before and after each drain) %s; highest %.0f, median %.0f"
              % (" ".join("%.0f" % x for x in ceil.seen), ceil.highest(), ceil.median()))
        sp = sum(x[0] for x in res["spawner"]) / ROUNDS
        for other in ("direct", "previous"):
            if res.get(other):
                o = sum(x[0] for x in res[other]) / ROUNDS
                print("spawner / %s: %.2f" % (other, sp / o))
    finally:
        remove_tree(base)
        ceil.close()
        cg.remove()


if __name__ == "__main__":
    main()
