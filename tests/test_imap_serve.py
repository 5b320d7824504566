"""imap-serve, the IMAP pre-login front, driven through pipes (the session on fd 0/1 as under
tcpserver, UCSPI variables set by hand) and through tcpserver. Logins go through a stand-in
checkpassword program (credentials on fd 3, exec of the rest on success) that then runs the
real imap-maildir, so these cases test the front and the hand-over; at the end, logins through
auth-check and through the real auth service and login broker (each under its uid as root).
Real clients are in test_imap_clients.py.
"""
import base64
import os
import select
import socket
import subprocess
import time

import pytest

from access_helpers import FakeCheckBox, FakeTLS, PipeSession, lines, listening
from conftest import base_env, free_port, prog, stop_procs, wait_for

PASSWORD = "s3cret pass"
MSG = b"From: a@example.org\nTo: joe@example.test\nSubject: hello\n\nbody one\n"


class Box(FakeCheckBox):
    """A Maildir, an instance root (control/, authfail/) and the environment to serve them."""

    def __init__(self, tmp_path):
        super().__init__(tmp_path, PASSWORD, control=True, runs=True,
                         IMAP_ALLOW_PLAINTEXT_AUTH="1", IMAP_FAIL_DELAY="0")
        for k in ("IMAP_TAG", "IMAP_INPUT", "IMAP_NOTIFYFD", "SSLCTLFD", "SSL_PROTOCOL"):
            self.env.pop(k, None)

    def control(self, name, value):
        with open(os.path.join(self.root, "control", name), "w") as f:
            f.write(value + "\n")

    def checks_run(self):
        try:
            with open(self.runs) as f:
                return len(f.read().splitlines())
        except FileNotFoundError:
            return 0

    def argv(self, *opts):
        return [prog("imap-serve")] + list(opts) + [self.check, prog("imap-maildir")]


@pytest.fixture
def box(tmp_path):
    return Box(tmp_path)


def tagged(out, tag):
    """The tagged reply line of tag (exactly one)."""
    t = [l for l in lines(out) if l.startswith(tag + b" ")]
    assert len(t) == 1, (tag, out)
    return t[0]


def login_cmd(tag=b"l"):
    return tag + b" LOGIN joe \"" + PASSWORD.encode() + b"\"\r\n"


class Conversation(PipeSession):
    """An interactive imap-serve (for the cases that need timing or a TLS stand-in)."""

    def __init__(self, box, env=None, pass_fds=(), argv=None):
        e = dict(box.env)
        e.update(env or {})
        super().__init__(argv or box.argv(), e, pass_fds)
        self.greeting = self.line()

    def until(self, tag, timeout=10):
        out = []
        while True:
            l = self.line(timeout)
            out.append(l)
            if l.startswith(tag + b" "):
                return out

    def cmd(self, tag, text):
        self.send(tag + b" " + text + b"\r\n")
        return self.until(tag)


# ---- the pre-login commands ----

def test_greeting_capability_noop_id_logout(box):
    box.control("me", "imap.example.test")
    r = box.run(b"a CAPABILITY\r\nb NOOP\r\nc ID (\"name\" \"test\")\r\nd ID NIL\r\n"
                b"e LOGOUT\r\nf NOOP\r\n")
    assert r.returncode == 0, r.stderr
    ls = lines(r.stdout)
    assert ls[0].startswith(b"* OK [CAPABILITY IMAP4rev1 ") and b"imap.example.test" in ls[0]
    assert ls[1].startswith(b"* CAPABILITY IMAP4rev1 ")
    caps = ls[1].split()[2:]
    for c in (b"SASL-IR", b"ID", b"LITERAL+", b"AUTH=PLAIN", b"IDLE"):
        assert c in caps, caps
    assert b"STARTTLS" not in caps and b"LOGINDISABLED" not in caps  # no sidecar; loopback
    assert ls[2].startswith(b"a OK")
    assert ls[3] == b"b OK NOOP completed."
    assert ls[4].startswith(b"* ID (") and ls[5].startswith(b"c OK")
    assert ls[6].startswith(b"* ID (") and ls[7].startswith(b"d OK")
    assert ls[8].startswith(b"* BYE") and ls[9].startswith(b"e OK")
    assert len(ls) == 10  # nothing after LOGOUT
    assert box.checks_run() == 0


def test_commands_in_the_wrong_state(box):
    box.add(MSG)
    cmds = [b"a SELECT INBOX", b"b FETCH 1 BODY[]", b"c UID FETCH 1 FLAGS", b"d ENABLE IMAP4rev2",
            b"e IDLE", b"f LIST \"\" *", b"g APPEND INBOX {1+}\r\nx", b"h XYZZY",
            b"i ID"]  # nine: the tenth refused command ends the connection
    r = box.run(b"".join(c + b"\r\n" for c in cmds) + b"z LOGOUT\r\n")
    for c in cmds:
        t = tagged(r.stdout, c[:1])
        assert t.startswith(c[:1] + b" BAD "), t
    assert tagged(r.stdout, b"a") == b"a BAD Please log in first."
    assert tagged(r.stdout, b"z").startswith(b"z OK")
    assert b"* 1 EXISTS" not in r.stdout and b"body one" not in r.stdout
    # a line without a tag gets an untagged BAD
    r = box.run(b"\r\n* NOOP\r\nz LOGOUT\r\n")
    assert lines(r.stdout)[1].startswith(b"* BAD")


def test_logindisabled_before_tls(box):
    for env in ({"IMAP_ALLOW_PLAINTEXT_AUTH": "0"},
                {"TCPREMOTEIP": "192.0.2.7"}):  # allowed on loopback only
        r = box.run(b"a CAPABILITY\r\n" + login_cmd(b"b") +
                    b"c AUTHENTICATE PLAIN " + base64.b64encode(b"\0joe\0" + PASSWORD.encode()) +
                    b"\r\nd LOGOUT\r\n", env=env)
        ls = lines(r.stdout)
        assert b"LOGINDISABLED" in ls[0] and b"AUTH=" not in ls[0]
        assert b"LOGINDISABLED" in ls[1] and b"AUTH=" not in ls[1]
        assert tagged(r.stdout, b"b").startswith(b"b NO [PRIVACYREQUIRED]")
        assert tagged(r.stdout, b"c").startswith(b"c NO [PRIVACYREQUIRED]")
        assert box.checks_run() == 0
    # the control file, as POP3's
    box.control("imap-allow-plaintext", "1")
    e = dict(box.env)
    e.pop("IMAP_ALLOW_PLAINTEXT_AUTH")
    r = subprocess.run(box.argv(), input=login_cmd() + b"z LOGOUT\r\n", env=e,
                       capture_output=True, timeout=30)
    assert tagged(r.stdout, b"l").startswith(b"l OK [CAPABILITY"), r.stdout
    box.control("imap-allow-plaintext", "0")
    r = subprocess.run(box.argv(), input=login_cmd() + b"z LOGOUT\r\n", env=e,
                       capture_output=True, timeout=30)
    assert tagged(r.stdout, b"l").startswith(b"l NO [PRIVACYREQUIRED]")


# ---- login and the hand-over ----

def test_login_hands_over_with_the_tag_and_pipelined_commands(box):
    box.add(MSG)
    big = b"x" * 30000 + b"\r\n"  # more than the front's input buffer: partly still unread
    data = (b"A1 LOGIN joe \"" + PASSWORD.encode() + b"\"\r\n" +
            b"".join(b"n%d NOOP\r\n" % i for i in range(200)) +
            b"s SELECT INBOX\r\nf FETCH 1 BODY[]\r\n" +
            b"p APPEND INBOX {%d+}\r\n" % len(big) + big + b"\r\n" +
            b"st STATUS INBOX (MESSAGES)\r\nz LOGOUT\r\n")
    r = box.run(data)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert tagged(out, b"A1").startswith(b"A1 OK [CAPABILITY IMAP4rev1 ")
    assert b"IMAP4rev1" in out and b"UIDPLUS" in tagged(out, b"A1")  # the session's list
    for i in range(200):
        assert tagged(out, b"n%d" % i).startswith(b"n%d OK" % i)
    assert tagged(out, b"s").startswith(b"s OK")
    assert b"body one" in out
    assert tagged(out, b"p").startswith(b"p OK")
    assert b"* STATUS \"INBOX\" (MESSAGES 2)" in out
    assert tagged(out, b"z").startswith(b"z OK")
    # replies in the order of the commands
    order = [l.split(b" ")[0] for l in lines(out) if not l.startswith((b"*", b"+"))
             and b" OK" in l]
    assert order[0] == b"A1" and order[-1] == b"z" and order.index(b"s") < order.index(b"p")
    assert b"imap-serve: info: login joe from 127.0.0.1" in r.stderr
    assert b"logout joe from 127.0.0.1 status 0" in r.stderr


def test_login_with_literals(box):
    pw = PASSWORD.encode()
    # synchronising: the continuation comes only after the announcement
    c = Conversation(box)
    try:
        c.send(b"a LOGIN {3}\r\n")
        assert c.line().startswith(b"+ ")
        c.send(b"joe {%d}\r\n" % len(pw))
        assert c.line().startswith(b"+ ")
        c.send(pw + b"\r\n")
        assert c.line().startswith(b"a OK [CAPABILITY")
        assert c.cmd(b"z", b"LOGOUT")[-1].startswith(b"z OK")
    finally:
        c.close()
    # non-synchronising (LITERAL+): no continuation at all
    r = box.run(b"a LOGIN {3+}\r\njoe {%d+}\r\n" % len(pw) + pw + b"\r\nz LOGOUT\r\n")
    assert not [l for l in lines(r.stdout) if l.startswith(b"+")]
    assert tagged(r.stdout, b"a").startswith(b"a OK [CAPABILITY")


def test_literal_limits(box):
    # a synchronising literal over the limit is refused before it is sent
    c = Conversation(box)
    try:
        c.send(b"a LOGIN joe {100000}\r\n")
        l = c.line()
        assert l.startswith(b"a NO [TOOBIG]"), l
        assert c.cmd(b"b", b"NOOP") == [b"b OK NOOP completed."]
        c.send(b"c LOGIN joe {4097}\r\n")
        assert c.line().startswith(b"c NO [TOOBIG]")
    finally:
        c.close()
    assert box.checks_run() == 0
    # a non-synchronising one over the limit ends the connection at once
    r = box.run(b"a LOGIN joe {5000+}\r\n" + b"y" * 5000 + b"\r\nb NOOP\r\n")
    ls = lines(r.stdout)
    assert ls[-1].startswith(b"* BYE [TOOBIG]"), ls
    assert b"b OK" not in r.stdout
    # a line over the limit is refused whole
    r = box.run(b"a NOOP " + b"z" * 70000 + b"\r\nb NOOP\r\n")
    assert tagged(r.stdout, b"a").startswith(b"a BAD")
    assert tagged(r.stdout, b"b") == b"b OK NOOP completed."
    # malformed announcements and fields too long for a login
    r = box.run(b"a LOGIN joe {5-}\r\nb LOGIN joe " + b"p" * 300 + b"\r\nc LOGIN joe\r\n")
    for t in (b"a", b"b", b"c"):
        assert tagged(r.stdout, t).startswith(t + b" BAD")
    assert box.checks_run() == 0


def test_authenticate_plain_with_and_without_initial_response(box):
    plain = base64.b64encode(b"\0joe\0" + PASSWORD.encode())
    r = box.run(b"a AUTHENTICATE PLAIN " + plain + b"\r\nz LOGOUT\r\n")
    assert tagged(r.stdout, b"a").startswith(b"a OK [CAPABILITY")
    c = Conversation(box)
    try:
        c.send(b"a AUTHENTICATE PLAIN\r\n")
        assert c.line() == b"+ "
        c.send(b"*\r\n")
        assert c.line().startswith(b"a BAD")  # cancelled (RFC 3501 6.2.2)
        c.send(b"b AUTHENTICATE PLAIN\r\n")
        assert c.line() == b"+ "
        c.send(b"!!notbase64\r\n")
        assert c.line().startswith(b"b BAD")
        assert c.cmd(b"c", b"AUTHENTICATE CRAM-MD5")[-1].startswith(b"c NO")
        # LOGIN: two challenges
        c.send(b"d AUTHENTICATE LOGIN\r\n")
        assert c.line() == b"+ " + base64.b64encode(b"Username:")
        c.send(base64.b64encode(b"joe") + b"\r\n")
        assert c.line() == b"+ " + base64.b64encode(b"Password:")
        c.send(base64.b64encode(PASSWORD.encode()) + b"\r\n")
        assert c.line().startswith(b"d OK [CAPABILITY")
        assert c.cmd(b"z", b"LOGOUT")[-1].startswith(b"z OK")
    finally:
        c.close()
    # someone else's authorisation identity is a failed login; "=" is an empty response
    r = box.run(b"a AUTHENTICATE PLAIN " + base64.b64encode(b"bob\0joe\0" +
                PASSWORD.encode()) + b"\r\nb AUTHENTICATE PLAIN =\r\nz LOGOUT\r\n")
    assert tagged(r.stdout, b"a").startswith(b"a NO [AUTHENTICATIONFAILED]")
    assert tagged(r.stdout, b"b").startswith(b"b BAD")
    assert box.checks_run() == 2  # the two good logins only


def test_bad_commands_end_the_connection(box):
    r = box.run(b"".join(b"t%d XYZZY\r\n" % i for i in range(12)))
    ls = lines(r.stdout)
    assert sum(1 for l in ls if b" BAD " in l) == 10
    assert ls[-1].startswith(b"* BYE"), ls
    assert b"t10 " not in r.stdout
    assert b"too many bad commands before login from 127.0.0.1" in r.stderr


def test_failed_logins_slowed_counted_and_dropped(box):
    # three on one connection, then BYE; each answered no sooner than the delay
    t0 = time.monotonic()
    r = box.run(b"".join(b"t%d LOGIN joe wrong\r\n" % i for i in range(5)),
                env={"IMAP_FAIL_DELAY": "1"})
    took = time.monotonic() - t0
    ls = lines(r.stdout)
    assert [l for l in ls if l.startswith(b"t")] == \
        [b"t%d NO [AUTHENTICATIONFAILED] Authentication failed." % i for i in range(3)]
    assert ls[-1].startswith(b"* BYE")
    assert took >= 3.0, took
    assert b"failed login for joe from 127.0.0.1" in r.stderr


def test_failed_logins_per_address_shared_and_counted_before_the_check(box):
    box.control("authfail-limit", "2")
    for i in range(3):  # attempts 1..limit+1 are checked
        r = box.run(b"a LOGIN joe wrong\r\n")
        assert tagged(r.stdout, b"a").startswith(b"a NO [AUTHENTICATIONFAILED]")
    assert box.checks_run() == 3
    # over the limit: refused without running the check, the right password too
    r = box.run(login_cmd(b"a") + b"b NOOP\r\n")
    assert tagged(r.stdout, b"a").startswith(b"a NO [UNAVAILABLE]")
    assert lines(r.stdout)[-1].startswith(b"* BYE") and b"b OK" not in r.stdout
    assert box.checks_run() == 3
    # another address is not affected
    r = box.run(login_cmd(b"a") + b"z LOGOUT\r\n", env={"TCPREMOTEIP": "127.0.0.9"})
    assert tagged(r.stdout, b"a").startswith(b"a OK")


def test_good_login_is_forgiven(box):
    box.control("authfail-limit", "1")
    for _ in range(4):  # good logins never add up to a block
        r = box.run(login_cmd(b"a") + b"z LOGOUT\r\n")
        assert tagged(r.stdout, b"a").startswith(b"a OK"), r.stdout


def test_connections_per_address_capped(box):
    box.control("imap-peermax", "1")
    c = Conversation(box)
    try:
        assert c.greeting.startswith(b"* OK")
        r = box.run(b"a NOOP\r\n")
        assert lines(r.stdout) == [b"* BYE [UNAVAILABLE] Too many connections from your "
                                   b"address, try later."]
        r = box.run(b"a NOOP\r\n", env={"TCPREMOTEIP": "127.0.0.8"})  # another address
        assert tagged(r.stdout, b"a") == b"a OK NOOP completed."
        # the slot is held through the logged-in session, and given back at its end
        c.send(login_cmd(b"l"))
        assert c.until(b"l")[-1].startswith(b"l OK")
        assert lines(box.run(b"a NOOP\r\n").stdout)[0].startswith(b"* BYE [UNAVAILABLE]")
        assert c.cmd(b"z", b"LOGOUT")[-1].startswith(b"z OK")
        assert c.p.wait(timeout=10) == 0
    finally:
        c.close()
    r = box.run(b"a NOOP\r\n")
    assert tagged(r.stdout, b"a") == b"a OK NOOP completed."


def test_login_program_trouble(box):
    r = box.run(login_cmd(), env={"FAKE_PASS": "other", "FAKE_FAILCODE": "111"})
    assert tagged(r.stdout, b"l").startswith(b"l NO [UNAVAILABLE]")
    r = box.run(login_cmd(), env={"FAKE_PASS": "other", "FAKE_FAILCODE": "2"})
    assert tagged(r.stdout, b"l").startswith(b"l NO [SERVERBUG]")
    r = box.run(login_cmd() + b"b NOOP\r\n",
                argv=[prog("imap-serve"), "/nonexistent/check", "imap-maildir"])
    assert tagged(r.stdout, b"l").startswith(b"l NO [UNAVAILABLE]")
    assert tagged(r.stdout, b"b") == b"b OK NOOP completed."


def test_login_broker_unreachable(box):
    """login-handoff with no broker listening: a temporary failure, the dialogue goes on."""
    r = box.run(login_cmd() + b"b NOOP\r\n",
                argv=[prog("imap-serve"), prog("login-handoff"), "imap"])
    assert tagged(r.stdout, b"l").startswith(b"l NO [UNAVAILABLE]")
    assert tagged(r.stdout, b"b") == b"b OK NOOP completed."
    assert b"login-handoff: fatal: unable to connect to the login broker" in r.stderr


def test_pipelined_octets_cross_the_handover_exactly(box):
    # a NUL and 8-bit octets in what follows the login (a binary APPEND, RFC 3516) reach the
    # session as they were sent
    body = b"S: x\r\n\r\nA\0\xffB"
    r = box.run(login_cmd() + b"a APPEND INBOX ~{%d+}\r\n" % len(body) + body +
                b"\r\ny NOOP\r\nz LOGOUT\r\n")
    assert tagged(r.stdout, b"l").startswith(b"l OK")
    assert tagged(r.stdout, b"a").startswith(b"a OK")
    assert tagged(r.stdout, b"y") == b"y OK NOOP completed."
    assert r.returncode == 0
    stored = [open(os.path.join(box.dir, sub, n), "rb").read()
              for sub in ("new", "cur") for n in os.listdir(os.path.join(box.dir, sub))]
    assert len(stored) == 1 and b"A\0\xffB" in stored[0], stored


def test_login_timeout(box):
    box.control("imap-login-timeout", "2")
    c = Conversation(box)
    try:
        t0 = time.monotonic()
        assert c.cmd(b"a", b"NOOP") == [b"a OK NOOP completed."]
        # a client that trickles a command does not stretch the deadline
        deadline = time.monotonic() + 15
        closed = False
        while time.monotonic() < deadline and not closed:
            try:
                c.send(b"N")
            except BrokenPipeError:
                closed = True
                break
            r, _, _ = select.select([c.p.stdout], [], [], 0.3)
            if r:
                chunk = os.read(c.p.stdout.fileno(), 4096)
                c.buf += chunk
                closed = not chunk
        assert closed or c.p.poll() is not None
        assert b"* BYE" in c.buf
        assert c.p.wait(timeout=10) == 99
        assert time.monotonic() - t0 < 8
    finally:
        c.close()


def test_starttls_injection_discarded_and_state_fresh(box):
    tls = FakeTLS()
    c = Conversation(box, env=dict(tls.env(), IMAP_ALLOW_PLAINTEXT_AUTH="0"),
                     pass_fds=tls.fds())
    tls.after_spawn()
    try:
        assert b"STARTTLS" in c.greeting and b"LOGINDISABLED" in c.greeting
        # the injection: a LOGIN pipelined behind STARTTLS in the same write
        c.send(b"a STARTTLS\r\n" + login_cmd(b"inj"))
        assert c.line() == b"a OK Begin TLS negotiation now."
        tls.handshake()
        os.write(tls.rd_ours, b"b CAPABILITY\r\nc STARTTLS\r\n" + login_cmd(b"d") +
                 b"e SELECT INBOX\r\nz LOGOUT\r\n")
        got = b""
        deadline = time.monotonic() + 10
        while b"z OK" not in got:
            assert time.monotonic() < deadline, got
            r, _, _ = select.select([tls.wr_ours], [], [], 1)
            if r:
                chunk = os.read(tls.wr_ours, 4096)
                if not chunk:
                    break
                got += chunk
        ls = lines(got)
        assert ls[0].startswith(b"* CAPABILITY") and b"AUTH=PLAIN" in ls[0]
        assert b"STARTTLS" not in ls[0] and b"LOGINDISABLED" not in ls[0]
        assert ls[1].startswith(b"b OK")
        assert ls[2].startswith(b"c BAD")
        assert ls[3].startswith(b"d OK [CAPABILITY")
        assert b"inj " not in got  # the injected LOGIN was never answered
        assert tagged(got, b"e").startswith(b"e OK")
        assert c.p.wait(timeout=10) == 0
        assert c.p.stdout.read() == b""  # nothing more in plaintext
        assert box.checks_run() == 1
    finally:
        os.close(tls.rd_ours)
        os.close(tls.wr_ours)
        c.close()


def test_bad_settings_exit_100(box):
    for env in ({"IMAP_LOGIN_TIMEOUT": "soon"}, {"IMAP_LOGIN_TIMEOUT": "0"},
                {"IMAP_FAIL_DELAY": "x"}):
        assert box.run(b"", env=env).returncode == 100
    box.control("imap-login-timeout", "forever")
    r = box.run(b"")
    assert r.returncode == 100 and b"imap-login-timeout" in r.stderr
    os.unlink(os.path.join(box.root, "control", "imap-login-timeout"))
    r = subprocess.run([prog("imap-serve"), "-x"], input=b"", env=box.env, capture_output=True,
                       timeout=10)
    assert r.returncode == 100 and b"usage" in r.stderr


# ---- through tcpserver, auth-check and the login broker ----

def parent(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


class TCPClient:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.f = self.s.makefile("rb")
        self.greeting = self.f.readline()

    def cmd(self, tag, text):
        self.s.sendall(tag + b" " + text + b"\r\n")
        out = []
        while True:
            l = self.f.readline()
            assert l, out
            out.append(l.rstrip(b"\r\n"))
            if l.startswith(tag + b" "):
                return out

    def close(self):
        self.f.close()
        self.s.close()


def test_through_tcpserver_and_auth_check(instance):
    instance.add_user("joe@example.test", "pw-joe")
    d = instance.maildir("joe@example.test")
    with open(os.path.join(d, "new", "1700000000.M1P1.mx"), "wb") as f:
        f.write(MSG)
    port = free_port()
    env = dict(instance.env, IMAP_ALLOW_PLAINTEXT_AUTH="1", IMAP_FAIL_DELAY="0")
    p = subprocess.Popen(["tcpserver", "-R", "-H", "-l", "localhost", "127.0.0.1", str(port),
                          prog("imap-serve"), "auth-check", "imap-maildir"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: listening(port), what="tcpserver")
        c = TCPClient(port)
        try:
            assert c.greeting.startswith(b"* OK [CAPABILITY")
            assert c.cmd(b"a", b"LOGIN joe@example.test wrong")[-1].startswith(b"a NO")
            assert c.cmd(b"b", b"LOGIN joe@example.test pw-joe")[-1].startswith(b"b OK")
            out = c.cmd(b"c", b"SELECT INBOX")
            assert b"* 1 EXISTS" in out and out[-1].startswith(b"c OK")
            assert c.cmd(b"z", b"LOGOUT")[-1].startswith(b"z OK")
        finally:
            c.close()
    finally:
        stop_procs([p])


def test_login_through_the_auth_service_and_broker(instance):
    from authsvc_helpers import (DELIV_UID, LOGIN_GID, LOGIN_UID, LOGINC_GID, ROOT_MODE,
                                 AuthService, LoginBroker, as_uid_groups)
    from test_loginbroker import procs_named
    instance.add_user("joe@example.test", "pw-joe")
    d = instance.maildir("joe@example.test")
    with open(os.path.join(d, "new", "1700000000.M1P1.mx"), "wb") as f:
        f.write(MSG)
    auth = AuthService(instance, "-n", "2")
    broker = tcp = None
    try:
        broker = LoginBroker(instance, "imap", [prog("imap-maildir")])
        port = free_port()
        env = dict(instance.env, IMAP_ALLOW_PLAINTEXT_AUTH="1", IMAP_FAIL_DELAY="0")
        tcp = subprocess.Popen(
            ["tcpserver", "-R", "-H", "-l", "localhost", "127.0.0.1", str(port)] +
            as_uid_groups(LOGIN_UID, LOGIN_GID, [LOGINC_GID],
                          [prog("imap-serve"), prog("login-handoff"), "imap"]),
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: listening(port), what="tcpserver")
        c = TCPClient(port)
        try:
            assert c.cmd(b"a", b"LOGIN joe@example.test wrong")[-1].startswith(
                b"a NO [AUTHENTICATIONFAILED]")
            # the login pipelined with a SELECT: both reach the session
            c.s.sendall(b"b LOGIN joe@example.test pw-joe\r\nc SELECT INBOX\r\n")
            out = []
            while not out or not out[-1].startswith(b"c "):
                l = c.f.readline()
                assert l, out
                out.append(l.rstrip(b"\r\n"))
            assert any(l.startswith(b"b OK [CAPABILITY") for l in out), out
            assert b"* 1 EXISTS" in out and out[-1].startswith(b"c OK")
            if ROOT_MODE:
                # ours only: other tests may run imap-maildir meanwhile
                sess = wait_for(lambda: procs_named("imap-maildir", {broker.proc.pid}),
                                what="imap-maildir")
                assert {u for _, u in sess} == {DELIV_UID}, sess
                # the front waits as login-wait, which takes the front's name (PR_SET_NAME)
                # only once it runs: polled, as under ASan that takes a while after the exec
                pre = wait_for(lambda: procs_named("imap-serve", {tcp.pid}), what="the front")
                assert {u for _, u in pre} == {LOGIN_UID}, pre
            out = c.cmd(b"d", b"FETCH 1 BODY[]")
            assert any(b"body one" in l for l in out) or b"body one" in c.f.peek()
            assert c.cmd(b"z", b"LOGOUT")[-1].startswith(b"z OK")
        finally:
            c.close()
        st = auth.stats()
        assert st["good"] == 1, st
    finally:
        if tcp:
            stop_procs([tcp])
        if broker:
            broker.stop()
        auth.stop()


def test_parallel_logins_through_the_broker(instance):
    """16 IMAP clients log in at once (different accounts) through imap-serve, the login broker
    and the auth service: every session works, hashing stays within the service's bound."""
    import threading
    from authsvc_helpers import (LOGIN_GID, LOGIN_UID, LOGINC_GID, AuthService, LoginBroker,
                                 as_uid_groups)
    users = ["i%d@example.test" % i for i in range(16)]
    for u in users:
        instance.add_user(u, "pw-" + u)
    auth = AuthService(instance, "-n", "2", "-q", "25")
    broker = tcp = None
    results = [None] * 16
    try:
        broker = LoginBroker(instance, "imap", [prog("imap-maildir")])
        port = free_port()
        env = dict(instance.env, IMAP_ALLOW_PLAINTEXT_AUTH="1", IMAP_FAIL_DELAY="0")
        tcp = subprocess.Popen(
            ["tcpserver", "-R", "-H", "-l", "localhost", "-c", "100", "127.0.0.1", str(port)] +
            as_uid_groups(LOGIN_UID, LOGIN_GID, [LOGINC_GID],
                          [prog("imap-serve"), prog("login-handoff"), "imap"]),
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: listening(port), what="tcpserver")

        def one(i):
            c = TCPClient(port)
            try:
                out = c.cmd(b"a", b"LOGIN %s pw-%s" % (users[i].encode(), users[i].encode()))
                sel = c.cmd(b"b", b"SELECT INBOX")
                c.cmd(b"z", b"LOGOUT")
                results[i] = out[-1][:4] + sel[-1][:4]
            except (AssertionError, OSError) as e:
                results[i] = repr(e).encode()
            finally:
                c.close()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        st = auth.stats()
        assert results == [b"a OKb OK"] * 16, (results, st)
        assert st["hashes"] == 16 and st["max_running"] <= 2, st
    finally:
        if tcp:
            stop_procs([tcp])
        if broker:
            broker.stop()
        auth.stop()
