"""queue-inject-ipc -l: a pool worker keeps control/'s intake limits, queue/mess/ and the
trigger fifo open from one message to the next (lib/queue's queue_hold_open and
queue_limits_read). What it keeps must never hide a change: a new databytes applies to the
next message without a restart, and a queue-run that went away and came back (a new reader of
the fifo) still hears of every message."""
import os
import select
import socket
import subprocess
import time

import pytest

from conftest import envelope, proc_children, prog


def netstring(b):
    return str(len(b)).encode() + b":" + b + b","


def inject(sock, msg, env):
    """One message over the socket (no session facts); the server's answer line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(sock)
        s.sendall(netstring(msg) + b"0:," + netstring(env))
        out = b""
        while not out.endswith(b"\n"):
            b = s.recv(256)
            if not b:
                break
            out += b
            assert len(out) < 4096, out  # "CODE ID\n"
    return out.decode()


@pytest.fixture
def pool_proc(instance):
    """One worker (-n 1): every message goes through the same process. (socket, Popen)"""
    sock = instance.path("queue", "test.sock")
    p = subprocess.Popen([prog("queue-inject-ipc"), "-1", "-n", "1", "-l", sock],
                         env=instance.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    r, _, _ = select.select([p.stdout], [], [], 20)
    assert r and p.stdout.readline() == b"\n", "no readiness line"
    yield sock, p
    p.terminate()
    p.wait(timeout=20)


@pytest.fixture
def pool(pool_proc):
    return pool_proc[0]


def test_workers_share_the_fsync_table(instance, pool_proc):
    sock, p = pool_proc
    code, qid = inject(sock, MSG, envelope("a@example.test", "user@example.test")).split()
    assert code == "0" and mess(instance) == [qid]
    [w] = proc_children(p.pid)  # the one worker
    with open("/proc/%d/maps" % w) as f:  # made by the pool before it forked its workers
        assert "memfd:pillarbox-groupsync" in f.read()


def mess(instance):
    d = instance.path("queue", "mess")
    return sorted(os.listdir(d))


MSG = b"From: a@example.test\nSubject: x\n\n" + b"body line\n" * 200  # 2 KB


def test_databytes_change_applies_to_the_next_message(instance, pool):
    env = envelope("a@example.test", "user@example.test")
    code, qid = inject(pool, MSG, env).split()
    assert code == "0" and mess(instance) == [qid]
    # time passing, not a wait for an event: control/ must be older than CONTROL_STAMP_RACY
    # (2 s) for the worker to keep what it read instead of reading it at every message
    time.sleep(2.5)
    code, qid1 = inject(pool, MSG, env).split()
    assert code == "0"
    # a smaller limit, written without any restart: the same worker refuses the next one
    with open(instance.path("control", "databytes.tmp"), "w") as f:
        f.write("1000\n")
    os.rename(instance.path("control", "databytes.tmp"), instance.path("control", "databytes"))
    code, qid2 = inject(pool, MSG, env).split()
    assert code == "31", code  # QX_REFUSED: databytes
    assert mess(instance) == sorted([qid, qid1]), "a refused message left a file in mess/"
    time.sleep(2.5)
    code, _ = inject(pool, MSG, env).split()
    assert code == "31", "the kept limit was lost"
    # and raised again by an edit in place (control/ itself does not change): accepted again
    with open(instance.path("control", "databytes"), "w") as f:
        f.write("0\n")
    code, qid3 = inject(pool, MSG, env).split()
    assert code == "0" and mess(instance) == sorted([qid, qid1, qid3])


def read_lines(fd, want, deadline):
    got = b""
    while got.count(b"\n") < want:
        left = deadline - time.monotonic()
        assert left > 0, "trigger lines: %r" % got
        r, _, _ = select.select([fd], [], [], left)
        if r:
            got += os.read(fd, 4096)
    return got.decode().split()


def test_trigger_reaches_a_reader_that_came_back(instance, pool):
    env = envelope("a@example.test", "user@example.test")
    fifo = instance.path("queue", "trigger")
    # queue-run's way: O_RDWR, non-blocking
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    code, qid = inject(pool, MSG, env).split()
    assert code == "0"
    assert read_lines(fd, 1, time.monotonic() + 10) == [qid]
    os.close(fd)  # queue-run stopped: the worker still holds its write end
    code, qid2 = inject(pool, MSG, env).split()
    assert code == "0" and qid2 in mess(instance)  # no reader: the message is queued all the same
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # queue-run started again
    try:
        code, qid3 = inject(pool, MSG, env).split()
        assert code == "0"
        # the line for qid3 reaches the new reader (qid2's may come first: queue-run ignores
        # known ids)
        deadline = time.monotonic() + 10
        lines = []
        while qid3 not in lines:
            lines += read_lines(fd, 1, deadline)
    finally:
        os.close(fd)
    assert set(mess(instance)) == {qid, qid2, qid3}
