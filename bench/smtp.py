"""SMTP in benchmark: the accept rate of tcpserver -> smtp-receive -> queue-inject, as a ratio
to queue-inject alone measured in the same run, plus end to end and memory per session.

Baseline: N 2 KB messages given straight to queue-inject (one process each, the qmail-queue
way), 20 at once.
SMTP: Postfix's smtp-source sends the same N messages over 20 parallel sessions (-s 20 -d:
connections reused; then without -d: one connection per message) through tcpserver to
smtp-receive, which hands each to queue-inject. One session with 1000 pipelined messages
(RFC 2920: MAIL, RCPT, DATA in one write, the body and the next MAIL, RCPT, DATA in the next).
End to end: the same load with queue-run delivering, timed until the last message is in its
Maildir. Memory: proportional set size (smaps_rollup Pss) of smtp-receive holding an idle
session after EHLO, with 1 and with 20 sessions held.

Environment: BENCH_SMTP_N (messages per run, default 10000).
"""
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _benchlib import remove_tree, settle  # noqa: E402
ROOT = os.path.dirname(HERE)
BIN = os.path.join(ROOT, "build", "bin")  # where make puts the programs
N = int(os.environ.get("BENCH_SMTP_N", "10000"))
PAR = 20
SOURCE = "/usr/sbin/smtp-source"


def env_for(root):
    e = dict(os.environ)
    e["PATH"] = BIN + ":" + e.get("PATH", "/usr/bin:/bin")
    e["MAILROOT"] = root
    return e


def message(i):
    head = ("From: a@b.example\nTo: bench@example.test\nSubject: bench %d\n\n" % i).encode()
    line = b"The quick brown fox jumps over the lazy dog. 0123456789 abcdefghij\n"
    return head + line * ((2048 - len(head)) // len(line))


def make_instance(base, name):
    root = os.path.join(base, name)
    e = env_for(root)
    subprocess.run([os.path.join(BIN, "mail-instance"), "create", root, "--hostname",
                    "mx.example.test", "--domain", "example.test"], env=e, check=True,
                   capture_output=True)
    subprocess.run([os.path.join(BIN, "mail-user"), "add", "bench@example.test"], env=e,
                   input=b"benchpass\n", check=True, capture_output=True)
    # every session comes from 127.0.0.1: the per-address cap at Postfix's default (50)
    with open(os.path.join(root, "control", "smtp-peermax"), "w") as f:
        f.write("50\n")
    return root, e


def baseline(e, n):
    env = b"Fa@b.example\0Tbench@example.test\0\0"
    msg = message(0)
    lock = threading.Lock()
    left = [n]
    fails = [0]

    def worker():
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            r, w = os.pipe()
            p = subprocess.Popen([os.path.join(BIN, "queue-inject")], stdin=subprocess.PIPE,
                                 stdout=r, stderr=subprocess.DEVNULL, env=e)
            os.close(r)
            p.stdin.write(msg)
            p.stdin.close()
            os.write(w, env)
            os.close(w)
            if p.wait() != 0:
                fails[0] += 1

    t0 = time.monotonic()
    ts = [threading.Thread(target=worker) for _ in range(PAR)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.monotonic() - t0
    assert not fails[0], "%d injections failed" % fails[0]
    return n / dt


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(e, port):
    p = subprocess.Popen(["tcpserver", "-R", "-H", "-l", "mx.example.test", "-c", "100", "-b", "100", "127.0.0.1",
                          str(port), os.path.join(BIN, "smtp-receive")], env=e,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return p
        if time.monotonic() > deadline:
            p.kill()
            raise RuntimeError("tcpserver did not start")
        time.sleep(0.05)


def smtp_source(port, n, reuse, sessions=PAR):
    args = [SOURCE, "-s", str(sessions), "-m", str(n), "-l", "2048", "-f", "a@b.example",
            "-t", "bench@example.test", "-M", "client.example"]
    if reuse:
        args.append("-d")
    t0 = time.monotonic()
    r = subprocess.run(args + ["127.0.0.1:%d" % port], capture_output=True, timeout=900)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError("smtp-source failed: %r" % (r.stderr[-500:],))
    return n / dt


def queued(root):
    c = 0
    for d, _, files in os.walk(os.path.join(root, "queue", "mess")):
        c += len(files)
    return c


def pipelined(port, n):
    body = message(0).replace(b"\n", b"\r\n") + b".\r\n"
    cmd = b"MAIL FROM:<a@b.example>\r\nRCPT TO:<bench@example.test>\r\nDATA\r\n"
    with socket.create_connection(("127.0.0.1", port)) as s:
        f = s.makefile("rb")

        def reply():
            while True:
                ln = f.readline()
                if not ln:
                    raise RuntimeError("connection closed")
                if ln[3:4] == b" ":
                    return int(ln[:3])
        t0 = time.monotonic()
        reply()
        s.sendall(b"EHLO client.example\r\n")
        reply()
        s.sendall(cmd)
        for i in range(n):
            assert reply() == 250 and reply() == 250 and reply() == 354
            s.sendall(body + (cmd if i + 1 < n else b"QUIT\r\n"))
            assert reply() == 250
        reply()
        return n / (time.monotonic() - t0)


def delivered(root):
    d = os.path.join(root, "mail", "example.test", "bench", "new")
    return len(os.listdir(d)) if os.path.isdir(d) else 0


def end_to_end(e, root, port, n):
    q = subprocess.Popen([os.path.join(BIN, "queue-run")], env=e, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        smtp_source(port, n, True)
        accept = time.monotonic() - t0
        deadline = time.monotonic() + 600
        while delivered(root) < n:
            if time.monotonic() > deadline:
                raise RuntimeError("only %d of %d delivered" % (delivered(root), n))
            time.sleep(0.05)
        return n / accept, n / (time.monotonic() - t0)
    finally:
        q.terminate()
        q.wait()


def pss_kb(pid):
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for ln in f:
            if ln.startswith("Pss:"):
                return int(ln.split()[1])
    return None


def children(ppid):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open("/proc/%s/stat" % p) as f:
                    st = f.read().rsplit(")", 1)[1].split()
                if int(st[1]) == ppid:
                    out.append(int(p))
            except OSError:
                pass
    return out


def held_sessions(server, port, k):
    socks = []
    try:
        for _ in range(k):
            s = socket.create_connection(("127.0.0.1", port))
            s.recv(1000)
            s.sendall(b"EHLO client.example\r\n")
            buf = b""
            while b"250 " not in buf:
                buf += s.recv(1000)
            socks.append(s)
        time.sleep(0.2)
        kids = children(server.pid)
        vals = [pss_kb(p) for p in kids]
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals), len(vals)
    finally:
        for s in socks:
            s.close()


def main():
    if not os.path.exists(SOURCE):
        print("smtp-source not found (Debian package postfix); skipped")
        return 0
    settle("smtp")
    base = tempfile.mkdtemp(prefix="bench-smtp-")
    try:
        print("messages per run: %d of 2 KB, %d parallel" % (N, PAR))
        root, e = make_instance(base, "base")
        b = baseline(e, N)
        print("baseline queue-inject alone:            %8.0f msg/s" % b)

        root, e = make_instance(base, "smtp")
        port = free_port()
        srv = start_server(e, port)
        try:
            r = smtp_source(port, N, True)
            print("smtp-source -s 20 -d (reused sessions): %8.0f msg/s  ratio %.2f (target >= 0.8)"
                  % (r, r / b))
            r1 = smtp_source(port, N // 2, False)
            print("one connection per message:             %8.0f msg/s  ratio %.2f" % (r1, r1 / b))
            rp = pipelined(port, 1000)
            print("one session, 1000 pipelined messages:   %8.0f msg/s  ratio %.2f" % (rp, rp / b))
            for k in (1, 20):
                v, cnt = held_sessions(srv, port, k)
                print("PSS per held session (%2d held):         %8.0f KB (%d processes; target < 256)"
                      % (k, v, cnt))
        finally:
            srv.terminate()
            srv.wait()

        root, e = make_instance(base, "e2e")
        port = free_port()
        srv = start_server(e, port)
        try:
            acc, e2e = end_to_end(e, root, port, N)
            print("end to end with queue-run:               %8.0f msg/s accepted, %.0f msg/s "
                  "delivered into Maildir  ratio %.2f" % (acc, e2e, e2e / b))
        finally:
            srv.terminate()
            srv.wait()
    finally:
        remove_tree(base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
