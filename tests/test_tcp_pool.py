"""tcp-pool: long-lived smtp-receive workers, each serving one connection after another (no
process per connection), with what tcpserver gave each session: the UCSPI variables, the
tcp-rules database read per connection, MAXCONN, the per-address cap; STARTTLS and AUTH; and
nothing of one session reaching the next one served by the same worker."""
import base64
import os
import signal
import socket
import ssl
import subprocess
import time

import pytest

from conftest import proc_children, free_port, prog, wait_for
from test_auth import start_engine_template, stop_template

MSG = b"From: a@b.example\r\nSubject: pooled\r\n\r\nhello from the pool\r\n.\r\n"


def transaction(c, rcpt="user@example.test"):
    """MAIL, RCPT, DATA and the message on a session past EHLO; the queue id of its 250."""
    c.expect("MAIL FROM:<a@b.example>", 250)
    c.expect("RCPT TO:<%s>" % rcpt, 250)
    c.expect("DATA", 354)
    return c.expect(MSG, 250).split(b" as ")[-1].strip().decode()


class Pool:
    """tcp-pool on a loopback port running smtp-receive workers, cwd MAILROOT (the rules and
    the engine socket are relative to it); stderr of the pool and its workers in a log."""

    def __init__(self, inst, tmp_path, *opts, env=None):
        self.inst, self.port = inst, free_port()
        self.logpath = str(tmp_path / ("pool-%d.log" % self.port))
        e = dict(inst.env)
        e.update(env or {})
        log = open(self.logpath, "wb")
        self.p = subprocess.Popen([prog("tcp-pool"), "-v", "-x", "control/tcp-rules.cdb", "-l",
                                   "mx.example.test"] + list(opts) +
                                  ["127.0.0.1", str(self.port), prog("smtp-receive")],
                                  cwd=inst.root, env=e, stdout=log, stderr=log,
                                  stdin=subprocess.DEVNULL)
        log.close()

        def up():
            assert self.p.poll() is None, self.log()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(up, timeout=10, what="tcp-pool to listen")

    def log(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode(errors="replace")

    def workers(self):
        return sorted(p for p, c in proc_children(self.p.pid).items() if c == "smtp-receive")

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            self.p.wait(timeout=10)
        # the workers end too (SIGTERM from the pool), none is left behind
        wait_for(lambda: not self._orphans(), timeout=10, what="the workers to end")

    def _orphans(self):
        mine = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open("/proc/%s/environ" % d, "rb") as f:
                        if (b"MAILROOT=" + self.inst.root.encode() + b"\0") not in f.read():
                            continue
                    with open("/proc/%s/comm" % d) as f:
                        if f.read().strip() == "smtp-receive":
                            mine.append(int(d))
                except OSError:
                    pass
        return mine


@pytest.fixture
def pool_factory(instance, tmp_path):
    instance.add_user("user@example.test")
    pools = []

    def make(*opts, env=None):
        p = Pool(instance, tmp_path, *opts, env=env)
        pools.append(p)
        return p
    yield make
    for p in pools:
        p.stop()


class Client:
    """One SMTP session over TCP that pairs each command with the reply it must get."""

    def __init__(self, port, timeout=20):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.f = self.s.makefile("rb")

    def reply(self):
        lines = []
        while True:
            ln = self.f.readline()
            assert ln, "connection closed; replies so far %r" % lines
            lines.append(ln)
            if ln[3:4] == b" ":
                return int(ln[:3]), b"".join(lines)

    def expect(self, cmd, code, text=None):
        if cmd is not None:
            self.s.sendall(cmd if isinstance(cmd, bytes) else cmd.encode() + b"\r\n")
        got, full = self.reply()
        assert got == code, "%r: expected %d, got %r" % (cmd, code, full)
        if text is not None:
            assert text.encode() in full, (cmd, full)
        return full

    def starttls(self):
        self.expect("STARTTLS", 220)
        ctx = ssl._create_unverified_context()
        self.s = ctx.wrap_socket(self.s, server_hostname="mx.example.test")
        self.f = self.s.makefile("rb")

    def close(self):
        self.s.close()


def b64(s):
    return base64.b64encode(s.encode()).decode()


def rules(inst, text):
    with open(inst.path("control", "tcp-rules"), "w") as f:
        f.write(text)
    r = inst.run("mail-instance", "tcprules", inst.root)
    assert r.returncode == 0, r.stderr


def queued(inst):
    """The queue ids in the queue (queue-list's first column)."""
    r = inst.run("queue-list")
    assert r.returncode == 0, r.stderr
    return [ln.split()[0] for ln in r.stdout.decode().splitlines() if ln.strip()]


def send(port, helo="c.example", rcpt="user@example.test"):
    c = Client(port)
    c.expect(None, 220)
    c.expect("EHLO " + helo, 250)
    qid = transaction(c, rcpt)
    c.expect("QUIT", 221)
    c.close()
    return qid


@pytest.fixture
def fake_auth(tmp_path):
    """auth-check stand-in: user@example.test / secret is good."""
    p = tmp_path / "fake-auth"
    p.write_text("#!/usr/bin/python3\nimport os, sys\nd = b''\nwhile True:\n"
                 "    c = os.read(3, 600)\n    if not c:\n        break\n    d += c\n"
                 "f = d.split(b'\\0')\n"
                 "sys.exit(0 if f[0] == b'user@example.test' and f[1] == b'secret' else 1)\n")
    p.chmod(0o755)
    return str(p)


def test_one_worker_many_sessions_nothing_carried_over(instance, pool_factory, fake_auth):
    """One worker (-c 1) serves session after session: the HELO, the transaction, the AUTH
    user and the RELAYCLIENT of the rules do not reach the next session."""
    rules(instance, "127.0.0.1:allow,RELAYCLIENT=\"\"\n:allow\n")
    pool = pool_factory("-c", "1", "-n", "1", env={"SMTPAUTH_PLAINTEXT": "1",
                                                   "AUTH_CHECK": fake_auth})
    c = Client(pool.port)
    c.expect(None, 220)
    [w] = pool.workers()
    c.expect("EHLO first.example", 250, "AUTH PLAIN")
    c.expect("AUTH PLAIN " + b64("\0user@example.test\0secret"), 235)
    c.expect("MAIL FROM:<user@example.test>", 250)
    c.expect("RCPT TO:<far@elsewhere.example>", 250)   # relaying: AUTH (and the rules)
    c.close()                                           # gone in the middle of a transaction
    rules(instance, ":allow\n")                          # RELAYCLIENT no more, no restart
    c = Client(pool.port)
    c.expect(None, 220)
    assert pool.workers() == [w]                         # the same process
    c.expect("MAIL FROM:<a@b.example>", 503, "EHLO first")  # no HELO carried over
    c.expect("EHLO second.example", 250, "AUTH PLAIN")  # AUTH offered: nobody is logged in
    c.expect("RCPT TO:<user@example.test>", 503, "MAIL first")  # no transaction either
    c.expect("MAIL FROM:<a@b.example>", 250)
    c.expect("RCPT TO:<far@elsewhere.example>", 554, "relay")   # neither AUTH nor RELAYCLIENT
    c.expect("RCPT TO:<user@example.test>", 250)
    c.expect("DATA", 354)
    c.expect(MSG, 250)
    c.expect("QUIT", 221)
    c.close()
    assert pool.workers() == [w]
    # the session's line is written after the 221: wait for it, bounded
    wait_for(lambda: "helo=second.example messages=" in pool.log(), what="the session line")
    log = pool.log()
    assert "session ip=127.0.0.1 helo=first.example messages=0" in log, log
    assert "session ip=127.0.0.1 helo=second.example messages=1" in log, log
    assert "user=-" in log.split("helo=first.example")[1]   # the second message: no user
    # the message's trace names the second HELO, without AUTH
    mess = instance.path("queue", "mess")
    body = b"".join(open(os.path.join(d, n), "rb").read() for d, _, ns in os.walk(mess)
                    for n in ns)
    assert b"Received: from second.example " in body, body
    assert b"ESMTPA" not in body and b"first.example" not in body


def test_deny_rule_and_a_change_without_restart(instance, pool_factory):
    pool = pool_factory("-c", "2", "-n", "1")
    rules(instance, "127.0.0.1:deny\n:allow\n")
    with socket.create_connection(("127.0.0.1", pool.port), timeout=10) as s:
        assert s.recv(512) == b""                        # closed before any byte
    wait_for(lambda: "tcp-rules deny ip=127.0.0.1 port=" in pool.log(), what="the deny line")
    before = pool.p.pid
    rules(instance, "127.0.0.2:deny\n:allow\n")
    c = Client(pool.port)
    c.expect(None, 220)
    c.expect("QUIT", 221)
    c.close()
    # another address of the prefix rule is refused; the exact-address rule wins over it
    rules(instance, "127.0.0.1:allow\n127.:deny\n")
    other = socket.socket()
    other.settimeout(10)
    other.bind(("127.0.0.2", 0))
    other.connect(("127.0.0.1", pool.port))
    assert other.recv(512) == b""
    other.close()
    c = Client(pool.port)
    c.expect(None, 220)
    c.close()
    assert pool.p.poll() is None and pool.p.pid == before


def from_addr(ip, port):
    c = Client.__new__(Client)
    c.s = socket.socket()
    c.s.settimeout(20)
    c.s.bind((ip, 0))
    c.s.connect(("127.0.0.1", port))
    c.f = c.s.makefile("rb")
    return c


def test_ucspi_environment_per_connection(instance, pool_factory, tmp_path):
    """What tcpserver -R -H -l sets, per connection, as the program (and its injector) sees
    it; a rule's variables only for the connection it matched, on the same worker."""
    rules(instance, "127.0.0.1:allow,RELAYCLIENT=\"\",FOO=\"bar\"\n:allow\n")
    hook = tmp_path / "envhook"
    hook.write_text("#!/bin/sh\nenv > %s/env.$$\ncat > /dev/null\ncat <&1 > /dev/null\n"
                    % tmp_path)
    hook.chmod(0o755)
    pool = pool_factory("-c", "1", "-n", "1", env={"QUEUE_INJECT": str(hook)})
    envs = []
    for ip in ("127.0.0.1", "127.0.0.2"):
        c = from_addr(ip, pool.port)
        c.expect(None, 220)
        c.expect("EHLO c.example", 250)
        transaction(c)
        cport = c.s.getsockname()[1]
        c.expect("QUIT", 221)
        c.close()
        [f] = [n for n in os.listdir(tmp_path) if n.startswith("env.") and
               os.path.join(tmp_path, n) not in [e[0] for e in envs]]
        f = os.path.join(tmp_path, f)
        env = dict(ln.split("=", 1) for ln in open(f).read().splitlines() if "=" in ln)
        envs.append((f, env, cport))
    for (f, env, cport), ip in zip(envs, ("127.0.0.1", "127.0.0.2")):
        assert env["PROTO"] == "TCP"
        assert env["TCPREMOTEIP"] == ip and env["TCPREMOTEPORT"] == str(cport)
        assert env["TCPLOCALIP"] == "127.0.0.1" and env["TCPLOCALPORT"] == str(pool.port)
        assert env["TCPLOCALHOST"] == "mx.example.test"
        assert env["TCP6REMOTEIP"] == "::ffff:" + ip
        assert "TCPREMOTEHOST" not in env and "TCPREMOTEINFO" not in env
        assert not [k for k in env if k.startswith("TCPPOOL_")]
    assert envs[0][1]["FOO"] == "bar" and envs[0][1]["RELAYCLIENT"] == ""
    assert "FOO" not in envs[1][1] and "RELAYCLIENT" not in envs[1][1]


def test_the_per_address_cap_and_maxconn(instance, pool_factory):
    """control/smtp-peermax per address, -c (MAXCONN) in all: a connection beyond it waits in
    the backlog until a session ends; the slots come back when the sessions end, with the
    workers still the same processes."""
    instance.control("smtp-peermax", "2")
    pool = pool_factory("-c", "3", "-n", "3")
    wait_for(lambda: len(pool.workers()) == 3, what="three workers")
    ws = pool.workers()
    a, b = Client(pool.port), Client(pool.port)
    a.expect(None, 220)
    b.expect(None, 220)
    c = Client(pool.port)
    c.expect(None, 421, "4.7.0")                     # the third from one address
    c.close()
    x = from_addr("127.0.0.2", pool.port)
    x.expect(None, 220)                              # another address: the third worker
    y = from_addr("127.0.0.3", pool.port)            # MAXCONN reached: in the backlog
    y.s.settimeout(1)
    with pytest.raises(socket.timeout):
        y.s.recv(512)
    y.s.settimeout(20)
    a.expect("QUIT", 221)
    a.close()
    y.expect(None, 220)                              # served once a session ended
    for k in (b, x, y):
        k.expect("QUIT", 221)
        k.close()
    # the 221 is written before the worker gives the slot back: the sessions' end is when
    # their slot files are gone
    slots = instance.path("run", "slots", "smtpd")
    wait_for(lambda: not os.listdir(slots), what="the slots of the ended sessions to go")
    d = Client(pool.port)
    d.expect(None, 220)                              # the slots were given back
    e = Client(pool.port)
    e.expect(None, 220)
    d.expect("QUIT", 221)
    e.expect("QUIT", 221)
    d.close()
    e.close()
    assert pool.workers() == ws


def test_max_use_then_replaced(instance, pool_factory):
    pool = pool_factory("-c", "1", "-n", "1", "-m", "3")
    seen = set()
    ids = []
    for i in range(7):
        ids.append(send(pool.port, helo="c%d.example" % i))
        seen.update(pool.workers())
    assert len(seen) >= 3, seen                      # 7 sessions, 3 each: three workers
    assert set(ids) <= set(queued(instance))
    assert "killed" not in pool.log() and "exited" not in pool.log()


def worker_of(pool):
    """The pool's one worker, once there is exactly one (one look at the processes: two could
    see two different sets)."""
    def one():
        ws = pool.workers()
        return len(ws) == 1 and ws[0]
    return wait_for(one, what="the worker")


def test_sigkill_in_data_and_after_250(instance, pool_factory):
    """A worker killed in the middle of DATA commits nothing; one killed after its 250 loses
    nothing; either way the pool starts another and the service answers."""
    pool = pool_factory("-c", "1", "-n", "1")
    c = Client(pool.port)
    c.expect(None, 220)
    w = worker_of(pool)
    c.expect("EHLO c.example", 250)
    c.expect("MAIL FROM:<a@b.example>", 250)
    c.expect("RCPT TO:<user@example.test>", 250)
    c.expect("DATA", 354)
    c.s.sendall(b"Subject: half\r\n\r\nthe first half of a message that never ends\r\n")
    os.kill(w, signal.SIGKILL)
    try:                                             # the connection goes with the worker
        assert c.s.recv(512) == b""
    except ConnectionResetError:                     # (unread data: a reset)
        pass
    c.close()
    w2 = wait_for(lambda: [p for p in pool.workers() if p != w], what="a new worker")[0]
    assert queued(instance) == []                    # nothing of the half message
    qid = send(pool.port)                            # the service answers
    assert qid in queued(instance)
    # after 250, before QUIT: the message is on disk for good
    c = Client(pool.port)
    c.expect(None, 220)
    assert pool.workers() == [w2]
    c.expect("EHLO c.example", 250)
    qid2 = transaction(c)
    os.kill(w2, signal.SIGKILL)
    c.close()
    assert qid2 in queued(instance)
    wait_for(lambda: [p for p in pool.workers() if p not in (w, w2)], what="a third worker")
    assert send(pool.port) in queued(instance)
    assert "killed by signal 9 in a session" in pool.log()


def test_starttls_then_plaintext_on_the_same_worker(instance, pool_factory, tmp_path):
    """A TLS session (through the tls-engine service) and then a plaintext one on the same
    worker: the second is offered STARTTLS again and its message says ESMTP, not ESMTPS."""
    eng = start_engine_template(instance, tmp_path)
    try:
        pool = pool_factory("-c", "1", "-n", "1", env={"TLS_ENGINE": "run/tls/engine"})
        c = Client(pool.port)
        c.expect(None, 220)
        [w] = pool.workers()
        c.expect("EHLO c.example", 250, "STARTTLS")
        c.starttls()
        full = c.expect("EHLO tls.example", 250)
        assert b"STARTTLS" not in full
        transaction(c)
        c.expect("QUIT", 221)
        c.close()
        c = Client(pool.port)
        c.expect(None, 220)
        assert pool.workers() == [w]
        c.expect("EHLO plain.example", 250, "STARTTLS")    # TLS_ENGINE given again
        transaction(c)
        c.expect("QUIT", 221)
        c.close()
        log = pool.log()
        tls_line = [ln for ln in log.splitlines() if "message ip=" in ln][0]
        plain_line = [ln for ln in log.splitlines() if "message ip=" in ln][1]
        assert "tls=TLSv1.2/" in tls_line, log
        assert " tls=- " in plain_line, log
        mess = instance.path("queue", "mess")
        bodies = [open(os.path.join(d, n), "rb").read() for d, _, ns in os.walk(mess) for n in ns]
        assert len(bodies) == 2
        assert sum(b"with ESMTPS" in b for b in bodies) == 1
        assert sum(b"with ESMTP " in b or b"with ESMTP\n" in b or b"with ESMTP;" in b
                   for b in bodies) == 1, bodies
    finally:
        stop_template(eng)


# control files smtp-receive reads per session (lib/smtpconf), and how old a file must be
# before a worker trusts its times (CONTROL_STAMP_RACY in lib/control.h, and a margin)
SMTPCONF_FILES = ("me", "domains", "defaultdomain", "smtp-linemax", "databytes", "hop-limit",
                  "smtp-rcptmax", "smtp-errmax", "smtp-junkmax", "smtp-timeout",
                  "smtp-sessionmax", "smtp-authdelay", "smtp-peermax", "smtp-greetdelay",
                  "ipv6-prefix")
RACY = 2.5


def control_settled(inst):
    """Waits (bounded) until control/ and its files last changed RACY seconds ago: a worker
    then trusts its stamp, and only the stamp's comparison can see the next change."""
    def newest():
        paths = [inst.path("control")] + [inst.path("control", n) for n in SMTPCONF_FILES]
        return max(os.stat(p).st_ctime for p in paths if os.path.exists(p))
    wait_for(lambda: time.time() - newest() > RACY, timeout=10, interval=0.1,
             what="control/ to be %.1f s old" % RACY)


def ehlo_session(port, *steps):
    """A session: the greeting, EHLO, then (command, code) steps; the greeting and the EHLO
    reply."""
    c = Client(port)
    greeting = c.expect(None, 220)
    ehlo = c.expect("EHLO c.example", 250)
    for cmd, code in steps:
        c.expect(cmd, code)
    c.expect("QUIT", 221)
    c.close()
    return greeting, ehlo


def test_control_changes_apply_at_the_next_session_of_a_worker(instance, pool_factory,
                                                               tmp_path):
    """A worker keeps smtp-receive's settings from one session to the next (no control file
    opened while control/ is unchanged), and still sees each kind of change at the next
    session: a file edited in place, one replaced by rename, one created."""
    instance.control("databytes", "1000000")
    pool = pool_factory("-c", "1", "-n", "1")
    w = worker_of(pool)
    control_settled(instance)
    assert b"SIZE 1000000" in ehlo_session(pool.port)[1]       # read, and the stamp trusted
    # the next session opens no control file of smtp-receive's (strace on the worker)
    log = tmp_path / "strace.log"
    st = subprocess.Popen(["strace", "-qq", "-p", str(w), "-o", str(log), "-e", "trace=%file"],
                          stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: log.exists() and log.stat().st_size > 0 or
                 "TracerPid:\t%d" % st.pid in open("/proc/%d/status" % w).read(),
                 what="strace to attach")
        ehlo_session(pool.port, ("MAIL FROM:<a@b.example>", 250),
                     ("RCPT TO:<user@example.test>", 250))
    finally:
        st.terminate()
        st.wait(timeout=10)
    calls = log.read_text()
    ctl = instance.path("control")
    assert '"%s"' % ctl in calls, calls                       # the stamp's look at control/
    assert "users.cdb" in calls, calls                        # the RCPT's lookup was traced
    opened = [ln for ln in calls.splitlines() if "open" in ln and ctl + "/" in ln and
              ln.split(ctl + "/")[1].split('"')[0] in SMTPCONF_FILES]
    assert not opened, opened
    # edited in place (the same inode): the greeting's name
    with open(instance.path("control", "me"), "r+") as f:
        f.truncate(0)
        f.write("renamed.example.test\n")
    greeting, _ = ehlo_session(pool.port)
    assert greeting.startswith(b"220 renamed.example.test "), greeting
    # replaced by rename: the SIZE offered
    control_settled(instance)
    ehlo_session(pool.port)
    with open(instance.path("control", "databytes.tmp"), "w") as f:
        f.write("2000000\n")
    os.rename(instance.path("control", "databytes.tmp"), instance.path("control", "databytes"))
    assert b"SIZE 2000000" in ehlo_session(pool.port)[1]
    # created: one recipient a message
    control_settled(instance)
    ehlo_session(pool.port, ("MAIL FROM:<a@b.example>", 250),
                 ("RCPT TO:<user@example.test>", 250), ("RCPT TO:<postmaster>", 250))
    instance.control("smtp-rcptmax", "1")
    ehlo_session(pool.port, ("MAIL FROM:<a@b.example>", 250),
                 ("RCPT TO:<user@example.test>", 250), ("RCPT TO:<postmaster>", 452))
    assert pool.workers() == [w]                              # all on the one worker



def test_a_client_that_hangs_up_costs_no_worker(instance, pool_factory, tmp_path):
    """smtps clients that only handshake and go (openssl s_time, monitoring probes): the 220's
    write to the gone engine fails (EPIPE), which ends the session as an EOF does, not the
    worker; and clients gone before the handshake (port scanners, TCP health checks): the
    implicit TLS fails, nothing is written, the session ends, not the worker. The same worker
    serves the next client. (Each such client used to cost an exec.)"""
    import struct
    eng = start_engine_template(instance, tmp_path)
    try:
        pool = pool_factory("-c", "1", "-n", "1",
                            env={"TLS_ENGINE": "run/tls/engine", "TLS_IMPLICIT": "1"})
        w = worker_of(pool)
        for linger in (False, True) * 5:                # no handshake: FIN, or RST
            s = socket.create_connection(("127.0.0.1", pool.port), timeout=10)
            if linger:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        ctx = ssl._create_unverified_context()
        for _ in range(30):
            s = socket.create_connection(("127.0.0.1", pool.port), timeout=10)
            t = ctx.wrap_socket(s, server_hostname="mx.example.test")   # the handshake only
            t.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            t.close()
        c = Client(pool.port)
        c.s = ctx.wrap_socket(c.s, server_hostname="mx.example.test")
        c.f = c.s.makefile("rb")
        c.expect(None, 220)
        c.expect("QUIT", 221)
        c.close()
        assert pool.workers() == [w], pool.log()
        assert "exited" not in pool.log(), pool.log()
    finally:
        stop_template(eng)
