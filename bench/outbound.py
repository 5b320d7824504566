"""Outbound benchmark.

1. Remote delivery rate: N (default 10,000) 2 KB messages to 100 domains, routed by
   control/routes to Postfix's smtp-sink on loopback, concurrency 20. If queue-run is built,
   the messages go through the queue (inject all, then time queue-run draining it), with
   local delivery through the queue (100 accounts) as the baseline; in every case it also
   measures smtp-send run directly, one process per message, against deliver-maildir run the
   same way. Same count and concurrency on both sides. Target ratio: >= 1.0.
2. Resolver: 1,000 mx-resolve lookups against a local dnsmasq, lookups per second, with the
   rate of bare UDP queries from Python to the same dnsmasq as the baseline.

Environment: BENCH_N (messages), BENCH_LOOKUPS.
"""
import os
import sys


import concurrent.futures  # noqa: E402
import shutil
import socket
import struct
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.join(ROOT, "build", "bin")  # where make puts the programs
sys.path.insert(0, os.path.join(ROOT, "tests"))

from outbound_helpers import Dnsmasq  # noqa: E402

N = int(os.environ.get("BENCH_N", "10000"))
LOOKUPS = int(os.environ.get("BENCH_LOOKUPS", "1000"))
CONC = 20
DOMAINS = 100


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def message(i):
    head = ("From: sender@example.test\nTo: user%d@dom%d.test\nSubject: bench %d\n"
            "Message-ID: <%d@example.test>\n\n" % (i, i % DOMAINS, i, i)).encode()
    line = b"The quick brown fox jumps over the lazy dog. 0123456789 abcdefghij\n"
    body = line * ((2048 - len(head)) // len(line))
    return head + body + b"." * max(0, 2048 - len(head) - len(body) - 1) + b"\n"


def env(**kw):
    e = dict(os.environ)
    e["PATH"] = BIN + ":" + e.get("PATH", "/usr/bin:/bin")
    e.update(kw)
    return e


def pool(jobs):
    """Runs jobs (argv, input, env) with CONC at a time; returns elapsed seconds, failures."""
    fails = []

    def one(j):
        argv, data, e = j
        r = subprocess.run(argv, input=data, env=e, capture_output=True, timeout=120)
        ok = r.returncode == 0 and (argv[0].endswith("deliver-maildir") or
                                     all(l.startswith(b"D\t") for l in r.stdout.splitlines()))
        if not ok:
            fails.append((argv[:3], r.returncode, r.stdout[:200], r.stderr[:200]))
    t = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(CONC) as ex:
        list(ex.map(one, jobs))
    return time.monotonic() - t, fails


def bench_direct(tmp, sinkport):
    """smtp-send and deliver-maildir run directly, one process per message."""
    root = os.path.join(tmp, "inst")
    os.makedirs(os.path.join(root, "control"))
    with open(os.path.join(root, "control", "me"), "w") as f:
        f.write("bench.example.test\n")
    with open(os.path.join(root, "control", "routes"), "w") as f:
        f.write("* 127.0.0.1:%d\n" % sinkport)
    msgs = [message(i) for i in range(N)]
    for d in range(DOMAINS):
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(tmp, "mail", "u%d" % d, sub))
    local = [([os.path.join(BIN, "deliver-maildir"), os.path.join(tmp, "mail", "u%d" % (i % DOMAINS))],
              msgs[i], env(SENDER="sender@example.test", RECIPIENT="user%d@example.test" % i))
             for i in range(N)]
    e = env(MAILROOT=root)
    remote = [([os.path.join(BIN, "smtp-send"), "dom%d.test" % (i % DOMAINS), "sender@example.test",
                "user%d@dom%d.test" % (i, i % DOMAINS)], msgs[i], e) for i in range(N)]
    tl, fl = pool(local)
    tr, fr = pool(remote)
    return tl, fl, tr, fr


def inject(e, data, sender, rcpt):
    r_env, w_env = os.pipe()
    p = subprocess.Popen([os.path.join(BIN, "queue-inject")], stdin=subprocess.PIPE,
                         stdout=r_env, stderr=subprocess.PIPE, env=e)
    os.close(r_env)
    try:
        p.stdin.write(data)
        p.stdin.close()
        os.write(w_env, b"F" + sender.encode() + b"\0T" + rcpt.encode() + b"\0\0")
    finally:
        os.close(w_env)
    p.stderr.read()
    return p.wait(timeout=60)


def drain(root, e, what):
    """Starts queue-run on a filled queue, returns the seconds until queue/mess is empty."""
    mess = os.path.join(root, "queue", "mess")
    log = open(os.path.join(root, "queue-run.log"), "wb")
    t = time.monotonic()
    p = subprocess.Popen([os.path.join(BIN, "queue-run")], env=e, cwd=root, stdout=log,
                         stderr=subprocess.STDOUT)
    try:
        deadline = t + 600
        while os.listdir(mess):
            if p.poll() is not None:
                raise SystemExit("%s: queue-run exited (status %s) with %d messages queued"
                                 % (what, p.returncode, len(os.listdir(mess))))
            if time.monotonic() > deadline:
                raise SystemExit("%s: queue-run did not drain the queue in time" % what)
            time.sleep(0.05)
        return time.monotonic() - t
    finally:
        p.terminate()
        p.wait(timeout=60)
        log.close()


def bench_queue(tmp, sinkport):
    """Through the queue: N messages injected first, then queue-run timed until it is empty."""
    out = []
    for kind in ("local", "remote"):
        root = os.path.join(tmp, kind)
        r = subprocess.run([os.path.join(BIN, "mail-instance"), "create", root, "--hostname",
                            "mx.example.test", "--domain", "example.test"], env=env(),
                           capture_output=True, timeout=60)
        if r.returncode:
            raise SystemExit("mail-instance failed: %r" % r.stderr)
        e = env(MAILROOT=root)
        c = os.path.join(root, "control")
        for name, val in (("concurrency-local", "20"), ("concurrency-remote", "20"),
                          ("routes", "* 127.0.0.1:%d" % sinkport)):
            with open(os.path.join(c, name), "w") as f:
                f.write(val + "\n")
        if kind == "local":
            for d in range(DOMAINS):
                subprocess.run([os.path.join(BIN, "mail-user"), "add", "u%d@example.test" % d],
                               input=b"pw\n", env=e, capture_output=True, timeout=60, check=True)
            rcpt = lambda i: "u%d@example.test" % (i % DOMAINS)
        else:
            rcpt = lambda i: "user%d@dom%d.test" % (i, i % DOMAINS)
        t = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(CONC) as ex:
            rcs = list(ex.map(lambda i: inject(e, message(i), "sender@example.test", rcpt(i)),
                              range(N)))
        ti = time.monotonic() - t
        if any(rcs):
            raise SystemExit("%s: %d injections failed" % (kind, sum(1 for x in rcs if x)))
        try:
            td = drain(root, e, kind)
        except SystemExit as x:
            out.append(str(x))
            continue
        fails = 0
        with open(os.path.join(root, "queue-run.log"), "rb") as f:
            for line in f:
                if b" fail: " in line or b" defer: " in line:
                    fails += 1
        out.append((ti, td, fails))
    return out


def bench_resolver(tmp):
    d = Dnsmasq(*["--mx-host=d%d.test,mx%d.d%d.test,10" % (i, i, i) for i in range(10)],
                *["--host-record=mx%d.d%d.test,127.0.0.%d" % (i, i, i + 2) for i in range(10)])
    try:
        e = env(**d.env)
        t = time.monotonic()
        bad = 0
        for i in range(LOOKUPS):
            r = subprocess.run([os.path.join(BIN, "mx-resolve"), "d%d.test" % (i % 10)], env=e,
                               capture_output=True, timeout=30)
            bad += r.returncode != 0
        t_mx = time.monotonic() - t
        # baseline: the same number of bare MX queries from this process
        q = b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x02d0\x04test\x00\x00\x0f\x00\x01"
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(2)
        t = time.monotonic()
        for i in range(LOOKUPS):
            s.sendto(q, ("127.0.0.1", d.port))
            s.recvfrom(4096)
        t_raw = time.monotonic() - t
        s.close()
        return t_mx, bad, t_raw
    finally:
        d.stop()


def main():
    global N
    tmp = tempfile.mkdtemp(prefix="pillarbox-bench-out-")
    sinkport = free_port()
    sink = subprocess.Popen(["/usr/sbin/smtp-sink"] + (["-u", "nobody"] if os.geteuid() == 0 else [])
                            + ["-m", "256", "127.0.0.1:%d" % sinkport, "256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", sinkport), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("smtp-sink did not start")
                time.sleep(0.05)
        qfail = False
        if os.path.exists(os.path.join(BIN, "queue-run")):
            print("outbound through the queue: %d messages of 2 KB to %d domains, concurrency %d"
                  % (N, DOMAINS, CONC))
            res = bench_queue(tmp, sinkport)
            for kind, r in zip(("local  (queue-run -> deliver-maildir, 100 accounts)",
                                "remote (queue-run -> smtp-send -> smtp-sink)"), res):
                if isinstance(r, str):
                    print("  %s: FAILED: %s" % (kind, r))
                    qfail = True
                else:
                    print("  %s: inject %.1f s, drain %.2f s, %.0f msg/s, %d failures"
                          % (kind, r[0], r[1], N / r[1], r[2]))
                    qfail = qfail or r[2] > 0
            if not any(isinstance(r, str) for r in res):
                print("  ratio remote/local: %.2f (target >= 1.0)" % (res[0][1] / res[1][1]))
        if os.path.exists(os.path.join(BIN, "queue-run")):
            N = min(N, 2500)  # a secondary figure: keep the whole run near 3 minutes
        print("outbound, programs run directly: %d messages of 2 KB to %d domains, "
              "concurrency %d" % (N, DOMAINS, CONC))
        tl, fl2, tr, fr = bench_direct(tmp, sinkport)
        fl = fl2
        print("  local  (deliver-maildir): %.2f s, %.0f msg/s, %d failures" % (tl, N / tl, len(fl)))
        print("  remote (smtp-send -> smtp-sink): %.2f s, %.0f msg/s, %d failures"
              % (tr, N / tr, len(fr)))
        for f in (fl + fr)[:3]:
            print("    failure:", f)
        print("  ratio remote/local: %.2f (target >= 1.0)" % ((N / tr) / (N / tl)))
        t_mx, bad, t_raw = bench_resolver(tmp)
        print("resolver: %d mx-resolve lookups in %.2f s: %.0f lookups/s (%d failed); "
              "bare UDP queries: %.0f/s; ratio %.3f" % (LOOKUPS, t_mx, LOOKUPS / t_mx, bad,
                                                      LOOKUPS / t_raw, t_raw / t_mx))
        return 1 if (fl or fr or bad or qfail) else 0
    finally:
        sink.terminate()
        sink.wait(timeout=10)
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("kept", tmp)


if __name__ == "__main__":
    sys.exit(main())
