"""Injection by one injector against the one-writer durable-commit ceiling (issue 11).

Baseline (same run): the disk's one-writer ceiling (bench/_benchlib.py: write 2 KB, fsync,
rename, fsync the directory), measured right before and right after each measurement (mean).

Measured, one injector, one message at a time, N messages of 2 KB:
  socket   the injection socket as the inject service runs it (queue-inject-ipc -l, its
           long-lived workers commit in-process): the injector is one process (this script)
           that opens one connection per message and speaks the socket's protocol, as
           smtp-receive and sendmail do in-process (lib/inject);
  process  queue-inject started per message (lib/spawn's posix_spawn from this script, message
           on fd 0, envelope on fd 1): the cost of a process per message, as before the pool.
Target: the socket's rate at least 0.6 of the ceiling. Each variant runs ROUNDS times,
alternating; the median is kept and every round printed.

Environment: BENCH_INJECT_N (default 1000), BENCH_INJECT_ROUNDS (default 3).
"""
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from _benchlib import ceiling, message, remove_tree, settle

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.join(os.path.dirname(HERE), "build", "bin")
N = int(os.environ.get("BENCH_INJECT_N", "1000"))
ROUNDS = int(os.environ.get("BENCH_INJECT_ROUNDS", "3"))
ENV = b"Fsender@example.test\0Tuser0@example.test\0\0"


def instance(base):
    root = os.path.join(base, "inst")
    env = dict(os.environ, PATH=BIN + ":" + os.environ.get("PATH", "/usr/bin:/bin"),
               MAILROOT=root)
    subprocess.run([os.path.join(BIN, "mail-instance"), "create", root, "--hostname",
                    "mx.example.test", "--domain", "example.test"], env=env, check=True,
                   capture_output=True)
    return root, env


def over_socket(sock, n):
    msg = message(0)
    payload = b"%d:%s,0:,%d:%s," % (len(msg), msg, len(ENV), ENV)
    t0 = time.monotonic()
    for _ in range(n):
        with socket.socket(socket.AF_UNIX) as c:
            c.settimeout(60)
            c.connect(sock)
            c.sendall(payload)
            c.shutdown(socket.SHUT_WR)
            ans = b""
            while not ans.endswith(b"\n"):
                b = c.recv(256)
                if not b:
                    break
                ans += b
            if not ans.startswith(b"0 "):
                raise RuntimeError("injection failed: %r" % ans)
    return n / (time.monotonic() - t0)


def by_process(env, n):
    msg = message(0)
    qi = os.path.join(BIN, "queue-inject")
    t0 = time.monotonic()
    for _ in range(n):
        mr, mw = os.pipe()
        er, ew = os.pipe()
        os.write(mw, msg)
        os.write(ew, ENV)
        os.close(mw)
        os.close(ew)
        pid = os.posix_spawn(qi, [qi], env, file_actions=[
            (os.POSIX_SPAWN_DUP2, mr, 0), (os.POSIX_SPAWN_DUP2, er, 1)])
        os.close(mr)
        os.close(er)
        _, st = os.waitpid(pid, 0)
        if st:
            raise RuntimeError("queue-inject exited %d" % st)
    return n / (time.monotonic() - t0)


def main():
    settle("inject")
    base = tempfile.mkdtemp(prefix="bench-inject-", dir="/var/tmp")
    srv = None
    try:
        root, env = instance(base)
        sock = os.path.join(root, "queue", "bench.sock")
        srv = subprocess.Popen([os.path.join(BIN, "queue-inject-ipc"), "-1", "-n", "4", "-l",
                                sock], env=env, stdout=subprocess.PIPE)
        if srv.stdout.readline() != b"\n":
            raise RuntimeError("queue-inject-ipc -l did not start")
        with open("/proc/loadavg") as f:
            print("injection, one injector, %d messages of 2 KB, %d rounds, %s, load %s"
                  % (N, ROUNDS, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     " ".join(f.read().split()[:3])))
        over_socket(sock, 50)  # warm-up
        res = {"socket": [], "process": []}
        for _ in range(ROUNDS):
            for name in ("socket", "process"):
                c0 = ceiling(base, 1, N)
                r = over_socket(sock, N) if name == "socket" else by_process(env, N)
                c1 = ceiling(base, 1, N)
                res[name].append((r, (c0 + c1) / 2))
        for name in ("socket", "process"):
            ratios = [r / c for r, c in res[name]]
            print("%-8s %s  median ratio %.2f (target >= 0.6)" % (
                name, "  ".join("%.0f msg/s / ceiling %.0f = %.2f" % (r, c, r / c)
                                for r, c in res[name]), statistics.median(ratios)))
        with open("/proc/loadavg") as f:
            print("load after: %s" % " ".join(f.read().split()[:3]))
    finally:
        if srv:
            srv.terminate()
            srv.wait(timeout=30)
        remove_tree(base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
