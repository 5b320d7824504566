"""Local delivery benchmark: deliver-maildir against the disk's durable-commit ceiling.

Ceiling (baseline, measured in the same run): a loop that writes a 2 KB file, fsyncs it,
renames it and fsyncs the directory, with 1, 8 and 20 parallel writers (threads; the
syscalls release the GIL), in commits per second.

Delivery: N 2 KB messages through deliver-maildir (one process each, as queue-run runs it)
into 100 Maildirs, with 1, 8 and 20 deliveries at once. A delivery is two durable writes
(the file, then new/), so its ratio to the ceiling at the same parallelism is the figure;
the issue's local-delivery target (0.4 of the 20-writer ceiling) counts the queue's state
write as well, which this benchmark does not include.

For scale, the rate at which this script can start deliver-maildir at all (it exits at once
without RECIPIENT) is printed too: on a 2-core machine it bounds the 20-way figure.

Environment: BENCH_DELIVER_N (deliveries per parallelism, default 2000).
"""
import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile
import time

from _benchlib import BOXES, ceiling, message, remove_tree, settle  # bench/_benchlib.py

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PROG = os.path.join(ROOT, "build", "bin", "deliver-maildir")
N = int(os.environ.get("BENCH_DELIVER_N", "2000"))
PARALLEL = (1, 8, 20)


def deliveries(base, par, count):
    top = os.path.join(base, "mail%d" % par)
    boxes = []
    for b in range(BOXES):
        p = os.path.join(top, "user%d" % b)
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(p, sub))
        boxes.append(p)
    msgs = [message(i) for i in range(count)]
    env = dict(os.environ, SENDER="sender@example.test")
    fails = []

    def one(i):
        e = dict(env, RECIPIENT="user%d@example.test" % (i % BOXES))
        r = subprocess.run([PROG, boxes[i % BOXES]], input=msgs[i], env=e,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if r.returncode != 0:
            fails.append(r.stderr)

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(par) as ex:
        list(ex.map(one, range(count)))
    el = time.monotonic() - t0
    got = sum(len(os.listdir(os.path.join(b, "new"))) for b in boxes)
    remove_tree(top)
    if fails or got != count:
        print("deliver: %d failures, %d of %d delivered: %r" % (len(fails), got, count, fails[:3]))
        sys.exit(1)
    return count / el


def spawn_only(par, count):
    """The cost of starting deliver-maildir from here: it exits at once (no RECIPIENT)."""
    env = dict(os.environ)
    env.pop("RECIPIENT", None)

    def one(i):
        subprocess.run([PROG, "/nonexistent"], input=b"", env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(par) as ex:
        list(ex.map(one, range(count)))
    return count / (time.monotonic() - t0)


def main():
    global PROG
    if not os.access(PROG, os.X_OK):
        print("deliver: build first (make)")
        return 1
    settle("deliver")
    base = tempfile.mkdtemp(prefix="pb-bench-deliver-", dir=os.environ.get("BENCH_DIR"))
    try:
        # a private copy: a `make` elsewhere in the tree must not swap the binary mid-run
        shutil.copy2(PROG, os.path.join(base, "deliver-maildir"))
        PROG = os.path.join(base, "deliver-maildir")
        print("deliver-maildir: %d x 2 KB messages into %d Maildirs per run; date %s" %
              (N, BOXES, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
        for par in PARALLEL:
            c = ceiling(base, par, N)
            d = deliveries(base, par, N)
            sp = spawn_only(par, N)
            print("  parallel %2d: ceiling %6.0f commits/s, deliver-maildir %6.0f msg/s, "
                  "ratio %.2f (process start alone: %6.0f/s)" % (par, c, d, d / c, sp))
    finally:
        remove_tree(base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
