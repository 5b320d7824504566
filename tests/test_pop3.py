"""pop3-serve and pop3-maildir, driven through pipes: the session is on fd 0/1 as under
tcpserver, UCSPI variables set by hand. Logins go through a stand-in checkpassword program
(the checkpassword interface: credentials on fd 3, exec of the rest on success), so that these
cases test POP3 alone; test_pop3_clients.py goes through the real auth-check and tls-serve.
"""
import base64
import os
import re
import select
import socket
import subprocess
import threading
import time

import pytest

from access_helpers import FakeCheckBox, FakeTLS, PipeSession
from conftest import base_env, prog, wait_for

PASSWORD = "s3cret pass"


class Box(FakeCheckBox):
    """A Maildir and the environment to serve it."""

    def __init__(self, tmp_path):
        super().__init__(tmp_path, PASSWORD, POP3_ALLOW_PLAINTEXT_AUTH="1", POP3_FAIL_DELAY="0")

    def files(self, sub):
        return sorted(os.listdir(os.path.join(self.dir, sub)))

    def argv(self):
        return [prog("pop3-serve"), self.check, prog("pop3-maildir")]

    def session(self, commands, env=None, login=True):
        """Pipes a whole session; returns the replies (bytes) after the greeting."""
        data = b""
        if login:
            data += b"USER joe\r\nPASS " + PASSWORD.encode() + b"\r\n"
        data += b"".join(c + b"\r\n" for c in commands)
        r = self.run(data, env)
        return r


class Conversation(PipeSession):
    """An interactive session with a running pop3-serve (for the cases that need timing)."""

    def __init__(self, box, env=None, pass_fds=(), extra_env=None):
        e = dict(box.env)
        e.update(env or {})
        super().__init__(box.argv(), e, pass_fds)

    def multiline(self):
        out = []
        while True:
            l = self.line()
            if l == b".":
                return out
            out.append(l)

    def cmd(self, c):
        self.send(c + b"\r\n")
        return self.line()


@pytest.fixture
def box(tmp_path):
    return Box(tmp_path)


def lines(out):
    return out.split(b"\r\n")


def replies(out):
    """Status lines only (lines starting with +OK or -ERR), greeting dropped."""
    return [l for l in lines(out) if l.startswith((b"+OK", b"-ERR"))][1:]


MSG1 = b"From: a@example.test\nTo: joe@example.test\nSubject: one\n\nline 1\n.dot line\n..two dots\nline 4\n"
MSG2 = b"From: b@example.test\nSubject: two\n\nbody\n"


def test_greeting_capa_quit(box):
    r = box.run(b"CAPA\r\nQUIT\r\n")
    assert r.returncode == 0, r.stderr
    out = lines(r.stdout)
    assert out[0].startswith(b"+OK ") and b"POP3" in out[0]
    assert out[1].startswith(b"+OK")
    capa = out[2:out.index(b".")]
    for c in (b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING", b"USER",
              b"SASL PLAIN LOGIN"):
        assert c in capa
    assert b"STLS" not in capa  # no UCSPI-TLS sidecar here
    assert out[out.index(b".") + 1] == b"+OK bye"


def test_greeting_names_the_host(box):
    os.makedirs(os.path.join(box.root, "control"))
    with open(os.path.join(box.root, "control", "me"), "w") as f:
        f.write("pop.example.test\n")
    r = box.run(b"QUIT\r\n")
    assert lines(r.stdout)[0].startswith(b"+OK pop.example.test ")


def test_transaction_commands_refused_before_login(box):
    box.add(MSG1)
    cmds = [b"STAT", b"LIST", b"LIST 1", b"RETR 1", b"DELE 1", b"NOOP", b"RSET", b"TOP 1 0",
            b"UIDL", b"UIDL 1", b"PASS secret", b"APOP joe 0123456789abcdef", b"XYZZY"]
    r = box.session(cmds + [b"QUIT"], login=False)
    rs = replies(r.stdout)
    assert len(rs) == len(cmds) + 1
    assert all(x.startswith(b"-ERR") for x in rs[:-1]), rs
    assert rs[-1] == b"+OK bye"
    assert box.files("new") == sorted(os.listdir(os.path.join(box.dir, "new")))
    assert len(box.files("new")) == 1


def test_login_commands_refused_after_login(box):
    box.add(MSG1)
    r = box.session([b"USER joe", b"PASS x", b"AUTH PLAIN", b"STLS", b"APOP a b", b"CAPA",
                     b"QUIT"])
    out = lines(r.stdout)
    rs = replies(r.stdout)
    assert rs[0] == b"+OK send PASS"
    assert rs[1].startswith(b"+OK 1 message")
    assert all(x.startswith(b"-ERR") for x in rs[2:7]), rs
    capa = out[out.index(b"+OK capability list follows") + 1:]
    capa = capa[:capa.index(b".")]
    assert b"UIDL" in capa and b"TOP" in capa
    assert b"USER" not in capa and b"STLS" not in capa and not any(
        c.startswith(b"SASL") for c in capa)
    assert rs[-1] == b"+OK bye"


def test_plaintext_login_refused_without_tls(box):
    env = {"POP3_ALLOW_PLAINTEXT_AUTH": "0"}
    auth = base64.b64encode(b"\0joe\0" + PASSWORD.encode())
    r = box.session([b"AUTH PLAIN " + auth, b"CAPA", b"QUIT"], env=env)
    rs = replies(r.stdout)
    assert rs[0].startswith(b"-ERR [AUTH]") and b"TLS" in rs[0]  # USER
    assert rs[1].startswith(b"-ERR [AUTH]")  # PASS
    assert rs[2].startswith(b"-ERR [AUTH]")  # AUTH
    capa = lines(r.stdout)
    assert b"USER" not in capa and not any(c.startswith(b"SASL") for c in capa)
    # Allowed explicitly, but only on loopback.
    env = {"POP3_ALLOW_PLAINTEXT_AUTH": "1", "TCPREMOTEIP": "192.0.2.7"}
    rs = replies(box.session([b"QUIT"], env=env).stdout)
    assert rs[0].startswith(b"-ERR [AUTH]") and rs[1].startswith(b"-ERR [AUTH]")
    # The control file does the same as the variable.
    os.makedirs(os.path.join(box.root, "control"), exist_ok=True)
    with open(os.path.join(box.root, "control", "pop3-allow-plaintext"), "w") as f:
        f.write("1\n")
    e = dict(box.env)
    del e["POP3_ALLOW_PLAINTEXT_AUTH"]
    r = subprocess.run(box.argv(), input=b"USER joe\r\nPASS " + PASSWORD.encode() +
                       b"\r\nQUIT\r\n", env=e, capture_output=True, timeout=30)
    rs = replies(r.stdout)
    assert rs[0] == b"+OK send PASS" and rs[1].startswith(b"+OK 0 messages"), rs


def test_user_pass_login_and_stat_list_uidl(box):
    n1 = box.add(MSG1)
    n2 = box.add(MSG2)
    r = box.session([b"STAT", b"LIST", b"LIST 2", b"UIDL", b"UIDL 1", b"NOOP", b"QUIT"])
    assert r.returncode == 0, r.stderr
    out = lines(r.stdout)
    size1 = len(MSG1) + MSG1.count(b"\n")
    size2 = len(MSG2) + MSG2.count(b"\n")
    assert b"+OK 2 %d" % (size1 + size2) in out
    i = out.index(b"+OK scan listing follows")
    assert out[i + 1:i + 4] == [b"1 %d" % size1, b"2 %d" % size2, b"."]
    assert b"+OK 2 %d" % size2 in out
    i = out.index(b"+OK unique-id listing follows")
    assert out[i + 1:i + 4] == [b"1 " + n1.encode(), b"2 " + n2.encode(), b"."]
    assert b"+OK 1 " + n1.encode() in out
    assert out[-2] == b"+OK bye"


def test_bad_password_is_auth_error_and_user_forgotten(box):
    r = box.run(b"USER joe\r\nPASS wrong\r\nPASS " + PASSWORD.encode() + b"\r\nQUIT\r\n")
    rs = replies(r.stdout)
    assert rs[0] == b"+OK send PASS"
    assert rs[1].startswith(b"-ERR [AUTH]")
    assert rs[2] == b"-ERR USER first"
    assert rs[3] == b"+OK bye"
    assert b"pop3-serve: info: failed login for joe from 127.0.0.1\n" in r.stderr
    # What the client sends is logged printable and bounded.
    tok = base64.b64encode(b"\0jo\ne\x1b" + b"x" * 100 + b"\0pw")
    r = box.run(b"AUTH PLAIN " + tok + b"\r\nQUIT\r\n")
    assert replies(r.stdout)[0].startswith(b"-ERR [AUTH]")
    assert b"failed login for jo?e?" + b"x" * 59 + b" from" in r.stderr


def test_failed_logins_slowed_and_connection_dropped(box):
    t = time.monotonic()
    r = box.run(b"USER joe\r\nPASS a\r\nUSER joe\r\nPASS b\r\nUSER joe\r\nPASS c\r\n"
                b"USER joe\r\nPASS " + PASSWORD.encode() + b"\r\nQUIT\r\n",
                env={"POP3_FAIL_DELAY": "1"})
    took = time.monotonic() - t
    rs = replies(r.stdout)
    assert [x for x in rs if x.startswith(b"-ERR [AUTH] invalid")].__len__() == 3
    assert rs[-1].startswith(b"-ERR [AUTH] too many")
    assert not any(x.startswith(b"+OK 0 messages") for x in rs)
    assert took >= 3.0


def test_per_ip_failure_limit_shared(box):
    """More than AUTHFAIL_LIMIT (10) failures from one address block it, across connections;
    another address is not affected."""
    bad = b"USER joe\r\nPASS nope\r\n" * 3
    for _ in range(4):
        box.run(bad, env={"TCPREMOTEIP": "127.0.0.9"})
    r = box.session([b"QUIT"], env={"TCPREMOTEIP": "127.0.0.9"})
    rs = replies(r.stdout)
    assert rs[1].startswith(b"-ERR [AUTH] too many failed logins from your address"), rs
    r = box.session([b"QUIT"], env={"TCPREMOTEIP": "127.0.0.10"})
    assert replies(r.stdout)[1].startswith(b"+OK 0 messages")


def test_missing_auth_program_is_sys_temp(box):
    """The checkpassword program cannot be started (lib/spawn reports it to pop3-serve): a
    temporary trouble, said as such, and the session goes on."""
    r = subprocess.run([prog("pop3-serve"), "/nonexistent/auth-check", prog("pop3-maildir")],
                       input=b"USER joe\r\nPASS " + PASSWORD.encode() + b"\r\nNOOP\r\nQUIT\r\n",
                       env=box.env, capture_output=True, timeout=30)
    rs = replies(r.stdout)
    assert rs[1].startswith(b"-ERR [SYS/TEMP]"), rs
    assert rs[2].startswith(b"-ERR"), rs  # not logged in: NOOP is refused
    assert rs[3].startswith(b"+OK"), rs  # QUIT
    assert b"/nonexistent/auth-check" in r.stderr


def test_auth_check_trouble_is_sys_temp(box):
    r = box.run(b"USER joe\r\nPASS other\r\nQUIT\r\n", env={"FAKE_FAILCODE": "111"})
    rs = replies(r.stdout)
    assert rs[1].startswith(b"-ERR [SYS/TEMP]")
    r = box.run(b"USER joe\r\nPASS other\r\nQUIT\r\n", env={"FAKE_FAILCODE": "2"})
    assert replies(r.stdout)[1].startswith(b"-ERR [SYS/PERM]")


def test_auth_plain_initial_response_and_continuation(box):
    box.add(MSG2)
    good = base64.b64encode(b"\0joe\0" + PASSWORD.encode())
    r = box.run(b"AUTH PLAIN " + good + b"\r\nSTAT\r\nQUIT\r\n")
    rs = replies(r.stdout)
    assert rs[0].startswith(b"+OK 1 message") and rs[1].startswith(b"+OK 1 "), rs
    # authzid equal to authcid is fine
    good2 = base64.b64encode(b"joe\0joe\0" + PASSWORD.encode())
    r = box.run(b"AUTH PLAIN\r\n" + good2 + b"\r\nQUIT\r\n")
    out = lines(r.stdout)
    assert out[1] == b"+ "
    assert out[2].startswith(b"+OK 1 message")
    # cancel, bad base64, someone else's authzid, unknown mechanism, AUTH alone
    other = base64.b64encode(b"boss\0joe\0" + PASSWORD.encode())
    r = box.run(b"AUTH PLAIN\r\n*\r\nAUTH PLAIN %%%%\r\nAUTH PLAIN " + other +
                b"\r\nAUTH CRAM-MD5\r\nAUTH\r\nQUIT\r\n")
    out = lines(r.stdout)
    assert out[1] == b"+ "
    assert out[2] == b"-ERR authentication cancelled"
    assert out[3].startswith(b"-ERR") and b"base64" in out[3]
    assert out[4].startswith(b"-ERR [AUTH]")
    assert b"failed login for joe from 127.0.0.1" in r.stderr
    assert out[5].startswith(b"-ERR unsupported")
    assert out[6:10] == [b"+OK", b"PLAIN", b"LOGIN", b"."]
    assert out[10] == b"+OK bye"


def test_auth_login(box):
    box.add(MSG2)
    b64 = lambda x: base64.b64encode(x.encode())
    # without initial response: Username: and Password: challenges
    r = box.run(b"AUTH LOGIN\r\n" + b64("joe") + b"\r\n" + b64(PASSWORD) + b"\r\nQUIT\r\n")
    out = lines(r.stdout)
    assert out[1] == b"+ VXNlcm5hbWU6" and out[2] == b"+ UGFzc3dvcmQ6"
    assert out[3].startswith(b"+OK 1 message"), out
    # with the user name as initial response
    r = box.run(b"AUTH LOGIN " + b64("joe") + b"\r\n" + b64(PASSWORD) + b"\r\nQUIT\r\n")
    out = lines(r.stdout)
    assert out[1] == b"+ UGFzc3dvcmQ6" and out[2].startswith(b"+OK 1 message"), out
    # wrong password, cancel at each step, bad base64
    r = box.run(b"AUTH LOGIN " + b64("joe") + b"\r\n" + b64("nope") + b"\r\n"
                b"AUTH LOGIN\r\n*\r\nAUTH LOGIN " + b64("joe") + b"\r\n*\r\n"
                b"AUTH LOGIN !!!!\r\nQUIT\r\n")
    out = lines(r.stdout)
    assert out[1] == b"+ UGFzc3dvcmQ6" and out[2].startswith(b"-ERR [AUTH] invalid")
    assert out[3] == b"+ VXNlcm5hbWU6" and out[4] == b"-ERR authentication cancelled"
    assert out[5] == b"+ UGFzc3dvcmQ6" and out[6] == b"-ERR authentication cancelled"
    assert out[7].startswith(b"-ERR invalid base64")
    assert out[8] == b"+OK bye"
    # refused without TLS like PLAIN
    r = box.run(b"AUTH LOGIN\r\nQUIT\r\n", env={"POP3_ALLOW_PLAINTEXT_AUTH": "0"})
    assert lines(r.stdout)[1].startswith(b"-ERR [AUTH]")


def test_retr_byte_correct_bare_lf_and_dots(box):
    box.add(MSG1)
    box.add(b"Subject: crlf\r\n\r\n.a\r\nb\r\n")
    box.add(b"Subject: no final newline\n\nlast")
    r = box.session([b"RETR 1", b"RETR 2", b"RETR 3", b"QUIT"])
    want1 = (b"From: a@example.test\r\nTo: joe@example.test\r\nSubject: one\r\n\r\nline 1\r\n"
             b"..dot line\r\n...two dots\r\nline 4\r\n.\r\n")
    want2 = b"Subject: crlf\r\n\r\n..a\r\nb\r\n.\r\n"
    want3 = b"Subject: no final newline\r\n\r\nlast\r\n.\r\n"
    out = r.stdout
    i = out.index(b"+OK %d octets\r\n" % (len(MSG1) + MSG1.count(b"\n")))
    body = out[out.index(b"\r\n", i) + 2:]
    assert body.startswith(want1)
    assert b"+OK 24 octets\r\n" + want2 in out
    assert b"+OK 35 octets\r\n" + want3 in out
    # The stored files are untouched.
    assert MSG1 in [open(os.path.join(box.dir, "cur", f), "rb").read() for f in box.files("cur")]


def test_big_message_through_small_buffers(box):
    ls = [b"." * (i % 3) + b"%06d" % i + b"x" * (i % 97) for i in range(20000)]
    msg = b"Subject: big\n\n" + b"\n".join(ls) + b"\n"
    box.add(msg)
    r = box.session([b"LIST 1", b"RETR 1", b"QUIT"])
    size = len(msg) + msg.count(b"\n")
    assert b"+OK 1 %d\r\n" % size in r.stdout
    start = r.stdout.index(b"+OK %d octets\r\n" % size)
    got = r.stdout[r.stdout.index(b"\r\n", start) + 2:]
    want = b"Subject: big\r\n\r\n" + b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n"
                                              for l in ls) + b".\r\n"
    assert got == want + b"+OK bye\r\n"


def test_top(box):
    box.add(b"H1: a\nH2: b\n\nb1\n.b2\nb3\n")
    r = box.session([b"TOP 1 0", b"TOP 1 2", b"TOP 1 99", b"TOP 1 x", b"TOP 2 0", b"QUIT"])
    out = r.stdout
    assert b"H1: a\r\nH2: b\r\n\r\n.\r\n" in out
    assert b"H1: a\r\nH2: b\r\n\r\nb1\r\n..b2\r\n.\r\n" in out
    assert b"H1: a\r\nH2: b\r\n\r\nb1\r\n..b2\r\nb3\r\n.\r\n" in out
    rs = replies(out)
    assert rs[-3].startswith(b"-ERR") and rs[-2].startswith(b"-ERR")  # TOP 1 x, TOP 2 0
    # TOP does not mark the message seen.
    assert box.files("cur") == [] and len(box.files("new")) == 1


def test_dele_errors_and_rset(box):
    box.add(MSG1)
    box.add(MSG2)
    r = box.session([b"DELE 0", b"DELE 3", b"DELE x", b"DELE 1", b"DELE 1", b"RETR 1",
                     b"LIST 1", b"TOP 1 0", b"UIDL 1", b"STAT", b"LIST", b"RSET", b"STAT",
                     b"QUIT"])
    out = lines(r.stdout)
    rs = replies(r.stdout)[2:]
    assert [x[:4] for x in rs[:9]] == [b"-ERR", b"-ERR", b"-ERR", b"+OK ", b"-ERR", b"-ERR",
                                      b"-ERR", b"-ERR", b"-ERR"]
    size2 = len(MSG2) + MSG2.count(b"\n")
    assert rs[9] == b"+OK 1 %d" % size2
    i = out.index(b"+OK scan listing follows")
    assert out[i + 1:i + 3] == [b"2 %d" % size2, b"."]
    assert rs[11] == b"+OK"
    assert rs[12].startswith(b"+OK 2 ")
    assert len(box.files("new")) == 2  # RSET undid the deletion


def test_dele_then_drop_keeps_mail(box):
    box.add(MSG1)
    r = box.run(b"USER joe\r\nPASS " + PASSWORD.encode() + b"\r\nDELE 1\r\nRETR 1\r\n")
    assert b"+OK message deleted" in r.stdout
    assert len(box.files("new")) == 1 and box.files("cur") == []


def test_dele_then_quit_removes(box):
    box.add(MSG1)
    keep = box.add(MSG2)
    r = box.session([b"DELE 1", b"QUIT"])
    assert r.stdout.endswith(b"+OK bye\r\n")
    assert (b"pop3-maildir: info: joe@example.test: quit: 2 messages, 0 retrieved and kept, "
            b"1 deleted\n") in r.stderr
    assert box.files("new") == [keep] and box.files("cur") == []


def test_retr_marks_seen_at_quit_keeps_flags_and_uidl(box):
    a = box.add(MSG1)
    b = box.add(MSG2, name="1700000100.M9P9.host:2,F", sub="cur")
    r = box.session([b"UIDL", b"RETR 1", b"RETR 2", b"QUIT"])
    before = [l for l in lines(r.stdout) if l[:2] in (b"1 ", b"2 ")]
    assert box.files("new") == []
    assert box.files("cur") == sorted([a + ":2,S", "1700000100.M9P9.host:2,FS"])
    r = box.session([b"UIDL", b"QUIT"])
    after = [l for l in lines(r.stdout) if l[:2] in (b"1 ", b"2 ")]
    assert before == after == [b"1 " + a.encode(), b"2 1700000100.M9P9.host"]
    # A flag change by someone else (an IMAP client) keeps the UIDL.
    os.rename(os.path.join(box.dir, "cur", a + ":2,S"), os.path.join(box.dir, "cur", a + ":2,RS"))
    r = box.session([b"UIDL 1", b"QUIT"])
    assert b"+OK 1 " + a.encode() in lines(r.stdout)


def test_retr_then_drop_changes_nothing(box):
    box.add(MSG1)
    r = box.run(b"USER joe\r\nPASS " + PASSWORD.encode() + b"\r\nRETR 1\r\n")
    assert b"line 4\r\n.\r\n" in r.stdout
    assert len(box.files("new")) == 1 and box.files("cur") == []


def test_long_uidl_is_hashed(box):
    name = "1700000000." + "x" * 80 + ".host"
    box.add(MSG2, name=name)
    r = box.session([b"UIDL 1", b"QUIT"])
    u = [l for l in lines(r.stdout) if l.startswith(b"+OK 1 ")][-1][6:]
    assert len(u) == 41 and u.startswith(b"H")
    assert all(0x21 <= c <= 0x7e for c in u)


def test_w_size_in_name_is_used(box):
    box.add(MSG2, name="1700000000.M1P1.host,S=%d,W=999" % len(MSG2))
    r = box.session([b"LIST 1", b"QUIT"])
    assert b"+OK 1 999\r\n" in r.stdout


def test_length_limits(box):
    box.add(MSG1)
    arg40 = b"a" * 40
    arg41 = b"a" * 41
    long_line = b"NOOP " + b"x" * 295  # 300 octets with CRLF... and more
    r = box.run(b"USER " + arg41 + b"\r\n" + long_line + b"\r\nUSER " + arg40 + b"\r\nQUIT\r\n")
    rs = replies(r.stdout)
    assert rs[0] == b"-ERR argument too long"
    assert rs[1] == b"-ERR line too long"
    assert rs[2] == b"+OK send PASS"
    assert rs[3] == b"+OK bye"
    # After login too, and a line far longer than any buffer.
    r = box.session([b"LIST " + arg41, b"RETR " + b"1" * 300, b"NOOP " + b"y" * 5000, b"STAT",
                     b"QUIT"])
    rs = replies(r.stdout)[2:]
    assert rs[0] == b"-ERR argument too long"
    assert rs[1] == b"-ERR line too long"
    assert rs[2] == b"-ERR line too long"
    assert rs[3].startswith(b"+OK 1 ")
    assert len(box.files("new")) == 1


def test_message_number_bounds(box):
    box.add(MSG1)
    r = box.session([b"RETR 2", b"RETR 99999999999", b"LIST 0", b"UIDL -1", b"TOP 2 1",
                     b"QUIT"])
    rs = replies(r.stdout)[2:]
    assert all(x.startswith(b"-ERR") for x in rs[:5]), rs


def test_snapshot_at_login(box):
    box.add(MSG1)
    c = Conversation(box)
    try:
        assert c.line().startswith(b"+OK")
        c.send(b"USER joe\r\n")
        assert c.line() == b"+OK send PASS"
        c.send(b"PASS " + PASSWORD.encode() + b"\r\n")
        assert c.line().startswith(b"+OK 1 message")
        box.add(MSG2)
        assert c.cmd(b"STAT").startswith(b"+OK 1 ")
        assert c.cmd(b"LIST") == b"+OK scan listing follows"
        assert len(c.multiline()) == 1
        assert c.cmd(b"QUIT") == b"+OK bye"
    finally:
        c.close()


def test_second_session_in_use(box):
    box.add(MSG1)
    first = Conversation(box)
    try:
        first.line()
        first.send(b"USER joe\r\nPASS " + PASSWORD.encode() + b"\r\n")
        assert first.line() == b"+OK send PASS"
        assert first.line().startswith(b"+OK 1 message")
        r = box.session([b"STAT", b"QUIT"])
        rs = replies(r.stdout)
        assert rs[1].startswith(b"-ERR [IN-USE]"), rs
        assert first.cmd(b"DELE 1") == b"+OK message deleted"
        assert first.cmd(b"QUIT") == b"+OK bye"
    finally:
        first.close()
    assert box.files("new") == []
    # The lock went with the first session.
    r = box.session([b"STAT", b"QUIT"])
    assert replies(r.stdout)[1].startswith(b"+OK 0 messages")


def test_idle_autologout(box):
    box.add(MSG1)
    c = Conversation(box, env={"POP3_TIMEOUT": "1"})
    try:
        c.line()
        t = time.monotonic()
        assert c.line(timeout=10).startswith(b"-ERR autologout")
        assert c.p.wait(timeout=10) == 99
        assert time.monotonic() - t < 8
    finally:
        c.close()
    c = Conversation(box, env={"POP3_TIMEOUT": "1"})
    try:
        c.line()
        c.send(b"USER joe\r\nPASS " + PASSWORD.encode() + b"\r\nDELE 1\r\n")
        assert c.line() == b"+OK send PASS"
        assert c.line().startswith(b"+OK 1 message")
        assert c.line() == b"+OK message deleted"
        assert c.line(timeout=10).startswith(b"-ERR autologout")
        assert c.p.wait(timeout=10) == 99
    finally:
        c.close()
    assert len(box.files("new")) == 1  # no UPDATE after an autologout


def test_maildir_missing_is_sys_perm(box, tmp_path):
    r = box.session([b"STAT"], env={"FAKE_HOME": str(tmp_path / "nothing")})
    rs = replies(r.stdout)
    assert rs[1].startswith(b"-ERR [SYS/PERM]"), rs


def test_bad_settings_exit_100(box):
    assert box.run(b"", env={"POP3_TIMEOUT": "soon"}).returncode == 100
    r = subprocess.run([prog("pop3-serve"), "-x"], input=b"", env=box.env, capture_output=True,
                       timeout=10)
    assert r.returncode == 100 and b"usage" in r.stderr


def test_stls_discards_injected_commands_and_starts_fresh(box):
    box.add(MSG1)
    tls = FakeTLS()
    c = Conversation(box, env=dict(tls.env(), POP3_ALLOW_PLAINTEXT_AUTH="0"),
                     pass_fds=tls.fds())
    tls.after_spawn()
    try:
        c.line()
        assert c.cmd(b"CAPA").startswith(b"+OK")
        capa = c.multiline()
        assert b"STLS" in capa and b"USER" not in capa
        # USER before TLS is refused
        assert c.cmd(b"USER joe").startswith(b"-ERR [AUTH]")
        # The injection: CAPA pipelined behind STLS in the same write.
        c.send(b"STLS\r\nCAPA\r\n")
        assert c.line() == b"+OK begin TLS negotiation"
        tls.handshake()
        # From now on the session is on the "TLS" pipes.
        os.write(tls.rd_ours, b"CAPA\r\n")
        got = b""
        deadline = time.monotonic() + 10
        while not got.endswith(b".\r\n"):
            assert time.monotonic() < deadline, got
            r, _, _ = select.select([tls.wr_ours], [], [], 1)
            if r:
                got += os.read(tls.wr_ours, 4096)
        ls = got.split(b"\r\n")
        assert ls[0] == b"+OK capability list follows", ls  # one CAPA answer, not two
        assert got.count(b"+OK capability") == 1
        assert b"STLS" not in ls and b"USER" in ls and b"SASL PLAIN LOGIN" in ls
        auth = base64.b64encode(b"\0joe\0" + PASSWORD.encode())
        os.write(tls.rd_ours, b"STLS\r\nAUTH PLAIN " + auth + b"\r\nSTAT\r\nQUIT\r\n")
        got = b""
        deadline = time.monotonic() + 10
        while b"+OK bye" not in got:
            assert time.monotonic() < deadline, got
            r, _, _ = select.select([tls.wr_ours], [], [], 1)
            if r:
                chunk = os.read(tls.wr_ours, 4096)
                if not chunk:
                    break
                got += chunk
        ls = got.split(b"\r\n")
        assert ls[0].startswith(b"-ERR already in TLS")
        assert ls[1].startswith(b"+OK 1 message")
        assert ls[2].startswith(b"+OK 1 ")
        assert ls[3] == b"+OK bye"
        assert c.p.wait(timeout=10) == 0
        # Nothing was written on the plaintext fd after the STLS reply.
        assert c.p.stdout.read() == b""
    finally:
        os.close(tls.rd_ours)
        os.close(tls.wr_ours)
        c.close()


def test_stls_user_forgotten(box):
    """USER given before STLS does not count after it (fresh state)."""
    tls = FakeTLS()
    c = Conversation(box, env=tls.env(), pass_fds=tls.fds())
    tls.after_spawn()
    try:
        c.line()
        assert c.cmd(b"USER joe") == b"+OK send PASS"  # plaintext allowed on loopback here
        c.send(b"STLS\r\n")
        assert c.line() == b"+OK begin TLS negotiation"
        tls.handshake()
        os.write(tls.rd_ours, b"PASS " + PASSWORD.encode() + b"\r\nQUIT\r\n")
        got = b""
        deadline = time.monotonic() + 10
        while b"+OK bye" not in got:
            assert time.monotonic() < deadline, got
            r, _, _ = select.select([tls.wr_ours], [], [], 1)
            if r:
                got += os.read(tls.wr_ours, 4096)
        assert got.split(b"\r\n")[0] == b"-ERR USER first"
    finally:
        os.close(tls.rd_ours)
        os.close(tls.wr_ours)
        c.close()


def test_size_cache(box):
    """Sizes counted once are kept in MAILDIR/.pop3.sizes by unique name; later sessions read
    them from there (even after new/ -> cur/), and entries of vanished messages are dropped."""
    a = box.add(MSG1)
    b = box.add(MSG2)
    size1 = len(MSG1) + MSG1.count(b"\n")
    size2 = len(MSG2) + MSG2.count(b"\n")
    r = box.session([b"RETR 1", b"QUIT"])
    assert b"+OK %d octets" % size1 in r.stdout
    cache = os.path.join(box.dir, ".pop3.sizes")
    with open(cache, "rb") as f:
        assert f.read() == b"%s %d\n%s %d\n" % (a.encode(), size1, b.encode(), size2)
    # The cache is what LIST reports (proved by planting a different figure) ...
    with open(cache, "wb") as f:
        f.write(b"%s 4242\n%s %d\nzzz.gone.host 7\n" % (a.encode(), b.encode(), size2))
    r = box.session([b"LIST", b"QUIT"])
    assert b"1 4242\r\n2 %d\r\n" % size2 in r.stdout
    # ... found by the unique name although message 1 is now cur/NAME:2,S; the stale line
    # went away when the cache was rewritten.
    with open(cache, "rb") as f:
        assert f.read() == b"%s 4242\n%s %d\n" % (a.encode(), b.encode(), size2)
    # A damaged cache is only a cache.
    with open(cache, "wb") as f:
        f.write(b"garbage\n" + b"x" * 20000 + b"\n" + a.encode() + b" notanumber\n")
    r = box.session([b"LIST", b"QUIT"])
    assert b"1 %d\r\n2 %d\r\n" % (size1, size2) in r.stdout


def test_symlinks_and_directories_are_not_messages(box, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"Subject: not mail\n\nprivate\n")
    os.symlink(str(secret), os.path.join(box.dir, "new", "1700000001.M1P1.link"))
    os.mkdir(os.path.join(box.dir, "new", "1700000002.M2P2.dir"))
    box.add(MSG2, when=1700000003)
    r = box.session([b"LIST", b"RETR 1", b"RETR 2", b"RETR 3", b"QUIT"])
    assert b"private" not in r.stdout
    rs = replies(r.stdout)[2:]
    assert rs[1].startswith(b"-ERR [SYS/PERM] message vanished")
    assert rs[2].startswith(b"-ERR [SYS/PERM] message vanished")
    assert rs[3].startswith(b"+OK")
    assert rs[4] == b"+OK bye"


def test_pipelined_commands_survive_the_login(box):
    """Commands pipelined behind PASS (more than pop3-serve's buffer holds) are all answered,
    in order, by the post-login program."""
    box.add(MSG1)
    cmds = [b"LIST %d" % (1 + i % 2) for i in range(300)]
    r = box.session(cmds + [b"QUIT"])
    rs = replies(r.stdout)[2:]
    assert len(rs) == 301
    assert all(rs[i] == (b"+OK 1 %d" % (len(MSG1) + MSG1.count(b"\n")) if i % 2 == 0
                         else b"-ERR no such message") for i in range(300)), rs[:4]
    assert rs[300] == b"+OK bye"


def test_messages_moved_by_another_program_are_followed(box):
    """An IMAP client may move a message new/ -> cur/ or change its flags during a POP3
    session: RETR, DELE+QUIT and the seen mark follow it by its unique name."""
    a = box.add(MSG1)
    b = box.add(MSG2)
    c = Conversation(box)
    new = os.path.join(box.dir, "new")
    cur = os.path.join(box.dir, "cur")
    try:
        c.line()
        c.send(b"USER joe\r\nPASS " + PASSWORD.encode() + b"\r\n")
        assert c.line() == b"+OK send PASS"
        assert c.line().startswith(b"+OK 2 messages")
        os.rename(os.path.join(new, a), os.path.join(cur, a + ":2,S"))
        os.rename(os.path.join(new, b), os.path.join(cur, b + ":2,F"))
        assert c.cmd(b"RETR 1").startswith(b"+OK")
        assert b"line 4" in b"\r\n".join(c.multiline())
        assert c.cmd(b"DELE 1") == b"+OK message deleted"
        assert c.cmd(b"RETR 2").startswith(b"+OK")
        c.multiline()
        os.rename(os.path.join(cur, a + ":2,S"), os.path.join(cur, a + ":2,RS"))
        assert c.cmd(b"QUIT") == b"+OK bye"
    finally:
        c.close()
    assert box.files("new") == []
    assert box.files("cur") == [b + ":2,FS"]


def test_message_removed_by_another_program(box):
    a = box.add(MSG1)
    box.add(MSG2)
    c = Conversation(box)
    try:
        c.line()
        c.send(b"USER joe\r\nPASS " + PASSWORD.encode() + b"\r\n")
        c.line()
        assert c.line().startswith(b"+OK 2 messages")
        os.unlink(os.path.join(box.dir, "new", a))
        assert c.cmd(b"RETR 1").startswith(b"-ERR [SYS/PERM] message vanished")
        assert c.cmd(b"DELE 1") == b"+OK message deleted"
        assert c.cmd(b"QUIT") == b"+OK bye"
    finally:
        c.close()
    assert len(box.files("new")) == 1


def test_quit_updates_maildirsize(box):
    """Removed messages leave the Maildir++ quota totals; no maildirsize, none is made."""
    box.add(MSG1)
    box.add(MSG2)
    box.session([b"DELE 1", b"QUIT"])
    assert not os.path.exists(os.path.join(box.dir, "maildirsize"))
    with open(os.path.join(box.dir, "maildirsize"), "w") as f:
        f.write("1000000S\n%d 1\n" % len(MSG2))
    r = box.session([b"DELE 1", b"QUIT"])
    assert r.stdout.endswith(b"+OK bye\r\n")
    with open(os.path.join(box.dir, "maildirsize")) as f:
        assert f.read() == "1000000S\n%d 1\n-%d -1\n" % (len(MSG2), len(MSG2))
    # A session that only reads changes nothing there.
    box.add(MSG1)
    box.session([b"RETR 1", b"QUIT"])
    with open(os.path.join(box.dir, "maildirsize")) as f:
        assert f.read().count("\n") == 3


# ---------------------------------------------------------------- issue 10's POP3 defects

def test_pipelined_input_with_a_nul_survives_the_login(box):
    """The pipelined rest of the input crosses to pop3-maildir whole, a NUL byte included:
    the line with the NUL is refused, the commands behind it are answered."""
    box.add(MSG1)
    r = box.session([b"NO\0OP", b"STAT", b"QUIT"])
    rs = replies(r.stdout)
    assert rs[0] == b"+OK send PASS" and rs[1].startswith(b"+OK 1 message")
    assert rs[2].startswith(b"-ERR"), rs
    assert rs[3] == b"+OK 1 %d" % (len(MSG1) + MSG1.count(b"\n"))
    assert rs[4] == b"+OK bye" and len(rs) == 5
    assert r.returncode == 0


def test_quit_releases_the_lock_before_answering(box, tmp_path):
    """The +OK to QUIT is written after the maildrop lock is released (seen in the order of
    the system calls), so a client that reconnects at once is never told [IN-USE]."""
    box.add(MSG1)
    log = tmp_path / "strace.log"
    e = dict(box.env)
    r = subprocess.run(["strace", "-f", "-qq", "-o", str(log), "-e", "trace=openat,close,write",
                        "-s", "64"] + box.argv(),
                       input=b"USER joe\r\nPASS " + PASSWORD.encode() + b"\r\nSTAT\r\nQUIT\r\n",
                       env=e, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert replies(r.stdout)[-1] == b"+OK bye"
    calls = log.read_text().splitlines()
    opened = [(i, l) for i, l in enumerate(calls) if '".pop3.lock"' in l and "openat(" in l]
    assert len(opened) == 1, opened
    i0, l0 = opened[0]
    pid = l0.split()[0]
    if "<unfinished" in l0:  # strace -f splits a call another process interrupted
        l0 = next(l for l in calls[i0 + 1:]
                  if l.split()[0] == pid and "<... openat resumed>" in l)
    fd = l0.rsplit("=", 1)[1].strip()
    closed = [i for i, l in enumerate(calls[i0:], i0)
              if l.split()[0] == pid
              and re.match(r"close\(%s[) ]" % fd, l.split(None, 1)[1])]
    bye = [i for i, l in enumerate(calls) if "+OK bye" in l and "write(" in l]
    assert closed and bye, (closed, bye)
    assert closed[0] < bye[0]
    # and functionally: reconnect as soon as +OK bye is read, many times
    for _ in range(30):
        c = Conversation(box)
        try:
            c.line()
            c.send(b"USER joe\r\nPASS " + PASSWORD.encode() + b"\r\n")
            assert c.line() == b"+OK send PASS"
            assert c.line().startswith(b"+OK 1 message")
            assert c.cmd(b"QUIT") == b"+OK bye"
            fd = os.open(os.path.join(box.dir, ".pop3.lock"), os.O_RDWR)
            try:
                import fcntl
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if still held
            finally:
                os.close(fd)
        finally:
            c.close()


def test_bad_commands_before_login_end_the_connection(box):
    """2,000 XYZZY before login: 20 refusals, then the connection is closed."""
    r = box.run(b"XYZZY\r\n" * 2000, env={"POP3_ALLOW_PLAINTEXT_AUTH": "0"})
    rs = replies(r.stdout)
    assert rs[:20] == [b"-ERR unknown command"] * 20
    assert rs[20:] == [b"-ERR too many bad commands, closing"]
    assert r.returncode == 0
    assert b"too many bad commands before login from 127.0.0.1" in r.stderr
    # every kind of refusal counts: unknown words, syntax, APOP, PASS without USER
    mix = [b"XYZZY", b"LIST 1", b"APOP a b", b"PASS x", b"USER " + b"x" * 50] * 4
    r = box.run(b"".join(c + b"\r\n" for c in mix) + b"CAPA\r\n")
    rs = replies(r.stdout)
    assert len(rs) == 21 and rs[-1] == b"-ERR too many bad commands, closing", rs
    # good commands do not count, and a client under the limit goes on
    r = box.session([b"NOOP"] * 19 + [b"QUIT"], login=False)
    assert replies(r.stdout)[-1] == b"+OK bye"
    r = box.run(b"XYZZY\r\n" * 19 + b"CAPA\r\n" * 50 + b"QUIT\r\n")
    assert replies(r.stdout)[-1] == b"+OK bye"


def test_logins_and_logouts_logged_with_ip_and_user(box):
    box.add(MSG1)
    r = box.session([b"QUIT"], env={"TCPREMOTEIP": "127.0.0.9"})
    assert b"pop3-serve: info: login joe from 127.0.0.9\n" in r.stderr
    assert b"pop3-serve: info: logout joe from 127.0.0.9 status 0\n" in r.stderr
    assert r.stderr.index(b"login joe") < r.stderr.index(b"logout joe")


def test_quit_deletions_refresh_the_quota_record(box):
    """What QUIT removes leaves the quota record smtp-receive reads at RCPT
    (MAILROOT/run/quota/USER, lib/quotastate) as well as maildirsize."""
    box.add(MSG1)
    box.add(MSG2)
    with open(os.path.join(box.dir, "maildirsize"), "w") as f:
        f.write("1000000S\n%d 2\n" % (len(MSG1) + len(MSG2)))
    rec = os.path.join(box.root, "run", "quota", "joe@example.test")
    assert not os.path.exists(rec)
    r = box.session([b"DELE 1", b"QUIT"])
    assert r.stdout.endswith(b"+OK bye\r\n"), r.stderr
    with open(rec) as f:
        fields = f.read().split()
    assert fields[:5] == ["PBQS1", str(len(MSG2)), "1", "1000000", "0"], fields


# ---- issue 10: login attempts counted before the check; the per-address connection cap ----

SLOWCHECK = r'''#!/usr/bin/python3
import os, sys, time
d = b""
while True:
    b = os.read(3, 1024)
    if not b:
        break
    d += b
time.sleep(float(os.environ.get("SLOW_DELAY", "0")))
with open(os.environ["SLOW_LOG"], "a") as f:
    f.write("check\n")
f = d.split(b"\0")
if len(f) >= 2 and f[0] == b"joe" and f[1] == os.environb[b"FAKE_PASS"]:
    os.environ["HOME"] = os.environ["FAKE_HOME"]
    os.environ["USER"] = "joe@example.test"
    os.execvp(sys.argv[1], sys.argv[1:])
sys.exit(1)
'''


def control(box, name, value):
    os.makedirs(os.path.join(box.root, "control"), exist_ok=True)
    with open(os.path.join(box.root, "control", name), "w") as f:
        f.write(value + "\n")


@pytest.fixture
def slowbox(box, tmp_path):
    """The box with a checkpassword stand-in that takes SLOW_DELAY seconds and logs each
    check in SLOW_LOG, so that parallel guesses overlap."""
    with open(box.check, "w") as f:
        f.write(SLOWCHECK)
    box.log = str(tmp_path / "checks")
    box.env["SLOW_LOG"] = box.log
    return box


def test_thirty_parallel_guesses_count_as_thirty(slowbox):
    """30 connections from one address each send one wrong password at once: the attempts are
    counted before the check, so only 11 (more than authfail-limit, 10, failures block) reach
    the password check; the other 19 are refused unchecked, and then so is the right
    password."""
    box = slowbox
    control(box, "pop3-peermax", "100")  # the connection cap alone would stop 20 of them
    env = dict(box.env, TCPREMOTEIP="127.0.0.9", SLOW_DELAY="1")
    procs = [subprocess.Popen(box.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, env=env) for _ in range(30)]
    outs = [None] * 30

    def talk(i):
        outs[i] = procs[i].communicate(b"USER joe\r\nPASS wrong\r\nQUIT\r\n", timeout=60)[0]
    ts = [threading.Thread(target=talk, args=(i,)) for i in range(30)]
    try:
        for t in ts:
            t.start()
        for t in ts:
            t.join(90)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    assert all(o is not None for o in outs)
    got = [replies(o)[1] if len(replies(o)) > 1 else replies(o) for o in outs]
    bad = [g for g in got if g == b"-ERR [AUTH] invalid user name or password"]
    refused = [g for g in got
               if g == b"-ERR [AUTH] too many failed logins from your address, try later"]
    assert len(bad) == 11 and len(refused) == 19, got
    with open(box.log) as f:
        assert f.read().count("check") == 11
    r = box.session([b"STAT", b"QUIT"], env={"TCPREMOTEIP": "127.0.0.9"})
    rs = replies(r.stdout)
    assert rs[1] == b"-ERR [AUTH] too many failed logins from your address, try later", rs
    assert not any(x.startswith(b"+OK 0 messages") for x in rs)
    # the limit is the address's: another one logs in
    r = box.session([b"QUIT"], env={"TCPREMOTEIP": "127.0.0.10"})
    assert replies(r.stdout)[1].startswith(b"+OK 0 messages"), r.stdout


def test_good_logins_do_not_count_against_the_address(slowbox):
    """A good login takes its attempt back: 15 in a row (over the limit of 10) all go in,
    by USER/PASS and by AUTH PLAIN."""
    good = base64.b64encode(b"\0joe\0" + PASSWORD.encode())
    for i in range(15):
        if i % 2:
            r = slowbox.run(b"AUTH PLAIN " + good + b"\r\nQUIT\r\n",
                            env={"TCPREMOTEIP": "127.0.0.11"})
            rs = replies(r.stdout)
            assert rs[0].startswith(b"+OK 0 messages"), rs
        else:
            r = slowbox.session([b"QUIT"], env={"TCPREMOTEIP": "127.0.0.11"})
            rs = replies(r.stdout)
            assert rs[1].startswith(b"+OK 0 messages"), rs


def test_someone_elses_authzid_counts_as_an_attempt(box):
    """AUTH PLAIN with another authzid is a failed login, counted like a wrong password: 11
    of them block the address (lib/saslserv names the authcid in the log)."""
    other = base64.b64encode(b"boss\0joe\0" + PASSWORD.encode())
    for _ in range(4):
        r = box.run((b"AUTH PLAIN " + other + b"\r\n") * 3, env={"TCPREMOTEIP": "127.0.0.12"})
        assert b"failed login for joe from 127.0.0.12" in r.stderr
    r = box.session([b"QUIT"], env={"TCPREMOTEIP": "127.0.0.12"})
    assert replies(r.stdout)[1].startswith(b"-ERR [AUTH] too many failed logins from your"), r


def test_per_address_connection_cap(box):
    """control/pop3-peermax connections from one address at once; the next gets -ERR before
    any command and is closed; another address, or the same after one left, is served."""
    control(box, "pop3-peermax", "2")
    held = [Conversation(box, env={"TCPREMOTEIP": "127.0.0.13"}) for _ in range(2)]
    try:
        for c in held:
            assert c.line().startswith(b"+OK")
        r = box.run(b"CAPA\r\nQUIT\r\n", env={"TCPREMOTEIP": "127.0.0.13"})
        assert r.stdout == (b"-ERR [SYS/TEMP] too many connections from your address, "
                            b"try later\r\n"), r.stdout
        assert b"too many connections from 127.0.0.13" in r.stderr
        r = box.session([b"QUIT"], env={"TCPREMOTEIP": "127.0.0.14"})
        assert replies(r.stdout)[1].startswith(b"+OK 0 messages")
        assert held[0].cmd(b"QUIT") == b"+OK bye"
        held[0].close()
        r = box.session([b"QUIT"], env={"TCPREMOTEIP": "127.0.0.13"})
        assert replies(r.stdout)[1].startswith(b"+OK 0 messages"), r.stdout
    finally:
        for c in held:
            c.close()
    # 0: no cap
    control(box, "pop3-peermax", "0")
    more = [Conversation(box, env={"TCPREMOTEIP": "127.0.0.13"}) for _ in range(4)]
    try:
        for c in more:
            assert c.line().startswith(b"+OK")
    finally:
        for c in more:
            c.close()
