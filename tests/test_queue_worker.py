"""Local delivery by queue-spawn's long-running workers (deliver-maildir -W, issue 11 item 6):
a worker serves many deliveries; a delivery key makes a retry idempotent; killing workers and
queue-run in the middle of deliveries, again and again, loses no message and delivers none
twice."""
import os
import re
import signal
import subprocess

from conftest import prog, wait_for
from test_queue_admin import children, inst, proc_uid, runs  # noqa: F401 (fixtures)

BODY = b"".join(b"line %06d of a message big enough to take a while to copy\n" % i
                for i in range(8000))  # about 480 KB


def message(n):
    return b"Subject: crash %d\nMessage-ID: <%d@crash.test>\n\n" % (n, n) + BODY


def named(pid, name):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip() == name
    except OSError:
        return False


def workers(q):
    return [c for c in children(q.p.pid) if named(c, "deliver-maildir")]


def ids_in(maildir):
    """Message-ID numbers of the messages in new/ and cur/, with repeats."""
    out = []
    for sub in ("new", "cur"):
        d = os.path.join(maildir, sub)
        for n in os.listdir(d):
            with open(os.path.join(d, n), "rb") as f:
                m = re.search(rb"^Message-ID: <(\d+)@crash.test>", f.read(4096), re.M)
            assert m, n
            out.append(int(m.group(1)))
    return sorted(out)


def deliver(inst, env, msg=b"Subject: k\n\nkeyed\n"):
    e = dict(inst.env, SENDER="a@example.test", RECIPIENT="bob@example.test")
    e.update(env)
    return subprocess.run([prog("deliver-maildir"), inst.maildir("bob@example.test")], input=msg,
                          env=e, capture_output=True, timeout=30)


def test_a_delivery_key_delivers_once(inst):  # noqa: F811
    md = inst.maildir("bob@example.test")
    key = {"DELIVERY_KEY": "1796458222.146755.29222T0"}
    r = deliver(inst, key)
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    [n] = os.listdir(os.path.join(md, "new"))
    assert re.match(r"^1796458222\.K146755_29222T0\.[^,]+,S=\d+$", n), n
    r = deliver(inst, key)  # the same delivery again: nothing added
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    assert os.listdir(os.path.join(md, "new")) == [n]
    assert os.listdir(os.path.join(md, "tmp")) == []
    # a reader moved it to cur/: a retry (attempt 1) finds it there
    os.rename(os.path.join(md, "new", n), os.path.join(md, "cur", n + ":2,S"))
    r = deliver(inst, dict(key, DELIVERY_ATTEMPT="1"))
    assert r.returncode == 0, r.stderr
    assert os.listdir(os.path.join(md, "new")) == [] and os.listdir(os.path.join(md, "cur"))
    # another key is another delivery; a malformed key is refused, nothing written
    assert deliver(inst, {"DELIVERY_KEY": "1796458222.146755.29222T1"}).returncode == 0
    assert len(os.listdir(os.path.join(md, "new"))) == 1
    for bad in ("noseconds", "12.a/b", "12.x:y", "12."):
        r = deliver(inst, {"DELIVERY_KEY": bad})
        assert r.returncode == 100 and b"DELIVERY_KEY" in r.stderr, (bad, r.stderr)
    assert len(os.listdir(os.path.join(md, "new"))) == 1
    assert os.listdir(os.path.join(md, "tmp")) == []


def test_one_worker_serves_many_deliveries(inst, runs):  # noqa: F811
    inst.control("concurrency-local", "1")
    q = runs(inst, None, [prog("queue-spawn"), prog("queue-run")])
    q.wait_log(r"^start queued=0 spawner=queue-spawn$")
    for n in range(5):
        rc, err = inst.inject(message(n), "alice@example.test", "bob@example.test")
        assert rc == 0, err
    q.wait_log(r"^done ", count=5, timeout=30)
    [w] = wait_for(lambda: workers(q), what="the worker")  # one, still there, idle
    assert proc_uid(w) == os.geteuid()
    # it shares queue-spawn's table of new/ fsyncs (lib/groupsync; deliver-maildir -W -g 3)
    with open("/proc/%d/maps" % w) as f:
        assert "memfd:pillarbox-groupsync" in f.read()
    assert ids_in(inst.maildir("bob@example.test")) == list(range(5))
    assert not re.search(r"status=deferred", q.text()), q.text()


def test_killed_workers_and_queue_run_lose_and_double_nothing(inst, runs):  # noqa: F811
    """SIGKILL the workers whenever a delivery is being written (a file in a Maildir's tmp/), and
    every other round queue-run too, for at most 40 rounds, then one clean run: every message is
    in each recipient's Maildir exactly once."""
    inst.control("concurrency-local", "4")
    inst.control("retry-base", "1")
    inst.control("retry-max", "1")
    mess = inst.path("queue", "mess")
    bob, carol = inst.maildir("bob@example.test"), inst.maildir("carol@example.test")

    def writing():
        return any(os.listdir(os.path.join(d, "tmp")) for d in (bob, carol))

    def hits():
        return sum(len(re.findall(r"status=deferred \(deliver-maildir killed\)", q.text()))
                   for q in logs)

    # On a quiet machine a batch can be delivered between two polls, so that no kill finds a
    # delivery in flight: another batch is queued until one did (at most 5 batches).
    kills, logs, total = 0, [], 0
    for batch in range(5):
        for n in range(total, total + 40):
            rcpts = ["bob@example.test"] + (["carol@example.test"] if n % 2 else [])
            rc, err = inst.inject(message(n), "alice@example.test", *rcpts)
            assert rc == 0, err
        total += 40
        for rnd_no in range(40):
            if not os.listdir(mess):
                break
            q = runs(inst, None, [prog("queue-spawn"), prog("queue-run")])
            logs.append(q)
            q.wait_log(r"^start queued=")
            for _ in range(4):  # the instant of a crash: while a delivery writes in tmp/
                wait_for(lambda: writing() or not os.listdir(mess), timeout=60,
                         interval=0.0002, what="a delivery")
                for w in workers(q):
                    try:
                        os.kill(w, signal.SIGKILL)
                        kills += 1
                    except ProcessLookupError:
                        pass  # it ended between the listing and the kill
            if rnd_no % 2 == 1:
                [qr] = [c for c in children(q.p.pid) if named(c, "queue-run")]
                os.kill(qr, signal.SIGKILL)
                assert q.p.wait(timeout=30) == 111  # queue-spawn ends with it
            else:
                q.stop()
        # a last clean run delivers whatever the kills left queued (under ASan and load 40
        # rounds of kills can leave much of a batch: each kill pass finds all four in flight)
        q = runs(inst, None, [prog("queue-spawn"), prog("queue-run")])
        wait_for(lambda: not os.listdir(mess), timeout=120, what="an empty queue")
        q.stop()
        if hits():
            break
    # the kills hit deliveries in flight (queue-run saw them end by a signal)
    print("CRASHSTATS kills=%d hit=%d batches=%d" % (kills, hits(), batch + 1))
    assert kills > 0 and hits() > 0
    assert ids_in(bob) == list(range(total))
    assert ids_in(carol) == list(range(1, total, 2))
