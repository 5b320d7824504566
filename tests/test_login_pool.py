"""pop3-serve and imap-serve as tcp-pool workers (services pop3, pop3s, imap, imaps): one worker
serves one client after another, and nothing of the pre-login state of one (the failed-login
counter, USER, STARTTLS, the buffers) reaches the next; a login hands the client to the login
broker and the worker goes back to accept() at once (login-handoff waits for the session, logs
its logout and holds the per-address slot); a worker killed mid-session takes only its own
pre-login client with it. Real programs (tcp-pool, the auth service, the login broker, the TLS
engine service), real clients."""
import os
import signal
import socket
import ssl
import subprocess

import pytest

from authsvc_helpers import (LOGIN_GID, LOGIN_UID, LOGINC_GID, ROOT_MODE, AuthService,
                             LoginBroker, as_uid_groups)
from conftest import free_port, proc_children, prog, wait_for
from test_auth import start_engine_template, stop_template

USER = "demo@example.test"
PW = "s3cret-pw"


class Pool:
    """tcp-pool -c 1 -n 1 on a loopback port running PROG login-handoff NAME workers under the
    pre-login uid (when root), with the auth service and the login broker of NAME."""

    def __init__(self, inst, tmp_path, program, name, session_prog, env=None):
        self.inst, self.port, self.program = inst, free_port(), program
        self.auth = AuthService(inst, "-n", "2")
        self.broker = self.p = None
        try:
            self.broker = LoginBroker(inst, name, [prog(session_prog)])
            self.logpath = str(tmp_path / ("pool-%d.log" % self.port))
            e = dict(inst.env, POP3_ALLOW_PLAINTEXT_AUTH="1", POP3_FAIL_DELAY="0",
                     IMAP_ALLOW_PLAINTEXT_AUTH="1", IMAP_FAIL_DELAY="0")
            e.update(env or {})
            groups = [LOGINC_GID]
            if ROOT_MODE and "TLS_ENGINE" in e:  # the engine service's socket, as pb-login has
                import grp
                tlsc = grp.getgrnam("pb-tlsc").gr_gid
                groups.append(tlsc)
                os.chown(inst.path("run", "tls"), 0, tlsc)
                os.chmod(inst.path("run", "tls"), 0o750)
            with open(self.logpath, "wb") as log:
                self.p = subprocess.Popen(
                    as_uid_groups(LOGIN_UID, LOGIN_GID, groups,
                                  [prog("tcp-pool"), "-v", "-c", "1", "-n", "1", "-l",
                                   "mx.example.test", "127.0.0.1", str(self.port),
                                   prog(program), prog("login-handoff"), name]),
                    cwd=inst.root, env=e, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            wait_for(lambda: len(self.workers()) == 1, timeout=10, what="the first worker")
        except BaseException:
            self.stop()
            raise

    def workers(self):
        assert self.p.poll() is None, self.log()
        return sorted(p for p, c in proc_children(self.p.pid).items() if c == self.program)

    def log(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        if self.p and self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            self.p.wait(timeout=10)
        if self.broker:
            self.broker.stop()
        self.auth.stop()


class Line:
    """A line protocol client that pairs each command with the reply it must get."""

    def __init__(self, port, wrap=False):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=20)
        if wrap:
            self.tls()
        self.f = self.s.makefile("rb")

    def tls(self):
        self.s = ssl._create_unverified_context().wrap_socket(
            self.s, server_hostname="mx.example.test")
        self.f = self.s.makefile("rb")

    def expect(self, cmd, start, until=None):
        if cmd is not None:
            self.s.sendall(cmd.encode() + b"\r\n")
        out = b""
        while True:
            ln = self.f.readline()
            assert ln, "%r: connection closed after %r" % (cmd, out)
            out += ln
            if until is None or ln.startswith(until.encode()):
                break
        assert out.startswith(start.encode()) or (until and start.encode() in out), (cmd, out)
        return out

    def closed(self):
        try:
            return self.s.recv(512) == b""
        except (ConnectionResetError, ssl.SSLError):
            return True

    def close(self):
        self.s.close()


@pytest.fixture
def users(instance):
    instance.add_user(USER, PW)
    d = instance.maildir(USER)
    with open(os.path.join(d, "new", "1700000000.M1P1Q1.mx.example.test"), "wb") as f:
        f.write(b"From: a@example.org\nSubject: one\n\nbody\n")
    return instance


@pytest.fixture
def pools(users, tmp_path):
    made = []

    def make(program, name, session_prog, env=None):
        p = Pool(users, tmp_path, program, name, session_prog, env)
        made.append(p)
        return p
    yield make
    for p in made:
        p.stop()


def test_pop3_worker_forgets_user_and_failures_and_serves_while_logged_in(users, pools):
    """One worker (-c 1): USER and two failed logins of a client are not the next client's; a
    login frees the worker at once (the next client is served while the first is logged in);
    login-handoff logs the logout with the front's name."""
    pool = pools("pop3-serve", "pop3", "pop3-maildir")
    [w] = pool.workers()
    a = Line(pool.port)
    a.expect(None, "+OK")
    a.expect("USER " + USER, "+OK")
    a.expect("PASS wrong-1", "-ERR")
    a.expect("PASS wrong-2", "-ERR")                 # two of the three failures allowed
    a.expect("USER " + USER, "+OK")
    a.expect("QUIT", "+OK")
    a.close()
    b = Line(pool.port)
    b.expect(None, "+OK")
    assert pool.workers() == [w]
    b.expect("PASS " + PW, "-ERR USER first")         # the USER of the last client is gone
    b.expect("USER " + USER, "+OK")
    b.expect("PASS wrong-3", "-ERR")                 # a third failure, not this client's third
    b.expect("CAPA", "+OK", until=".")               # still connected
    b.expect("USER " + USER, "+OK")
    b.expect("PASS " + PW, "+OK 1 message")
    # the worker went back to accept(): a third client is served by it, b still logged in
    c = Line(pool.port)
    c.expect(None, "+OK")
    assert pool.workers() == [w]
    c.expect("QUIT", "+OK")
    c.close()
    b.expect("STAT", "+OK 1 ")
    b.expect("QUIT", "+OK")
    b.close()
    wait_for(lambda: "pop3-serve: info: logout %s from 127.0.0.1 status 0" % USER in pool.log(),
             what="the logout line")
    assert pool.workers() == [w]


def test_pop3_the_address_slot_lasts_the_whole_session(users, pools):
    """control/pop3-peermax 1: a logged-in session keeps its address's slot (held by
    login-handoff, not by the worker), the next connection from it is refused until it logs
    out, and then the slot file is gone."""
    with open(users.path("control", "pop3-peermax"), "w") as f:
        f.write("1\n")
    pool = pools("pop3-serve", "pop3", "pop3-maildir")
    a = Line(pool.port)
    a.expect(None, "+OK")
    a.expect("USER " + USER, "+OK")
    a.expect("PASS " + PW, "+OK")
    b = Line(pool.port)
    b.expect(None, "-ERR [SYS/TEMP] too many connections")
    assert b.closed()
    a.expect("QUIT", "+OK")
    a.close()
    slots = users.path("run", "slots", "pop3")
    wait_for(lambda: not os.listdir(slots), what="the slot file to go")
    c = Line(pool.port)
    c.expect(None, "+OK mx.example.test POP3")
    c.expect("QUIT", "+OK")


def test_pop3_sigkill_of_a_worker_mid_session(users, pools):
    """A worker killed before the login takes its client with it; the pool starts another,
    which serves the next client. A worker killed after a login leaves the session running."""
    pool = pools("pop3-serve", "pop3", "pop3-maildir")
    [w] = pool.workers()
    a = Line(pool.port)
    a.expect(None, "+OK")
    a.expect("USER " + USER, "+OK")
    os.kill(w, signal.SIGKILL)
    assert a.closed()
    a.close()
    w2 = wait_for(lambda: [p for p in pool.workers() if p != w], what="a new worker")[0]
    b = Line(pool.port)
    b.expect(None, "+OK")
    b.expect("PASS " + PW, "-ERR USER first")
    b.expect("USER " + USER, "+OK")
    b.expect("PASS " + PW, "+OK")
    os.kill(w2, signal.SIGKILL)                      # the session is not the worker's
    b.expect("STAT", "+OK 1 ")
    b.expect("QUIT", "+OK")
    b.close()
    wait_for(lambda: [p for p in pool.workers() if p not in (w, w2)], what="a third worker")
    assert "killed by signal 9" in pool.log()


def test_imap_worker_forgets_starttls_and_failures(users, pools, tmp_path):
    """imap-serve workers: a client that did STARTTLS and failed two logins, then one in
    plaintext on the same worker: offered STARTTLS again, LOGINDISABLED gone only by the
    plaintext rule, its failures its own; a login frees the worker for the next client."""
    eng = start_engine_template(users, tmp_path)
    try:
        pool = pools("imap-serve", "imap", "imap-maildir",
                     env={"TLS_ENGINE": "run/tls/engine", "IMAP_ALLOW_PLAINTEXT_AUTH": "0"})
        [w] = pool.workers()
        a = Line(pool.port)
        a.expect(None, "* OK [CAPABILITY")
        a.expect("a1 STARTTLS", "a1 OK")
        a.tls()
        caps = a.expect("a2 CAPABILITY", "* CAPABILITY", until="a2 ")
        assert b"STARTTLS" not in caps and b"AUTH=PLAIN" in caps
        a.expect('a3 LOGIN "%s" "wrong-1"' % USER, "a3 NO")
        a.expect('a4 LOGIN "%s" "wrong-2"' % USER, "a4 NO")
        a.expect("a5 LOGOUT", "* BYE", until="a5 ")
        a.close()
        b = Line(pool.port)
        greeting = b.expect(None, "* OK [CAPABILITY")
        assert pool.workers() == [w]
        assert b"STARTTLS" in greeting and b"LOGINDISABLED" in greeting  # not in TLS any more
        b.expect("b1 STARTTLS", "b1 OK")
        b.tls()
        b.expect('b2 LOGIN "%s" "wrong-3"' % USER, "b2 NO")       # the first of this client
        b.expect("b3 NOOP", "b3 OK")                              # still connected
        b.expect('b4 LOGIN "%s" "%s"' % (USER, PW), "b4 OK", until="b4 ")
        c = Line(pool.port)                                       # the worker is free again
        c.expect(None, "* OK [CAPABILITY")
        assert pool.workers() == [w]
        c.expect("c1 LOGOUT", "* BYE", until="c1 ")
        c.close()
        b.expect("b5 SELECT INBOX", "*", until="b5 ")
        b.expect("b6 LOGOUT", "* BYE", until="b6 ")
        b.close()
        wait_for(lambda: "imap-serve: info: logout %s from 127.0.0.1 status 0" % USER
                 in pool.log(), what="the logout line")
    finally:
        stop_template(eng)


def hang_up_at_once(port, n=30):
    """n clients that connect and reset the connection at once (SO_LINGER 0), before reading
    the greeting: what a TLS client that only handshakes and a port scanner do."""
    import struct
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()


@pytest.mark.parametrize("program,name,session,greeting", [
    ("pop3-serve", "pop3", "pop3-maildir", "+OK"),
    ("imap-serve", "imap", "imap-maildir", "* OK")])
def test_a_client_that_hangs_up_costs_no_worker(users, pools, program, name, session,
                                                greeting):
    """A client gone before its greeting (the greeting's write fails, EPIPE or ECONNRESET)
    ends its session, not the worker: the same worker serves the next client."""
    pool = pools(program, name, session)
    [w] = pool.workers()
    hang_up_at_once(pool.port)
    c = Line(pool.port)
    c.expect(None, greeting)
    assert pool.workers() == [w], pool.log()
    c.close()


@pytest.mark.parametrize("program,name,session,greeting", [
    ("pop3-serve", "pop3", "pop3-maildir", "+OK"),
    ("imap-serve", "imap", "imap-maildir", "* OK")])
def test_a_client_gone_before_the_implicit_handshake_costs_no_worker(
        users, pools, tmp_path, program, name, session, greeting):
    """pop3s and imaps (TLS_IMPLICIT through the engine service): clients that connect and go
    before a TLS handshake (port scanners, TCP health checks) make the implicit TLS fail; not a
    byte is written to them, the session ends, not the worker, which serves the next client
    in TLS."""
    eng = start_engine_template(users, tmp_path)
    try:
        pool = pools(program, name, session,
                     env={"TLS_ENGINE": "run/tls/engine", "TLS_IMPLICIT": "1"})
        [w] = pool.workers()
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", pool.port), timeout=10)
            s.shutdown(socket.SHUT_WR)                   # FIN, no ClientHello
            assert s.recv(512) == b""                    # closed, not a byte written
            s.close()
        hang_up_at_once(pool.port, 5)                    # RST
        c = Line(pool.port, wrap=True)
        c.expect(None, greeting)
        assert pool.workers() == [w], pool.log()
        c.close()
        log = pool.log()
        assert "unable to start implicit TLS through TLS_ENGINE" in log, log
        assert "exited" not in log and "killed" not in log, log
    finally:
        stop_template(eng)
