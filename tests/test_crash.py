"""Crashes: the queue's promises under SIGKILL.

1,000 injections from parallel processes while injectors are SIGKILLed at random moments, and
queue-run and its deliver-maildir children are SIGKILLed mid-run and restarted. Afterwards every
message whose injector exited 0 is in its Maildir, no delivered message is partial, nothing is
quarantined, and the duplicates (allowed: at-least-once) are counted and printed."""
import os
import random
import re
import signal
import subprocess
import threading
import time

from conftest import envelope, prog, wait_for

N = 1000
PARALLEL = 12
USERS = 10


def children_of(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...
        rest = st[st.rfind(")") + 2:].split()
        if len(rest) > 1 and rest[1] == str(pid):
            out.append(int(d))
    return out


def body(n):
    line = ("message %d " % n) * 8 + "\n"
    return ("From: crash@example.test\nTo: u@example.test\nSubject: crash-%d\n\n" % n
            + line * (20 + n % 50) + "END-%d\n" % n).encode()


def test_crash_injection_and_delivery(instance):
    inst = instance
    for u in range(USERS):
        inst.add_user("u%d@example.test" % u)
    inst.control("retry-base", "1")
    inst.control("retry-max", "1")
    rng = random.Random(20261127)
    results = {}  # n -> rc (None: killed)
    lock = threading.Lock()
    state = {"qr": None, "stop": False, "qr_kills": 0, "dm_kills": 0, "inj_kills": 0}
    logs = []

    def start_qr():
        log = open(inst.path("qr.%d.log" % len(logs)), "wb")
        logs.append(log)
        state["qr"] = subprocess.Popen([prog("queue-run")], stdout=log, stderr=subprocess.STDOUT,
                                       env=inst.env)

    def inject(n):
        r_env, w_env = os.pipe()
        p = subprocess.Popen([prog("queue-inject")], stdin=subprocess.PIPE, stdout=r_env,
                             stderr=subprocess.DEVNULL, env=inst.env)
        os.close(r_env)
        kill_at = rng.random() * 0.01 if rng.random() < 0.15 else None
        killed = False
        try:
            if kill_at is not None and rng.random() < 0.3:
                time.sleep(kill_at)
                p.kill()
                killed = True
            try:
                p.stdin.write(body(n))
                p.stdin.close()
            except BrokenPipeError:
                pass
            if kill_at is not None and not killed:
                time.sleep(kill_at / 10)
                p.kill()
                killed = True
            try:
                os.write(w_env, envelope("crash@example.test", "u%d@example.test" % (n % USERS)))
            except BrokenPipeError:
                pass
        finally:
            os.close(w_env)
        rc = p.wait(timeout=60)
        with lock:
            results[n] = None if rc < 0 else rc
            if rc < 0:
                state["inj_kills"] += 1

    def worker(ns):
        for n in ns:
            inject(n)

    def chaos():
        crng = random.Random(7)
        last = time.monotonic()
        while not state["stop"]:
            time.sleep(0.03 + crng.random() * 0.1)
            qr = state["qr"]
            kids = children_of(qr.pid)
            if kids and crng.random() < 0.7:
                try:
                    os.kill(crng.choice(kids), signal.SIGKILL)
                    state["dm_kills"] += 1
                except ProcessLookupError:
                    pass
            if crng.random() < 0.15 or time.monotonic() - last > 0.4:
                last = time.monotonic()
                qr.kill()
                qr.wait()
                state["qr_kills"] += 1
                start_qr()

    start_qr()
    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(range(i, N, PARALLEL),))
               for i in range(PARALLEL)]
    ch = threading.Thread(target=chaos)
    try:
        for t in threads:
            t.start()
        ch.start()
        for t in threads:
            t.join(timeout=120)
        state["stop"] = True
        ch.join(timeout=10)
        # a clean run to the end
        state["qr"].kill()
        state["qr"].wait()
        start_qr()
        wait_for(lambda: not os.listdir(inst.path("queue", "mess")), timeout=60, interval=0.2,
                 what="an empty queue")
    finally:
        state["stop"] = True
        qr = state["qr"]
        if qr and qr.poll() is None:
            qr.send_signal(signal.SIGTERM)
            try:
                qr.wait(timeout=30)
            except subprocess.TimeoutExpired:
                qr.kill()
                qr.wait()
        for log in logs:
            log.close()
    elapsed = time.monotonic() - t0

    delivered = {}
    partial = []
    for u in range(USERS):
        for sub in ("new", "cur"):
            d = os.path.join(inst.maildir("u%d@example.test" % u), sub)
            for name in os.listdir(d):
                with open(os.path.join(d, name), "rb") as f:
                    m = f.read()
                s = re.search(rb"Subject: crash-(\d+)\n", m)
                assert s, m[:200]
                n = int(s.group(1))
                if not m.endswith(body(n)):
                    partial.append(n)
                assert b"Delivered-To: u%d@example.test" % (n % USERS) in m
                delivered[n] = delivered.get(n, 0) + 1
            tmpd = os.path.join(inst.maildir("u%d@example.test" % u), "tmp")
    ok = [n for n, rc in results.items() if rc == 0]
    lost = [n for n in ok if n not in delivered]
    dups = sum(c - 1 for c in delivered.values())
    print("\ncrash test: %d injections, %d exited 0, %d injectors killed, %d queue-run kills, "
          "%d deliver-maildir kills, %d delivered, %d duplicates, %.1fs"
          % (N, len(ok), state["inj_kills"], state["qr_kills"], state["dm_kills"],
             len(delivered), dups, elapsed))
    assert len(results) == N
    assert state["qr_kills"] > 0 and state["inj_kills"] > 0
    assert not partial, partial
    assert not lost, lost
    # a message whose injector did not exit 0 may be delivered, but only if it is whole (above)
    assert set(delivered) <= set(results)
    assert os.listdir(inst.path("queue", "quarantine")) == []
    assert all(rc in (0, None) for rc in results.values()), set(results.values())
