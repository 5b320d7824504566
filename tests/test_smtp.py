"""smtp-receive, driven by piping sessions straight into it (fd 0/1, UCSPI variables set by
hand). Each test reads like the postmaster's session: the bytes sent, the replies expected, and
what must (or must not) be in the queue afterwards."""
import os
import re
import select
import socket
import subprocess
import time

import pytest

from conftest import base_env, prog, wait_for
from smtp_session import data, expect, script, send

REPLY = re.compile(rb"^(\d{3})([ -])(.*)$")


def replies(out):
    """Splits the server's output into complete replies: [(code, [lines])]."""
    res, cur = [], []
    for ln in out.split(b"\r\n"):
        if not ln:
            continue
        m = REPLY.match(ln)
        assert m, "not a reply line: %r" % ln
        cur.append(m.group(3))
        if m.group(2) == b" ":
            res.append((int(m.group(1)), cur))
            cur = []
    assert not cur, "unterminated multi-line reply"
    return res


def codes(out):
    return [c for c, _ in replies(out)]


def queue_files(inst):
    """Every regular file in the queue (a snapshot to compare before and after)."""
    found = set()
    for d, _, files in os.walk(inst.path("queue")):
        for f in files:
            p = os.path.join(d, f)
            if os.path.isfile(p) and not os.path.islink(p):
                found.add(p)
    return found


def maildir_files(inst):
    found = set()
    for d, _, files in os.walk(inst.path("mail")):
        for f in files:
            found.add(os.path.join(d, f))
    return found


def run(inst, data, env=None, timeout=60):
    e = {"TCPREMOTEIP": "192.0.2.7", "TCPLOCALIP": "192.0.2.1", "TCPREMOTEPORT": "40000"}
    e.update(env or {})
    r = inst.run("smtp-receive", input=data, env=e, timeout=timeout)
    return r


HELLO = (expect(None, 220), expect("EHLO client.example", 250))
BYE = expect("QUIT", 221)


def talk(inst, *steps, env=None):
    """The greeting, EHLO, the steps (each a command and the reply it must get), QUIT."""
    return script(inst, *HELLO, *steps, BYE, env=env)


def session(inst, *lines, env=None, raw=b""):
    """Sends EHLO, the given command lines (each gets CRLF), raw bytes, then QUIT."""
    data = b"EHLO client.example\r\n"
    for ln in lines:
        data += (ln.encode() if isinstance(ln, str) else ln) + b"\r\n"
    data += raw + b"QUIT\r\n"
    r = run(inst, data, env=env)
    return codes(r.stdout), r


@pytest.fixture
def inst(instance):
    instance.add_user("user@example.test")
    instance.add_user("other@example.test")
    return instance


@pytest.fixture
def fake_injector(tmp_path):
    """A qmail-queue stand-in: keeps the message and the envelope, exits with $FAKE_RC."""
    p = tmp_path / "fake-inject"
    p.write_text("""#!/usr/bin/python3
import os, sys
out = os.environ["FAKE_OUT"]
def slurp(fd):
    b = b""
    while True:
        c = os.read(fd, 65536)
        if not c:
            return b
        b += c
msg = slurp(0)
env = slurp(1)
with open(out + ".msg", "wb") as f: f.write(msg)
with open(out + ".env", "wb") as f: f.write(env)
rc = int(os.environ.get("FAKE_RC", "0"))
if rc == 0 and env.endswith(b"\\0\\0"):
    os.write(int(os.environ["QUEUE_IDFD"]), b"FAKE42\\n")
sys.exit(rc)
""")
    p.chmod(0o755)
    return str(p), str(tmp_path / "out")


MSG = b"From: a@b.example\r\nSubject: test\r\n\r\nhello\r\n..dotted\r\n.\r\n"


# ---- greeting, EHLO, the simple verbs ----

def test_greeting_and_ehlo_keywords(inst):
    r = run(inst, b"EHLO client.example\r\nQUIT\r\n")
    rs = replies(r.stdout)
    assert rs[0][0] == 220 and rs[0][1][0].startswith(b"mx.example.test ESMTP")
    assert rs[1][0] == 250
    kw = [l.split(b" ")[0] for l in rs[1][1][1:]]
    for k in (b"PIPELINING", b"SIZE", b"8BITMIME", b"ENHANCEDSTATUSCODES", b"SMTPUTF8",
              b"CHUNKING"):
        assert k in kw
    assert b"STARTTLS" not in kw  # no SSLCTLFD: no TLS to offer
    assert b"AUTH" not in kw      # no TLS: no AUTH
    assert rs[2] == (221, [b"2.0.0 Bye"])
    assert r.returncode == 0
    assert b"session ip=192.0.2.7" in r.stderr


def test_every_reply_after_ehlo_has_an_enhanced_code(inst):
    r = talk(inst, expect("NOOP", 250), expect("VRFY user", 252), expect("EXPN list", 502),
             expect("HELP", 214), expect("RSET", 250), expect("BOGUS", 500),
             expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<user@example.test>", 250),
             expect("RSET", 250))
    for code, lines in replies(r.stdout)[2:]:
        for l in lines:
            assert re.match(rb"^[245]\.\d{1,3}\.\d{1,3} ", l), (code, l)


def test_helo_and_lowercase_verbs(inst):
    script(inst, expect(None, 220), expect("helo client", 250),
           expect("mail from: <a@b.example>", 250), expect("rcpt to:<User@Example.TEST>", 250),
           expect("quit", 221))


# ---- command order and syntax ----

@pytest.mark.parametrize("steps", [
    [("RCPT TO:<user@example.test>", 503)],
    [("MAIL FROM:<a@b.example>", 250), ("DATA", 503)],
    [("MAIL FROM:<a@b.example>", 250), ("MAIL FROM:<a@b.example>", 503)],
    [("MAIL FROM:<a@b.example>", 250), ("RSET", 250), ("RCPT TO:<user@example.test>", 503)],
    [("DATA", 503)],
    [("BDAT 0 LAST", 503)],
], ids=["rcpt-before-mail", "data-without-rcpt", "mail-twice", "rcpt-after-rset",
        "data-first", "bdat-first"])
def test_command_order(inst, steps):
    talk(inst, *[expect(c, code, "5.5.1" if code == 503 else None) for c, code in steps])


def test_mail_before_ehlo(inst):
    script(inst, expect(None, 220), expect("MAIL FROM:<a@b.example>", 503, "5.5.1"), BYE)


@pytest.mark.parametrize("line,code", [
    ("MAIL FROM a@b.example", 501), ("MAIL FROM:a@b.example", 501), ("MAIL", 501),
    ("MAIL TO:<a@b.example>", 501), ("EHLO", 501), ("RSET now", 501), ("NOOP", 250),
    ("WHAT", 500), (b"NOOP \x00x", 501), (b"MAIL FROM:<a\x01@b.example>", 501),
    ("MAIL FROM:<a@b.example> FOO=BAR", 555), ("MAIL FROM:<a@b.example> BODY=BINARYMIME", 555),
    ("MAIL FROM:<a@b.example> SIZE=x", 501), ("MAIL FROM:<a@b.example> BODY=8BITMIME", 250),
    ("MAIL FROM:<a@b.example> AUTH=<>", 250), ("MAIL FROM:<a@b.example> body=7bit size=10", 250),
    ("STARTTLS", 502), ("AUTH PLAIN", 530),
])
def test_syntax(inst, line, code):
    talk(inst, expect(line, code))


def test_data_with_argument(inst):
    talk(inst, expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<user@example.test>", 250),
         expect("DATA now", 501, "5.5.4"))


# ---- the address corpus ----

LOCAL64 = "l" * 64
DOM255 = ".".join(["d" * 63, "d" * 63, "d" * 63, "d" * 61 + ".t"])[:253] + "xt"


@pytest.mark.parametrize("path,code", [
    ("<>", 250),
    ("<a>", 501),
    ("<a@>", 501),
    ("<@a>", 501),
    ("< a@b.example>", 501),
    ("<a@b.example >", 501),
    ("<@relay.example:a@b.example>", 250),      # source route accepted and dropped
    ("<@r1.example,@r2.example:a@b.example>", 250),
    ('<"a b"@b.example>', 250),
    ('<"a@c.example"@b.example>', 250),
    ("<a@[192.0.2.1]>", 250),
    ("<a@b.example.>", 501),
    ("<%s@b.example>" % LOCAL64, 250),
    ("<%s@b.example>" % ("l" * 65), 501),
    ("<;sleep 5;@x.example>", 501),             # ';' is not atext
    ("<$(reboot)@x.example>", 501),
    ("<$x|y&z`id`{}@x.example>", 250),          # atext, just bytes: never given to a shell
    ("<a@b.example", 501),
    ("a@b.example>", 501),
    ("<<a@b.example>>", 501),
])
def test_sender_address_corpus(inst, path, code):
    talk(inst, expect("MAIL FROM:" + path, code))


@pytest.mark.parametrize("n,why", [(255, b"path too long"), (256, b"domain too long")])
def test_domain_length_limit(inst, n, why):
    """255 octets of domain is the domain limit; in a path it is over the 256-octet path limit
    (RFC 5321 4.5.3.1), one more is over the domain limit itself: the reply says which."""
    labels, left = [], n
    while left > 0:
        l = min(63, left)
        if left - l == 1:
            l -= 1
        labels.append("d" * l)
        left -= l + 1
    dom = ".".join(labels)
    assert len(dom) == n
    talk(inst, expect("MAIL FROM:<a@%s>" % dom, 501, b"5.1.7 " + why))


def test_path_limit_256(inst):
    # a path of exactly 256 octets including the brackets is accepted, 257 is not
    dom = "x" * 60 + "." + "y" * 60 + "." + "z" * 60 + "."
    local = "l" * 64
    for total, code in ((256, 250), (257, 501)):
        d = dom + "e" * (total - 2 - len(local) - 1 - len(dom))
        path = "<%s@%s>" % (local, d)
        assert len(path) == total
        talk(inst, expect("MAIL FROM:" + path, code))


def test_nul_in_address(inst):
    talk(inst, expect(b"MAIL FROM:<a\x00b@b.example>", 501), expect("MAIL FROM:<a@b.example>", 250))


def test_utf8_address_needs_smtputf8(inst):
    talk(inst, expect("MAIL FROM:<j\u00f6rg@b.example>", 501),
         expect("MAIL FROM:<j\u00f6rg@b.example> SMTPUTF8", 250))


def test_rcpt_unknown_parameter(inst):
    talk(inst, expect("MAIL FROM:<a@b.example>", 250),
         expect("RCPT TO:<user@example.test> NOTIFY=NEVER", 555, "5.5.4"))


# ---- recipients: local, unknown, relay ----

def test_unknown_local_recipient_refused_at_rcpt(inst):
    before = queue_files(inst)
    talk(inst, expect("MAIL FROM:<a@b.example>", 250),
         expect("RCPT TO:<nobody@example.test>", 550, "5.1.1"),
         expect("RCPT TO:<user@example.test>", 250))
    assert queue_files(inst) == before  # and so no bounce either


def test_postmaster_without_domain(inst):
    inst.add_alias("postmaster@example.test", "user@example.test")
    talk(inst, expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<Postmaster>", 250))


RELAY_FORMS = [
    "<x@elsewhere.example>",
    "<x%elsewhere.example@example.test>",        # percent hack
    "<elsewhere.example!x@example.test>",         # bang path
    "<@example.test:x@elsewhere.example>",        # source route through us
    '<"x@elsewhere.example"@example.test>',       # quoted local part holding @
    "<x@[192.0.2.99]>",                           # address literal
    "<x@elsewhere.example.>",                     # trailing dot
    "<x@example.test.elsewhere.example>",
    "<x@EXAMPLE.test@elsewhere.example>",
    "<x@elsewhere.example> ",
]


@pytest.mark.parametrize("path", RELAY_FORMS)
def test_relay_attempts_refused(inst, path):
    before = queue_files(inst)
    c, r = session(inst, "MAIL FROM:<a@b.example>", "RCPT TO:" + path, "DATA",
                   raw=b"Subject: relay\r\n\r\nx\r\n.\r\n")
    assert c[3] in (501, 550, 553, 554), (path, r.stdout)
    assert 354 not in c
    assert queue_files(inst) == before


def test_relay_refused_code_is_554_571(inst):
    talk(inst, expect("MAIL FROM:<a@b.example>", 250),
         expect("RCPT TO:<x@elsewhere.example>", 554, "5.7.1"))


def test_relay_allowed_for_relayclient(inst):
    before = queue_files(inst)
    talk(inst, expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<x@elsewhere.example>", 250),
         expect("DATA", 354), data(MSG, 250, "2.0.0 Ok: queued"), env={"RELAYCLIENT": ""})
    assert len(queue_files(inst) - before) >= 1


# ---- messages into the real queue ----

def test_message_queued_with_lf_and_unstuffed(inst):
    before = queue_files(inst)
    r = talk(inst, expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<user@example.test>", 250),
             expect("DATA", 354), data(MSG, 250, "2.0.0 Ok: queued"))
    new = queue_files(inst) - before
    assert new
    blob = b"".join(open(p, "rb").read() for p in new)
    assert b"\nhello\n.dotted\n" in blob
    assert b"\r\n" not in blob.split(b"Subject: test", 1)[1]
    assert b"Received: from client.example ([192.0.2.7])" in blob
    assert b"message ip=192.0.2.7 from=<a@b.example> rcpts=1" in r.stderr


def test_pipelined_messages_in_one_session(inst):
    before = queue_files(inst)
    one = (expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<user@example.test>", 250),
           expect("DATA", 354), data(MSG, 250, "2.0.0 Ok: queued"))
    talk(inst, *one * 5)
    assert len(queue_files(inst) - before) >= 5


def test_bdat_chunks(inst, fake_injector):
    inj, out = fake_injector
    talk(inst, expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<user@example.test>", 250),
         data(b"BDAT 10\r\nSubject: x", 250, "2.0.0 10 octets received"),
         data(b"BDAT 10\r\n\r\n\r\n.line\r", 250, "2.0.0 10 octets received"),
         data(b"BDAT 1 LAST\r\n\n", 250, "2.0.0 Ok: queued as FAKE42"),
         env={"QUEUE_INJECT": inj, "FAKE_OUT": out})
    msg = open(out + ".msg", "rb").read()
    assert msg.endswith(b"Subject: x\n\n.line\n")
    assert open(out + ".env", "rb").read() == b"Fa@b.example\0Tuser@example.test\0\0"


def test_bdat_bare_lf_refused(inst, fake_injector):
    inj, out = fake_injector
    talk(inst, expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<user@example.test>", 250),
         data(b"BDAT 4 LAST\r\na\nb\n", 550, "5.6.0"), env={"QUEUE_INJECT": inj, "FAKE_OUT": out})
    assert not os.path.exists(out + ".env") or not open(out + ".env", "rb").read()


def test_bdat_bad_size_closes(inst):
    script(inst, *HELLO, expect("BDAT x", 421, "4.5.4"), send(b"NOOP\r\n"))


# ---- end-of-data smuggling ----

SMUGGLE = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r", b"\r.\n"]


@pytest.mark.parametrize("eod", SMUGGLE, ids=[repr(s) for s in SMUGGLE])
def test_smuggling_never_queues_a_second_message(inst, eod):
    before_q, before_m = queue_files(inst), maildir_files(inst)
    second = (b"MAIL FROM:<evil@b.example>\r\nRCPT TO:<other@example.test>\r\nDATA\r\n"
              b"Subject: smuggled\r\n\r\nsmuggled\r\n")
    # one DATA, refused as a whole; nothing ever said "queued"
    r = talk(inst, expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<user@example.test>", 250),
             expect("DATA", 354),
             data(b"Subject: first\r\n\r\nfirst" + eod + second + b".\r\n", 550, "5.6.0"))
    assert b"Ok: queued" not in r.stdout
    assert queue_files(inst) == before_q
    assert maildir_files(inst) == before_m


# ---- limits ----

def test_oversize_command_line_resyncs(inst):
    talk(inst, expect("NOOP " + "x" * 5000, 500, "5.5.2"), expect("NOOP", 250))


def test_ten_megabyte_line_in_data(inst, fake_injector):
    inj, out = fake_injector
    body = b"Subject: big\r\n\r\n" + b"x" * (10 * 1024 * 1024) + b"\r\n.\r\n"
    talk(inst, expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<user@example.test>", 250),
         expect("DATA", 354), data(body, 250), env={"QUEUE_INJECT": inj, "FAKE_OUT": out})
    assert os.path.getsize(out + ".msg") > 10 * 1024 * 1024


def test_size_limits(inst):
    inst.control("databytes", "1000")
    before = queue_files(inst)
    r = talk(inst, expect("MAIL FROM:<a@b.example> SIZE=2000", 552, "5.3.4"),
             expect("MAIL FROM:<a@b.example> SIZE=500", 250),
             expect("RCPT TO:<user@example.test>", 250), expect("DATA", 354),
             data(b"Subject: big\r\n\r\n" + b"y" * 2000 + b"\r\n.\r\n", 552, "5.3.4"))
    assert b"SIZE 1000" in r.stdout
    assert queue_files(inst) == before


@pytest.mark.parametrize("n", [101, 1000])
def test_recipient_limit(inst, fake_injector, n):
    inj, out = fake_injector
    rc = [expect("RCPT TO:<user+%d@example.test>" % i, 250 if i < 100 else 452,
                 None if i < 100 else "4.5.3") for i in range(n)]
    talk(inst, expect("MAIL FROM:<a@b.example>", 250), *rc, expect("DATA", 354), data(MSG, 250),
         env={"QUEUE_INJECT": inj, "FAKE_OUT": out})
    assert open(out + ".env", "rb").read().count(b"\0T") == 100


def test_too_many_errors(inst):
    script(inst, *HELLO, *[expect("BOGUS", 500, "5.5.1")] * 21, expect("BOGUS", 421, "4.7.0"),
           send(b"BOGUS\r\n" * 8 + b"NOOP\r\n"))


def test_idle_timeout(inst):
    inst.control("smtp-timeout", "1")
    e = dict(inst.env, TCPREMOTEIP="192.0.2.7")
    p = subprocess.Popen([prog("smtp-receive")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=e)
    try:
        p.stdin.write(b"EHLO c\r\n")
        p.stdin.flush()
        t0 = time.monotonic()
        out = b""
        while b"421 " not in out and time.monotonic() - t0 < 10:
            r, _, _ = select.select([p.stdout], [], [], 0.2)
            if r:
                c = os.read(p.stdout.fileno(), 4096)
                if not c:
                    break
                out += c
        assert time.monotonic() - t0 < 10
        assert p.wait(timeout=10) == 0
        assert codes(out)[-1] == 421 and b"421 4.4.2" in out
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_disconnect_mid_data_queues_nothing(inst):
    before = queue_files(inst)
    e = dict(inst.env, TCPREMOTEIP="192.0.2.7")
    p = subprocess.Popen([prog("smtp-receive")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=e)
    try:
        p.stdin.write(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<user@example.test>\r\n"
                      b"DATA\r\nSubject: cut\r\n\r\nhalf a mess")
        p.stdin.close()
        out = p.stdout.read()
        assert p.wait(timeout=30) == 0
        assert codes(out)[-1] == 354
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert queue_files(inst) == before


@pytest.mark.parametrize("rc,code,ecode", [(0, 250, b"2.0.0"), (53, 451, b"4.3.0"),
                                           (71, 451, b"4.3.0"), (31, 554, b"5.3.0"),
                                           (91, 554, b"5.3.0")])
def test_injector_exit_codes(inst, fake_injector, rc, code, ecode):
    inj, out = fake_injector
    talk(inst, expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<user@example.test>", 250),
         expect("DATA", 354), data(MSG, code, ecode),
         env={"QUEUE_INJECT": inj, "FAKE_OUT": out, "FAKE_RC": str(rc)})
    # the envelope is written only for a complete, valid message
    assert open(out + ".env", "rb").read() == b"Fa@b.example\0Tuser@example.test\0\0"


def test_injector_hook_chain(inst, fake_injector, tmp_path):
    inj, out = fake_injector
    hook = tmp_path / "hook"
    hook.write_text("#!/bin/sh\necho hooked >> %s\nexec \"$@\"\n" % (tmp_path / "hooklog"))
    hook.chmod(0o755)
    talk(inst, expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<user@example.test>", 250),
         expect("DATA", 354), data(MSG, 250, "2.0.0 Ok: queued as FAKE42"),
         env={"QUEUE_INJECT": "%s %s" % (hook, inj), "FAKE_OUT": out})
    assert (tmp_path / "hooklog").read_text() == "hooked\n"


def test_injector_missing_is_temporary(inst):
    """The injector cannot be started: DATA itself gets 451, and the body that the client
    pipelined behind it is then read as commands (each refused: nothing queued)."""
    before = queue_files(inst)
    r = talk(inst, expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<user@example.test>", 250),
             expect("DATA", 451, "4.3.0"), expect("Subject: x", 500), expect("", 500),
             expect(".", 500), env={"QUEUE_INJECT": "/nonexistent/inject"})
    assert b"250 2.0.0" not in r.stdout
    assert queue_files(inst) == before


def test_received_line_helo_made_safe(inst, fake_injector):
    inj, out = fake_injector
    script(inst, expect(None, 220), expect(b"EHLO evil\"host;(x)", 250),
           expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<user@example.test>", 250),
           expect("DATA", 354), data(MSG, 250), BYE, env={"QUEUE_INJECT": inj, "FAKE_OUT": out})
    msg = open(out + ".msg", "rb").read()
    first = msg.split(b"\n\t")[0]
    assert first == b"Received: from evil?host??x? ([192.0.2.7])"
    assert b"with ESMTP" in msg.split(b"\n")[1]


# ---- AUTH and the submission policy (plaintext allowed explicitly, a stand-in auth-check) ----

@pytest.fixture
def fake_auth(tmp_path):
    """auth-check stand-in: user@example.test / secret is good, 'trouble' is temporary."""
    p = tmp_path / "fake-auth"
    p.write_text("""#!/usr/bin/python3
import os, sys
d = b""
while True:
    c = os.read(3, 600)
    if not c:
        break
    d += c
f = d.split(b"\\0")
if f[0] == b"trouble":
    sys.exit(111)
sys.exit(0 if f[0].lower() == b"user@example.test" and f[1] == b"secret" else 1)
""")
    p.chmod(0o755)
    return str(p)


def b64(s):
    import base64
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def auth_env(fake_auth, **kw):
    """AUTH in clear: allowed by SMTPAUTH_PLAINTEXT, for a loopback peer only."""
    e = {"SMTPAUTH_PLAINTEXT": "1", "AUTH_CHECK": fake_auth, "TCPREMOTEIP": "127.0.0.1"}
    e.update(kw)
    return e


def test_auth_offered_only_with_tls_or_explicit_setting(inst, fake_auth):
    r = run(inst, b"EHLO c\r\nQUIT\r\n", env=auth_env(fake_auth))
    assert b"250-AUTH PLAIN LOGIN" in r.stdout
    # the setting does nothing for a peer that is not on loopback
    r = run(inst, b"EHLO c\r\nAUTH PLAIN " + b64("\0user@example.test\0secret").encode() +
            b"\r\nQUIT\r\n", env=auth_env(fake_auth, TCPREMOTEIP="192.0.2.7"))
    assert b"AUTH" not in replies(r.stdout)[1][1][-1] and b"250-AUTH" not in r.stdout
    assert b"530 5.7.0" in r.stdout


def test_auth_plain_and_relay(inst, fake_auth, fake_injector):
    inj, out = fake_injector
    # issue 10: an authenticated user's From: must be theirs too
    talk(inst, expect("AUTH PLAIN " + b64("\0user@example.test\0secret"), 235, "2.7.0"),
         expect("MAIL FROM:<user@example.test>", 250), expect("RCPT TO:<x@elsewhere.example>", 250),
         expect("DATA", 354), data(MSG.replace(b"a@b.example", b"user@example.test"), 250),
         env=auth_env(fake_auth, QUEUE_INJECT=inj, FAKE_OUT=out))
    assert b"with ESMTPA" in open(out + ".msg", "rb").read()


def test_auth_plain_without_initial_response(inst, fake_auth):
    talk(inst, expect("AUTH PLAIN", 334), expect(b64("user@example.test\0user@example.test\0secret"), 235),
         env=auth_env(fake_auth))


def test_auth_login(inst, fake_auth):
    talk(inst, expect("AUTH LOGIN", 334, "VXNlcm5hbWU6"),
         expect(b64("user@example.test"), 334, "UGFzc3dvcmQ6"), expect(b64("secret"), 235),
         env=auth_env(fake_auth))


@pytest.mark.parametrize("steps", [
    [("AUTH PLAIN " + b64("\0user@example.test\0wrong"), 535, "5.7.8")],
    [("AUTH PLAIN " + b64("\0trouble\0x"), 454, "4.7.0")],
    [("AUTH PLAIN !!!!", 501, "5.5.2")],
    [("AUTH PLAIN", 334, None), ("*", 501, "5.7.0")],
    [("AUTH LOGIN", 334, None), ("*", 501, "5.7.0")],
    [("AUTH CRAM-MD5", 504, "5.5.4")],
    [("AUTH PLAIN " + b64("other@example.test\0user@example.test\0secret"), 535, "5.7.8")],
    [("AUTH PLAIN", 334, None), ("QUFB" * 600, 500, "5.5.6")],
    [("AUTH PLAIN " + b64("\0user@example.test\0secret"), 235, "2.7.0"), ("AUTH PLAIN x", 503, "5.5.1")],
    [("MAIL FROM:<a@b.example>", 250, None),
     ("AUTH PLAIN " + b64("\0user@example.test\0secret"), 503, "5.5.1")],
], ids=["bad", "temp", "base64", "cancel-plain", "cancel-login", "mech", "authzid", "toolong",
        "twice", "in-transaction"])
def test_auth_replies(inst, fake_auth, steps):
    inst.control("smtp-authdelay", "0")
    talk(inst, *[expect(c, code, text) for c, code, text in steps], env=auth_env(fake_auth))


def test_auth_three_failures_close(inst, fake_auth):
    inst.control("smtp-authdelay", "0")
    bad = "AUTH PLAIN " + b64("\0user@example.test\0wrong")
    script(inst, *HELLO, expect(bad, 535), expect(bad, 535), expect(bad, 535),
           expect(None, 421, "4.7.0"), send(b"NOOP\r\nQUIT\r\n"), env=auth_env(fake_auth))


def test_auth_brute_force_blocks_the_address(inst, fake_auth):
    inst.control("smtp-authdelay", "0")
    bad = "AUTH PLAIN " + b64("\0user@example.test\0wrong")
    good = "AUTH PLAIN " + b64("\0user@example.test\0secret")
    env = auth_env(fake_auth, TCPREMOTEIP="127.0.0.66")
    for _ in range(4):
        session(inst, bad, bad, bad, env=env)
    talk(inst, expect(good, 454, "4.7.0"), env=env)
    talk(inst, expect(good, 235), env=auth_env(fake_auth, TCPREMOTEIP="127.0.0.67"))


def test_submission_requires_auth(inst, fake_auth):
    talk(inst, expect("MAIL FROM:<user@example.test>", 530, "5.7.0"),
         expect("AUTH PLAIN " + b64("\0user@example.test\0secret"), 235),
         expect("MAIL FROM:<other@example.test>", 553, "5.7.1"),
         expect("MAIL FROM:<user+tag@example.test>", 250),
         env=auth_env(fake_auth, SMTPAUTH="1"))


def test_submission_without_tls_says_starttls_first(inst, fake_auth):
    talk(inst, expect("MAIL FROM:<user@example.test>", 530, "5.7.0"),
         expect("AUTH PLAIN x", 530, "5.7.0"), env={"SMTPAUTH": "1", "AUTH_CHECK": fake_auth})


# ---- STARTTLS with a stand-in UCSPI-TLS sidecar ----

class FakeSidecar:
    """The sidecar's side of UCSPI-TLS without TLS: on 'Y' it sends the TLS facts and then
    relays plaintext through the SSLREADFD / SSLWRITEFD pipes, so the test sees what the
    program does after the switch."""

    def __init__(self, inst, env=None, fail=False):
        self.ctl_parent, ctl_child = socket.socketpair()
        self.rd_child, self.rd_parent = os.pipe()   # program reads SSLREADFD
        self.wr_parent, self.wr_child = os.pipe()   # program writes SSLWRITEFD
        e = dict(inst.env, TCPREMOTEIP="192.0.2.7", SSLCTLFD="3", SSLREADFD="4", SSLWRITEFD="5")
        e.update(env or {})
        fds = {3: ctl_child.fileno(), 4: self.rd_child, 5: self.wr_child}

        def setup():
            high = {t: 100 + t for t in fds}
            for t, fd in fds.items():
                os.dup2(fd, high[t])
            for t in fds:
                os.dup2(high[t], t)
        # close_fds=False: Popen would close 3..5 after setup() otherwise
        self.p = subprocess.Popen([prog("smtp-receive")], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e,
                                  preexec_fn=setup, close_fds=False)
        ctl_child.close()
        os.close(self.rd_child)
        os.close(self.wr_child)
        if fail:
            self.ctl_parent.close()

    def read_plain(self, until, timeout=10):
        buf = b""
        deadline = time.monotonic() + timeout
        while until not in buf or not buf.endswith(b"\r\n"):
            assert time.monotonic() < deadline, buf
            r, _, _ = select.select([self.p.stdout], [], [], 0.2)
            if r:
                c = os.read(self.p.stdout.fileno(), 65536)
                if not c:
                    break
                buf += c
        return buf

    def start_tls(self):
        c = self.ctl_parent.recv(1)
        assert c == b"Y"
        self.ctl_parent.sendall(b"SSL_PROTOCOL=TLSv1.2\0SSL_CIPHER=FAKE-AES128-GCM\0\0")
        self.ctl_parent.close()

    def read_tls(self, until, timeout=10):
        buf = b""
        deadline = time.monotonic() + timeout
        while until not in buf or not buf.endswith(b"\r\n"):
            assert time.monotonic() < deadline, buf
            r, _, _ = select.select([self.wr_parent], [], [], 0.2)
            if r:
                c = os.read(self.wr_parent, 65536)
                if not c:
                    break
                buf += c
        return buf

    def close(self):
        for f in (self.rd_parent, self.wr_parent):
            try:
                os.close(f)
            except OSError:
                pass
        try:
            self.ctl_parent.close()
        except OSError:
            pass
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(timeout=10)
        self.p.stdin.close()
        self.p.stdout.close()
        self.p.stderr.close()


def test_starttls_discards_pipelined_plaintext_and_resets(inst):
    s = FakeSidecar(inst)
    try:
        s.p.stdin.write(b"EHLO c\r\n")
        s.p.stdin.flush()
        ehlo = s.read_plain(b"250 ")
        assert b"250-STARTTLS" in ehlo
        s.p.stdin.write(b"MAIL FROM:<a@b.example>\r\nRSET\r\nSTARTTLS\r\nEHLO injected\r\n"
                        b"MAIL FROM:<evil@b.example>\r\n")
        s.p.stdin.flush()
        got = s.read_plain(b"220 2.0.0")
        assert got.endswith(b"220 2.0.0 Ready to start TLS\r\n")
        s.start_tls()
        # nothing pipelined before the handshake gets an answer inside TLS; state is reset
        os.write(s.rd_parent, b"MAIL FROM:<a@b.example>\r\nSTARTTLS\r\nSTARTTLS x\r\nEHLO c2\r\n")
        got = s.read_tls(b"250 ENHANCED")
        rs = codes(got)
        assert rs[:3] == [503, 554, 501], got
        assert b"injected" not in got and b"STARTTLS" not in got.split(b"250-", 1)[1]
        assert b"554 5.5.1" in got and b"501 5.5.4" in got
        os.write(s.rd_parent, b"QUIT\r\n")
        assert b"221" in s.read_tls(b"221")
    finally:
        s.close()


def test_starttls_failed_sidecar(inst):
    s = FakeSidecar(inst, fail=True)
    try:
        s.p.stdin.write(b"EHLO c\r\nSTARTTLS\r\nQUIT\r\n")
        s.p.stdin.flush()
        got = s.read_plain(b"221")
        assert b"454 4.7.0" in got
    finally:
        s.close()


def test_submission_over_starttls(inst, fake_auth):
    s = FakeSidecar(inst, env={"SMTPAUTH": "1", "AUTH_CHECK": fake_auth})
    try:
        s.p.stdin.write(b"EHLO c\r\n")
        s.p.stdin.flush()
        ehlo = s.read_plain(b"250 ")
        assert b"AUTH" not in ehlo
        s.p.stdin.write(b"MAIL FROM:<user@example.test>\r\nSTARTTLS\r\n")
        s.p.stdin.flush()
        got = s.read_plain(b"220 2.0.0")
        assert b"530 5.7.0" in got
        s.start_tls()
        os.write(s.rd_parent, b"EHLO c\r\n")
        got = s.read_tls(b"250 ")
        assert b"250-AUTH PLAIN LOGIN" in got
        os.write(s.rd_parent, ("AUTH PLAIN %s\r\nQUIT\r\n" % b64("\0user@example.test\0secret")).encode())
        got = s.read_tls(b"221")
        assert b"235 2.7.0" in got
    finally:
        s.close()


def test_auth_with_the_real_auth_check(inst):
    """The same exchange through bin/auth-check and users.cdb (conftest's password: secret)."""
    inst.control("smtp-authdelay", "0")
    r = talk(inst, expect("AUTH PLAIN " + b64("\0user@example.test\0wrong"), 535, "5.7.8"),
             expect("AUTH PLAIN " + b64("\0User@Example.test\0secret"), 235),
             expect("MAIL FROM:<user@example.test>", 250),
             expect("RCPT TO:<x@elsewhere.example>", 250),
             env={"SMTPAUTH_PLAINTEXT": "1", "SMTPAUTH": "1", "TCPREMOTEIP": "127.0.0.1"})
    assert b"auth ok ip=127.0.0.1 user=user@example.test" in r.stderr


def test_received_protocol_names(inst, fake_injector):
    inj, out = fake_injector
    env = {"QUEUE_INJECT": inj, "FAKE_OUT": out}
    for hello, param, proto in ((b"HELO", b"", b"SMTP"), (b"EHLO", b"", b"ESMTP"),
                                (b"EHLO", b" SMTPUTF8", b"UTF8SMTP")):
        script(inst, expect(None, 220), expect(hello + b" c", 250),
               expect(b"MAIL FROM:<a@b.example>" + param, 250),
               expect("RCPT TO:<user@example.test>", 250), expect("DATA", 354), data(MSG, 250),
               BYE, env=env)
        assert b" with %s\n" % proto in open(out + ".msg", "rb").read()


def test_duplicate_recipient_is_one(inst, fake_injector):
    inj, out = fake_injector
    talk(inst, expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<user@example.test>", 250),
         expect("RCPT TO:<USER@example.test>", 250, "2.1.5 Ok (duplicate)"), expect("DATA", 354),
         data(MSG, 250), env={"QUEUE_INJECT": inj, "FAKE_OUT": out})
    assert open(out + ".env", "rb").read() == b"Fa@b.example\0Tuser@example.test\0\0"


# ---- loops: Received: lines are counted (control/hop-limit, default 100) ----

def received(n):
    return b"".join(b"Received: from hop%d.example by x; Thu, 1 Jan 2026 00:00:00 +0000\r\n" % i
                    for i in range(n))


def data_session(inst, message, env=None, rcpt="user@example.test"):
    """One DATA transaction; message is the raw DATA payload ending in CRLF.CRLF."""
    return session(inst, "MAIL FROM:<a@b.example>", "RCPT TO:<%s>" % rcpt, "DATA",
                   raw=message, env=env)


def one_message(inst, message, code, text=None, env=None, rcpt="user@example.test"):
    """One DATA transaction whose end of data must get code."""
    return talk(inst, expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<%s>" % rcpt, 250),
                expect("DATA", 354), data(message, code, text), env=env)


@pytest.mark.parametrize("n,code", [(0, 250), (99, 250), (100, 554), (516, 554)])
def test_hop_limit_default(inst, n, code):
    """A message already carrying 100 Received: fields would carry 101 with ours: refused after
    the end of data with 554 5.4.6, and nothing is queued."""
    before = queue_files(inst)
    r = one_message(inst, received(n) + b"Subject: loop\r\n\r\nbody\r\n.\r\n", code,
                    "5.4.6 too many hops, mail loop" if code == 554 else "2.0.0 Ok: queued")
    if code == 554:
        assert queue_files(inst) == before
        assert b"result=554-too-many-hops" in r.stderr
    else:
        assert len(queue_files(inst) - before) >= 1


def test_hop_limit_counts_header_fields_only(inst, fake_injector):
    """Any case, 'Received :' (obsolete syntax) counts; Received-SPF, X-Received, folded
    continuation lines and Received: lines in the body do not."""
    inj, out = fake_injector
    inst.control("hop-limit", "3")
    env = {"QUEUE_INJECT": inj, "FAKE_OUT": out}
    ok = (b"received: a\r\nRECEIVED : b\r\nReceived-SPF: pass\r\nX-Received: c\r\n"
          b"Subject: x\r\n Received: folded\r\n\r\n" + received(50) + b".\r\n")
    one_message(inst, ok, 250, env=env)
    one_message(inst, b"Received: 1\r\nreceived: 2\r\nReceived\t: 3\r\n\r\nx\r\n.\r\n", 554, "5.4.6",
                env=env)


def test_hop_limit_bdat(inst, fake_injector):
    inj, out = fake_injector
    inst.control("hop-limit", "2")
    msg = b"Received: a\r\nReceived: b\r\n\r\nx\r\n"
    half = len(msg) // 2   # the field names are split over two chunks
    talk(inst, expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<user@example.test>", 250),
         data(b"BDAT %d\r\n" % half + msg[:half], 250),
         data(b"BDAT %d LAST\r\n" % (len(msg) - half) + msg[half:], 554, "5.4.6"),
         env={"QUEUE_INJECT": inj, "FAKE_OUT": out})
    assert not os.path.exists(out + ".env") or not open(out + ".env", "rb").read()


def test_forwarding_loop_stops_at_the_hop_limit(inst, fake_injector):
    """Two MTAs forwarding to each other: what one queues (with its Received: line) is what the
    other receives. The loop ends after exactly hop-limit hops."""
    inj, out = fake_injector
    inst.control("hop-limit", "12")
    env = {"QUEUE_INJECT": inj, "FAKE_OUT": out, "RELAYCLIENT": ""}
    msg = b"From: a@b.example\nSubject: ping-pong\n\nlooping\n"
    for hop in range(12):
        wire = msg.replace(b"\n", b"\r\n") + b".\r\n"
        one_message(inst, wire, 250, env=env, rcpt="x@elsewhere.example")
        msg = open(out + ".msg", "rb").read()
    assert msg.count(b"\nReceived: ") + msg.startswith(b"Received: ") == 12
    one_message(inst, msg.replace(b"\n", b"\r\n") + b".\r\n", 554, "5.4.6", env=env,
                rcpt="x@elsewhere.example")


# ---- duplicates: a remote local part is case-sensitive (RFC 5321 2.4) ----

def queued_recipients(inst):
    r = inst.run("queue-list", "-j")
    assert r.returncode == 0, r.stderr
    import json
    out = []
    for l in r.stdout.decode().splitlines():
        out.append(json.loads(l))
    return out


def test_remote_recipients_differing_in_case_are_both_kept(inst, fake_injector):
    inj, out = fake_injector
    talk(inst, expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<Joe@remote.test>", 250, "2.1.5 Ok"),
         expect("RCPT TO:<joe@remote.test>", 250, "2.1.5 Ok"),
         expect("RCPT TO:<Joe@REMOTE.test>", 250, "2.1.5 Ok (duplicate)"),
         expect("RCPT TO:<joe@remote.test>", 250, "2.1.5 Ok (duplicate)"), expect("DATA", 354),
         data(MSG, 250), env={"QUEUE_INJECT": inj, "FAKE_OUT": out, "RELAYCLIENT": ""})
    assert open(out + ".env", "rb").read() == \
        b"Fa@b.example\0TJoe@remote.test\0Tjoe@remote.test\0\0"


def test_remote_case_variants_reach_the_real_queue(inst):
    before = queue_files(inst)
    talk(inst, expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<Joe@remote.test>", 250),
         expect("RCPT TO:<joe@remote.test>", 250), expect("RCPT TO:<USER@example.test>", 250),
         expect("RCPT TO:<user@Example.Test>", 250, "2.1.5 Ok (duplicate)"), expect("DATA", 354),
         data(MSG, 250), env={"RELAYCLIENT": ""})
    assert len(queue_files(inst) - before) >= 1
    text = repr(queued_recipients(inst))
    assert "Joe@remote.test" in text and "joe@remote.test" in text
    # the local one (any case) is one recipient
    assert text.lower().count("user@example.test") == 1


# ---- "250" only when the injector had the whole message and envelope ----

def hook(tmp_path, name, body):
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(0o755)
    return str(p)


@pytest.mark.parametrize("size", [10, 300 * 1024])
def test_injector_true_is_not_a_queue(inst, size):
    """QUEUE_INJECT=true exits 0 without reading anything: 451, whatever the size (a big message
    must not wait for the idle timeout either)."""
    inst.control("smtp-timeout", "60")
    t0 = time.monotonic()
    r = one_message(inst, b"Subject: x\r\n\r\n" + b"y" * size + b"\r\n.\r\n", 451, "4.3.0",
                    env={"QUEUE_INJECT": "true"})
    assert time.monotonic() - t0 < 30
    assert b"result=451-injector-did-not-read" in r.stderr


@pytest.mark.parametrize("body", [
    "exit 0",                                           # reads nothing
    "head -c 5 >/dev/null; exit 0",                     # part of the message
    "cat >/dev/null; exit 0",                           # the message, not the envelope
    "cat >/dev/null; echo FAKEID >&3; exit 0",          # ... and even says an id
    "head -c 2 <&1 >/dev/null; exit 0",                 # some of the envelope, no message
], ids=["nothing", "part", "no-envelope", "no-envelope-id", "envelope-not-message"])
def test_injector_exit_0_without_reading_is_451(inst, tmp_path, body):
    one_message(inst, MSG, 451, "4.3.0", env={"QUEUE_INJECT": hook(tmp_path, "lazy", body)})


def test_injector_reading_everything_is_250(inst, tmp_path):
    """The control case of the above: a hook that reads both and exits 0 is believed."""
    h = hook(tmp_path, "reader", "cat >/dev/null; cat <&1 >/dev/null; echo ID7 >&3; exit 0")
    one_message(inst, MSG, 250, "2.0.0 Ok: queued as ID7", env={"QUEUE_INJECT": h})


def test_injector_refusing_without_reading_is_still_a_refusal(inst, tmp_path):
    """A permanent refusal does not need the whole message (queue-inject stops reading past
    databytes): it stays a 554, as with qmail-smtpd; a temporary one stays a 451."""
    one_message(inst, MSG, 554, "5.3.0", env={"QUEUE_INJECT": hook(tmp_path, "no", "exit 31")})
    one_message(inst, MSG, 451, "4.3.0", env={"QUEUE_INJECT": hook(tmp_path, "tmp", "exit 53")})


# ---- databytes: queue-inject's default (35 MiB), and 0 means that default too ----

QUEUE_DATABYTES = 36700160


@pytest.mark.parametrize("setting", [None, "0"])
def test_databytes_default_is_queue_injects(inst, setting):
    if setting is not None:
        inst.control("databytes", setting)
    r = talk(inst, expect("MAIL FROM:<a@b.example> SIZE=%d" % (QUEUE_DATABYTES + 1), 552, "5.3.4"),
             expect("MAIL FROM:<a@b.example> SIZE=%d" % QUEUE_DATABYTES, 250))
    assert b"250-SIZE %d\r\n" % QUEUE_DATABYTES in r.stdout
    assert b"SIZE 0" not in r.stdout


def test_databytes_zero_agrees_with_queue_inject(inst):
    """With databytes 0 both programs use the same limit: what smtp-receive accepts (its
    Received: line included) queue-inject takes, one byte more is refused by both."""
    inst.control("databytes", "0")
    rc, err = inst.inject(b"x" * (QUEUE_DATABYTES + 1), "a@b.example", "user@example.test")
    assert rc == 31, err
    r = run(inst, b"EHLO c\r\nQUIT\r\n")
    adv = int(re.search(rb"250-SIZE (\d+)", r.stdout).group(1))
    assert adv == QUEUE_DATABYTES
