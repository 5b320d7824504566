"""The administrator's flows of issue 10 under the privilege model: run as root against an
instance created by root, its services running under s6-svscan each under its own uid (the
`model` fixture of test_privsep). Adding a user and delivering at once, and a local user's
sendmail, are in test_privsep; here: cron mail from root, deleting an aliased account, an
over-quota RCPT, a forged From: on submission, flush by id under backoff, and requeue after an
alias change."""
import os
import re
import smtplib
import ssl

import pytest

from conftest import wait_for
from outbound_helpers import SmtpServer
from test_privsep import USER, model, uid  # noqa: F401 (model is the fixture)

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="the privilege model needs root (system users, setuid)")

PASSWORD = "Sekr1t"   # the fixture's password for USER, the first account (the postmaster)


def find_mail(model, address, needle):
    """The path and text of the message in address's Maildir/new that contains needle."""
    local, domain = address.split("@")
    d = model.path("mail", domain, local, "new")
    for n in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        p = os.path.join(d, n)
        with open(p, "rb") as f:
            b = f.read()
        if needle in b:
            return p, b
    return None


def delivered(model, address, needle, timeout=30):
    return wait_for(lambda: find_mail(model, address, needle), timeout=timeout,
                    what="%r in %s's Maildir" % (needle, address))


def ok(r):
    assert r.returncode == 0, r.stderr
    return r


def queue_log(model):
    """The queue service's log (s6-log: each line starts with its date and time)."""
    try:
        with open(model.path("log", "queue", "current")) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_log(model, pattern, timeout=30, count=1):
    """The matches of pattern (after the stamp) in the queue's log, once there are count."""
    rx = re.compile(r"^\S+ \S+ +" + pattern, re.M)

    def seen():
        m = rx.findall(queue_log(model))
        return m if len(m) >= count else None
    try:
        return wait_for(seen, timeout=timeout, what="log line %r" % pattern)
    except AssertionError:
        raise AssertionError("no %r in the queue's log:\n%s" % (pattern, queue_log(model)[-4000:]))


@pytest.fixture
def controls(model):
    """Sets control files for a test; puts back (or removes) them after it."""
    saved = {}

    def set_(name, value):
        p = model.path("control", name)
        if name not in saved:
            saved[name] = open(p).read() if os.path.exists(p) else None
        with open(p, "w") as f:
            f.write(value + "\n")
    yield set_
    for name, old in saved.items():
        p = model.path("control", name)
        if old is None:
            os.unlink(p)
        else:
            with open(p, "w") as f:
                f.write(old)


# ---- cron mail from root ----

def test_cron_mail_from_root_reaches_the_postmaster(model):
    """`sendmail root` as cron runs it (root, the instance's environment): root@ the default
    domain is an alias of the first account; the delivery is the delivery uid's."""
    r = ok(model.run("sendmail", "root", input=b"Subject: cron <root@mx> run-parts\n\nok\n",
                     env=dict(model.env, LOGNAME="root", USER="root")))
    assert r.stderr == b""
    p, m = delivered(model, USER, b"Subject: cron <root@mx>")
    assert m.startswith(b"Return-Path: <root@example.test>\n"), m[:200]
    assert b"Delivered-To: %s\n" % USER.encode() in m
    assert os.stat(p).st_uid == uid("pb-deliv")


# ---- deleting an aliased account ----

def test_delete_an_aliased_account(model):
    ok(model.run("mail-user", "add", "joe@example.test", input=b"pw-joe\n"))
    ok(model.run("mail-alias", "add", "team@example.test", "joe@example.test", USER))
    ok(model.run("mail-alias", "add", "joe-only@example.test", "joe@example.test"))
    aliases = open(model.path("control", "aliases")).read()
    r = model.run("mail-user", "del", "joe@example.test")
    assert r.returncode == 100
    for name in (b"team@example.test", b"joe-only@example.test", b"--force"):
        assert name in r.stderr, (name, r.stderr)
    assert open(model.path("control", "aliases")).read() == aliases
    assert os.path.isdir(model.path("mail", "example.test", "joe"))

    r = ok(model.run("mail-user", "del", "--force", "joe@example.test"))
    r = ok(model.run("mail-lookup", "team@example.test"))
    assert r.stdout.decode().split() == ["local", USER, model.path("mail", "example.test",
                                                                   "demo")]
    assert model.run("mail-lookup", "joe-only@example.test").returncode == 100
    kept = os.listdir(model.path("mail", "example.test", ".deleted"))
    assert [k for k in kept if k.startswith("joe-")], kept
    # the running smtpd (pb-smtpd) sees the new lists at once, and the list still delivers
    with smtplib.SMTP("127.0.0.1", model.ports["smtpd"], timeout=30) as c:
        c.ehlo("client.example")
        c.mail("a@remote.test")
        assert c.rcpt("joe@example.test")[0] == 550
        assert c.rcpt("team@example.test")[0] == 250
        assert c.data(b"Subject: to the team after joe\r\n\r\nhi\r\n")[0] == 250
    p, m = delivered(model, USER, b"Subject: to the team after joe")
    assert b"Delivered-To: %s\n" % USER.encode() in m
    assert os.stat(p).st_uid == uid("pb-deliv")


# ---- an over-quota recipient at RCPT ----

def test_over_quota_rcpt_gets_452_on_the_running_port(model):
    ok(model.run("mail-user", "add", "full@example.test", "--quota", "100000", input=b"pw\n"))
    ok(model.run("sendmail", "full@example.test",
                 input=b"Subject: filler\n\n" + b"x" * 3000 + b"\n"))
    delivered(model, "full@example.test", b"Subject: filler")
    rec = model.path("run", "quota", "full@example.test")

    def record():
        try:
            with open(rec) as f:
                v = f.read().split()
        except FileNotFoundError:
            return None
        return v if len(v) == 6 and v[2] == "1" else None
    v = wait_for(record, timeout=30, what="the quota-state record")
    used = int(v[1])
    assert used > 3000, v

    def rcpt(address):
        with smtplib.SMTP("127.0.0.1", model.ports["smtpd"], timeout=30) as c:
            c.ehlo("client.example")
            c.mail("a@remote.test")
            return c.rcpt(address)
    assert rcpt("full@example.test")[0] == 250          # room left: accepted
    ok(model.run("mail-user", "quota", "full@example.test", "1000"))
    code, text = rcpt("full@example.test")
    assert (code, text[:5]) == (452, b"4.2.2"), (code, text)
    assert rcpt(USER)[0] == 250                         # only the full mailbox refuses


# ---- a forged From: on authenticated submission ----

def submit(model, header):
    """Submits a message with header as its From: as USER (STARTTLS, AUTH) to USER."""
    s = smtplib.SMTP("127.0.0.1", model.ports["submission"], timeout=30)
    try:
        s.ehlo("client.example")
        s.starttls(context=ssl._create_unverified_context())
        s.ehlo("client.example")
        assert s.login(USER, PASSWORD)[0] == 235
        s.mail(USER)
        assert s.rcpt(USER)[0] == 250
        try:
            return s.data(header + b"\r\nSubject: pay now\r\n\r\nbody\r\n")
        except smtplib.SMTPDataError as e:
            return e.smtp_code, e.smtp_error
    finally:
        s.close()


def test_forged_from_on_submission_is_refused(model):
    code, text = submit(model, b"From: The Boss <boss@elsewhere.example>")
    assert (code, text[:5]) == (550, b"5.7.1"), (code, text)
    code, text = submit(model, b"From: Demo <%s>" % USER.encode())   # the control
    assert code == 250, text
    p, m = delivered(model, USER, b"From: Demo <%s>" % USER.encode())
    assert find_mail(model, USER, b"boss@elsewhere.example") is None


# ---- flush by id under backoff, requeue after an alias change ----

def backoff(controls, port, domain="far.test"):
    """domain goes to the scripted server on port; a deferral waits ten minutes. (Each test
    has its own domain: a message left by one would hold the domain back for the other.)"""
    controls("routes", "%s 127.0.0.1:%d" % (domain, port))
    controls("retry-base", "600")
    controls("retry-max", "600")


def test_flush_by_id_under_backoff(model, controls):
    seen = []

    def rcpt(cmd):
        seen.append(cmd)
        return "451 4.3.0 not now\r\n" if len(seen) == 1 else "250 2.1.5 ok\r\n"
    srv = SmtpServer(rcpt=rcpt)
    try:
        backoff(controls, srv.port)
        ok(model.run("sendmail", "-f", USER, "a@far.test", input=b"Subject: flush me\n\nx\n"))
        [qid] = wait_log(model, r"delivery (\S+) to=<a@far.test> .* status=deferred "
                         r"\(smtp; 451 4.3.0 not now\)$")
        assert seen == ["RCPT TO:<a@far.test>"]
        r = ok(model.run("queue-ctl", "flush", qid))
        assert r.stderr == b""
        wait_log(model, r"flush %s requested$" % re.escape(qid))
        wait_log(model, r"delivery %s to=<a@far.test> .* status=sent " % re.escape(qid))
        wait_log(model, r"done %s$" % re.escape(qid))
        assert seen == ["RCPT TO:<a@far.test>", "RCPT TO:<a@far.test>"]
        assert qid not in os.listdir(model.path("queue", "mess"))
    finally:
        srv.stop()


def test_requeue_after_an_alias_change(model, controls):
    seen = []

    def rcpt(cmd):
        seen.append(cmd)
        return "451 4.3.0 not now\r\n"
    srv = SmtpServer(rcpt=rcpt)
    try:
        backoff(controls, srv.port, "old.test")
        ok(model.run("mail-alias", "add", "moved@example.test", "old@old.test"))
        ok(model.run("sendmail", "moved", input=b"Subject: requeue me\n\nx\n"))
        [qid] = wait_log(model, r"delivery (\S+) to=<old@old.test> orig_to=<moved@example.test> "
                         r".* status=deferred ")
        ok(model.run("mail-alias", "del", "moved@example.test"))
        ok(model.run("mail-alias", "add", "moved@example.test", USER))
        r = ok(model.run("queue-ctl", "requeue", qid))
        assert r.stderr == b""
        wait_log(model, r"requeue %s rcpts=1$" % re.escape(qid))
        wait_log(model, r"delivery %s to=<%s> orig_to=<moved@example.test> .* status=sent "
                 % (re.escape(qid), re.escape(USER)))
        wait_log(model, r"done %s$" % re.escape(qid))
        p, m = delivered(model, USER, b"Subject: requeue me")
        assert os.stat(p).st_uid == uid("pb-deliv")
        assert seen == ["RCPT TO:<old@old.test>"]   # the old target is not tried again
    finally:
        srv.stop()
