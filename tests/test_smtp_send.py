"""smtp-send against real peers on loopback: a recording SMTP server (Python), Postfix's
smtp-sink, and a dnsmasq for MX lookups. Every result line is checked, and the exact bytes
on the wire for the awkward stored messages of issue 5."""
import os
import shutil
import ssl
import subprocess
import tempfile

import pytest

from conftest import base_env, prog, wait_for, free_port
from outbound_helpers import Dnsmasq, SmtpServer, make_ca


@pytest.fixture
def root(tmp_path):
    """A minimal instance: smtp-send needs control/me, and reads routes and tls-policy."""
    r = tmp_path / "inst"
    (r / "control").mkdir(parents=True)
    (r / "control" / "me").write_text("client.example.test\n")
    return r


def control(root, name, text):
    (root / "control" / name).write_text(text)


def send(root, domain, sender, rcpts, message, env=None, timeout=60):
    e = base_env(MAILROOT=str(root), PILLARBOX_SMTP_TIMEOUT="5")
    if env:
        e.update(env)
    r = subprocess.run([prog("smtp-send"), domain, sender] + list(rcpts), input=message, env=e,
                       capture_output=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    lines = [l.split("\t") for l in r.stdout.decode().splitlines()]
    assert [l[1] for l in lines] == list(rcpts)
    assert all(len(l) == 4 for l in lines)
    return lines, r.stderr.decode()


def route(root, srv, domain="*"):
    control(root, "routes", "%s 127.0.0.1:%d\n" % (domain, srv.port))


@pytest.fixture
def server():
    made = []

    def make(**kw):
        s = SmtpServer(**kw)
        made.append(s)
        return s
    yield make
    for s in made:
        s.stop()


MSG = b"From: a@client.example.test\nTo: x@dest.test\nSubject: hi\n\nhello\n"


# ---- the wire ----

WIRE_CASES = [
    (b".\n", b"..\r\n"),
    (b".foo\n", b"..foo\r\n"),
    (b"a\nlast line without newline", b"a\r\nlast line without newline\r\n"),
    (b"x\r.\n", b"x\r\n..\r\n"),
    (b"x\n.\r\n", b"x\r\n..\r\n"),
    (b"bare\rcr in\rthe middle\n", b"bare\r\ncr in\r\nthe middle\r\n"),
    (b"crlf\r\n.\r\n..\r\nend\r\n", b"crlf\r\n..\r\n...\r\n..end\r\n"[:0] +
     b"crlf\r\n..\r\n...\r\nend\r\n"),
    (b"", b""),
    (b"\n\n.\n", b"\r\n\r\n..\r\n"),
    (b"trailing cr\r", b"trailing cr\r\n"),
]


@pytest.mark.parametrize("stored,wire", WIRE_CASES, ids=range(len(WIRE_CASES)))
def test_wire_crlf_dotstuffing_single_end(root, server, stored, wire):
    srv = server()
    route(root, srv)
    lines, _ = send(root, "dest.test", "a@client.example.test", ["x@dest.test"], stored)
    assert lines[0][0] == "D", lines
    assert len(srv.sessions) == 1
    data = srv.sessions[0]["data"]
    assert data == [wire + b".\r\n"]
    d = data[0]
    # every CR is followed by LF and every LF preceded by CR
    assert d.replace(b"\r\n", b"").count(b"\r") == 0 and d.replace(b"\r\n", b"").count(b"\n") == 0
    # exactly one end-of-data, at the very end
    assert (b"\r\n" + d).count(b"\r\n.\r\n") == 1 and d.endswith(b".\r\n")
    for line in d.split(b"\r\n")[:-2]:
        assert not line.startswith(b".") or line.startswith(b"..")
    # nothing sent after the end of data but QUIT
    assert srv.sessions[0]["commands"][-1] == "QUIT"


def sink_args():
    """smtp-sink refuses to run as root without -u."""
    return ["/usr/sbin/smtp-sink"] + (["-u", "nobody"] if os.geteuid() == 0 else [])


def test_wire_through_smtp_sink(root):
    """Postfix's smtp-sink as the peer: its dump holds the message with dots unstuffed."""
    dump = tempfile.mkdtemp(prefix="pillarbox-sink-")  # smtp-sink runs as nobody
    os.chmod(dump, 0o777)
    port = free_port()
    p = subprocess.Popen(sink_args() + ["-d", dump + "/%M.", "127.0.0.1:%d" % port, "10"],
                         stderr=subprocess.PIPE)
    try:
        control(root, "routes", "dest.test 127.0.0.1:%d\n" % port)
        body = b"Subject: sink\n\n.\n..two\nend"
        lines, _ = wait_for(lambda: _try_send(root, body), timeout=10, what="smtp-sink")
        assert [l[0] for l in lines] == ["D", "D"]
        assert lines[0][2] == "[127.0.0.1]" and lines[0][3].startswith("250")
        files = wait_for(lambda: os.listdir(dump), timeout=10, what="dump file")
        got = open(os.path.join(dump, files[0]), "rb").read()
        assert b"\nSubject: sink\n\n.\n..two\nend\n" in got  # the dump adds a blank line
        assert b"X-Rcpt-Args: <x@dest.test>" in got and b"X-Rcpt-Args: <y@dest.test>" in got
    finally:
        p.terminate()
        p.wait(timeout=10)
        shutil.rmtree(dump, ignore_errors=True)


def _try_send(root, body):
    lines, err = send(root, "dest.test", "a@client.example.test", ["x@dest.test", "y@dest.test"],
                      body)
    return (lines, err) if lines[0][0] == "D" else None


@pytest.mark.parametrize("opt,kind", [("-f", "P"), ("-r", "T")])
def test_smtp_sink_rejects_rcpt(root, opt, kind):
    port = free_port()
    p = subprocess.Popen(sink_args() + [opt, "RCPT", "127.0.0.1:%d" % port, "10"],
                         stderr=subprocess.PIPE)
    try:
        control(root, "routes", "* 127.0.0.1:%d\n" % port)

        def attempt():
            lines, _ = send(root, "dest.test", "a@b.test", ["x@dest.test"], MSG)
            return lines if "connect" not in lines[0][3] else None
        lines = wait_for(attempt, timeout=10, what="smtp-sink")
        assert lines[0][0] == kind and lines[0][3][:1] == ("5" if kind == "P" else "4"), lines
    finally:
        p.terminate()
        p.wait(timeout=10)


# ---- protocol ----

def test_pipelining_sends_mail_and_rcpts_in_one_write(root, server):
    srv = server()
    route(root, srv)
    rc = ["a@dest.test", "b@dest.test", "c@dest.test"]
    lines, _ = send(root, "dest.test", "s@client.example.test", rc, MSG)
    assert [l[0] for l in lines] == ["D"] * 3
    s = srv.sessions[0]
    mailchunk = [c for c in s["chunks"] if b"MAIL FROM" in c][0]
    assert all(b"RCPT TO:<%s>" % r.encode() in mailchunk for r in rc)
    assert s["commands"][0] == "EHLO client.example.test"
    assert "MAIL FROM:<s@client.example.test> SIZE=%d" % len(s["data"][0]) in s["commands"]


def test_without_pipelining_commands_wait_for_replies(root, server):
    srv = server(ehlo=["8BITMIME"])
    route(root, srv)
    lines, _ = send(root, "dest.test", "s@b.test", ["a@dest.test", "b@dest.test"], MSG)
    assert [l[0] for l in lines] == ["D", "D"]
    s = srv.sessions[0]
    assert not any(b"MAIL FROM" in c and b"RCPT" in c for c in s["chunks"])
    assert "MAIL FROM:<s@b.test>" in s["commands"]  # no SIZE when not offered


def test_helo_fallback(root, server):
    srv = server(ehlo=None)
    route(root, srv)
    lines, _ = send(root, "dest.test", "", ["a@dest.test"], "Subject: x\n\nü\n".encode())
    assert lines[0][0] == "D"
    cmds = srv.sessions[0]["commands"]
    assert cmds[:2] == ["EHLO client.example.test", "HELO client.example.test"]
    assert "MAIL FROM:<>" in cmds


def test_per_recipient_results(root, server):
    def rcpt(cmd):
        if "bad@" in cmd:
            return "550 5.1.1 no such user\r\n"
        if "later@" in cmd:
            return "451 4.7.1 greylisted, come back\r\n"
        return "250 2.1.5 ok\r\n"
    srv = server(rcpt=rcpt, end="250-2.0.0 queued\r\n250 2.0.0 as ABC\r\n")
    route(root, srv)
    rc = ["good@dest.test", "bad@dest.test", "later@dest.test", "good2@dest.test"]
    lines, _ = send(root, "dest.test", "s@b.test", rc, MSG)
    assert [l[0] for l in lines] == ["D", "P", "T", "D"]
    assert lines[1][3] == "550 5.1.1 no such user"
    assert lines[2][3] == "451 4.7.1 greylisted, come back"
    assert lines[0][3] == "250 2.0.0 queued 2.0.0 as ABC"  # multi-line reply kept whole
    assert lines[0][2] == "[127.0.0.1]"
    assert len(srv.sessions[0]["data"]) == 1


def test_all_recipients_refused_sends_no_data(root, server):
    srv = server(rcpt=lambda c: "550 5.1.1 nope\r\n")
    route(root, srv)
    lines, _ = send(root, "dest.test", "s@b.test", ["a@dest.test", "b@dest.test"], MSG)
    assert [l[0] for l in lines] == ["P", "P"]
    assert "DATA" not in srv.sessions[0]["commands"]


@pytest.mark.parametrize("stage,reply,kinds", [
    ("mail", "553 5.7.1 sender refused\r\n", ["P", "P"]),
    ("mail", "451 4.3.0 try later\r\n", ["T", "T"]),
    ("data", "554 5.6.0 no thanks\r\n", ["P", "P"]),
    ("data", "451 4.3.0 not now\r\n", ["T", "T"]),
    ("end", "552 5.3.4 too big after all\r\n", ["P", "P"]),
    ("end", "452 4.3.1 disk full\r\n", ["T", "T"]),
    ("end", "421 4.3.2 shutting down\r\n", ["T", "T"]),
    ("greeting", "554 5.7.1 go away\r\n", ["T", "T"]),
    ("greeting", "421 4.3.2 busy\r\n", ["T", "T"]),
])
def test_failures_at_each_stage(root, server, stage, reply, kinds):
    srv = server(**{stage: reply})
    route(root, srv)
    lines, _ = send(root, "dest.test", "s@b.test", ["a@dest.test", "b@dest.test"], MSG)
    assert [l[0] for l in lines] == kinds, lines
    assert reply.strip().split(" ")[0] in lines[0][3]


def test_size_limit_bounces_at_once(root, server):
    srv = server(ehlo=["PIPELINING", "SIZE 100"])
    route(root, srv)
    lines, _ = send(root, "dest.test", "s@b.test", ["a@dest.test"], MSG + b"x" * 200 + b"\n")
    assert lines[0][0] == "P" and "5.3.4" in lines[0][3] and "100" in lines[0][3]
    assert not any(c.startswith("MAIL") for c in srv.sessions[0]["commands"])


def test_8bitmime_declared(root, server):
    srv = server()
    route(root, srv)
    lines, _ = send(root, "dest.test", "s@b.test", ["a@dest.test"],
                    "Subject: plain\n\nbody with ü\n".encode())
    assert lines[0][0] == "D"
    assert [c for c in srv.sessions[0]["commands"] if c.startswith("MAIL")][0].endswith(
        " BODY=8BITMIME")


def test_smtputf8_needed_but_not_offered(root, server):
    srv = server()
    route(root, srv)
    lines, _ = send(root, "dest.test", "s@b.test", ["jörg@dest.test", "a@dest.test"], MSG)
    assert [l[0] for l in lines] == ["P", "P"]
    assert "SMTPUTF8" in lines[0][3]
    assert not any(c.startswith("MAIL") for c in srv.sessions[0]["commands"])
    # UTF-8 in a header needs it too
    lines, _ = send(root, "dest.test", "s@b.test", ["a@dest.test"],
                    "Subject: grüße\n\nx\n".encode())
    assert lines[0][0] == "P" and "SMTPUTF8" in lines[0][3]


def test_smtputf8_used_when_offered(root, server):
    srv = server(ehlo=["PIPELINING", "8BITMIME", "SMTPUTF8"])
    route(root, srv)
    lines, _ = send(root, "dest.test", "s@b.test", ["jörg@dest.test"], MSG)
    assert lines[0][0] == "D"
    mail = [c for c in srv.sessions[0]["commands"] if c.startswith("MAIL")][0]
    assert mail.endswith(" SMTPUTF8")
    assert "RCPT TO:<jörg@dest.test>" in srv.sessions[0]["commands"]


def test_bad_recipient_and_usage(root, server):
    srv = server()
    route(root, srv)
    lines, _ = send(root, "dest.test", "s@b.test", ["a b@dest.test", "ok@dest.test"], MSG)
    assert [l[0] for l in lines] == ["P", "D"]
    assert "RCPT TO:<a b@dest.test>" not in srv.sessions[0]["commands"]
    for args in ([], ["dest.test"], ["dest.test", "s@b.test"]):
        r = subprocess.run([prog("smtp-send")] + args, env=base_env(MAILROOT=str(root)),
                           input=b"", capture_output=True, timeout=10)
        assert r.returncode == 100


def test_missing_me_is_temporary_without_lines(tmp_path, server):
    (tmp_path / "control").mkdir()
    r = subprocess.run([prog("smtp-send"), "dest.test", "s@b.test", "a@dest.test"],
                       env=base_env(MAILROOT=str(tmp_path)), input=MSG, capture_output=True,
                       timeout=10)
    assert r.returncode == 111 and r.stdout == b"" and b"control/me" in r.stderr


def test_never_greeting_times_out(root, server):
    srv = server(greeting=None)
    route(root, srv)
    lines, err = send(root, "dest.test", "s@b.test", ["a@dest.test"], MSG,
                      env={"PILLARBOX_SMTP_TIMEOUT": "1"})
    assert lines[0][0] == "T" and "timed out" in lines[0][3]


def test_routes_exact_domain_wins_and_ipv6_literal(root, server):
    srv6 = server(host="::1")
    other = server()
    control(root, "routes", "* 127.0.0.1:%d\nDest.Test [IPv6:::1]:%d\n" % (other.port, srv6.port))
    lines, _ = send(root, "dest.test", "s@b.test", ["a@dest.test"], MSG)
    assert lines[0][0] == "D" and lines[0][2] == "[IPv6:::1]"
    assert len(srv6.sessions) == 1 and not other.sessions


def test_bad_control_files_are_temporary(root):
    control(root, "routes", "* 127.0.0.1:99999\n")
    r = subprocess.run([prog("smtp-send"), "dest.test", "s@b.test", "a@dest.test"],
                       env=base_env(MAILROOT=str(root)), input=MSG, capture_output=True,
                       timeout=10)
    assert r.returncode == 111 and b"control/routes" in r.stderr and r.stdout == b""
    control(root, "routes", "")
    control(root, "tls-policy", "dest.test sometimes\n")
    r = subprocess.run([prog("smtp-send"), "dest.test", "s@b.test", "a@dest.test"],
                       env=base_env(MAILROOT=str(root)), input=MSG, capture_output=True,
                       timeout=10)
    assert r.returncode == 111 and b"control/tls-policy" in r.stderr


# ---- MX and DNS ----

@pytest.fixture(scope="module")
def mxport():
    return free_port()


@pytest.fixture(scope="module")
def dns():
    d = Dnsmasq("--mx-host=two.test,mx1.two.test,10", "--mx-host=two.test,mx2.two.test,20",
                "--host-record=mx1.two.test,127.0.0.2", "--host-record=mx2.two.test,127.0.0.3",
                "--host-record=implicit.test,127.0.0.4",
                "--mx-host=null.test,.,0",
                "--mx-host=tls.test,mx.tls.test,10", "--host-record=mx.tls.test,127.0.0.5")
    try:
        yield d
    finally:
        d.stop()


def mxenv(dns, port, **kw):
    e = dict(dns.env, PILLARBOX_SMTP_PORT=str(port))
    e.update(kw)
    return e


def test_mx_delivery_and_fallback_on_refused_connection(root, server, dns):
    port = free_port()
    mx2 = server(host="127.0.0.3", port=port)
    lines, err = send(root, "two.test", "s@b.test", ["a@two.test"], MSG, env=mxenv(dns, port))
    assert lines[0][0] == "D" and lines[0][2] == "mx2.two.test"
    assert "mx1.two.test[127.0.0.2]" in err  # the refused first MX is logged


def test_mx_fallback_on_4xx_greeting_and_421(root, server, dns):
    port = free_port()
    mx1 = server(host="127.0.0.2", port=port, greeting="421 4.3.2 too busy\r\n")
    mx2 = server(host="127.0.0.3", port=port)
    lines, _ = send(root, "two.test", "s@b.test", ["a@two.test"], MSG, env=mxenv(dns, port))
    assert lines[0][0] == "D" and lines[0][2] == "mx2.two.test"
    assert len(mx1.sessions) == 1 and len(mx2.sessions) == 1


def test_mx_fallback_after_rcpt_421(root, server, dns):
    port = free_port()
    server(host="127.0.0.2", port=port, rcpt=lambda c: "421 4.3.2 bye\r\n")
    mx2 = server(host="127.0.0.3", port=port)
    lines, _ = send(root, "two.test", "s@b.test", ["a@two.test", "b@two.test"], MSG,
                    env=mxenv(dns, port))
    assert [l[0] for l in lines] == ["D", "D"]
    assert len(mx2.sessions[0]["data"]) == 1


def test_mx_fallback_on_timeout(root, server, dns):
    port = free_port()
    server(host="127.0.0.2", port=port, greeting=None)
    server(host="127.0.0.3", port=port)
    lines, _ = send(root, "two.test", "s@b.test", ["a@two.test"], MSG,
                    env=mxenv(dns, port, PILLARBOX_SMTP_TIMEOUT="1"))
    assert lines[0][0] == "D" and lines[0][2] == "mx2.two.test"


def test_all_mx_down_is_temporary(root, dns):
    port = free_port()
    lines, _ = send(root, "two.test", "s@b.test", ["a@two.test"], MSG, env=mxenv(dns, port))
    assert lines[0][0] == "T" and "connect" in lines[0][3]


def test_implicit_mx(root, server, dns):
    port = free_port()
    srv = server(host="127.0.0.4", port=port)
    lines, _ = send(root, "implicit.test", "s@b.test", ["a@implicit.test"], MSG,
                    env=mxenv(dns, port))
    assert lines[0][0] == "D" and lines[0][2] == "implicit.test"


def test_null_mx_and_nxdomain_are_permanent(root, dns):
    port = free_port()
    lines, _ = send(root, "null.test", "s@b.test", ["a@null.test"], MSG, env=mxenv(dns, port))
    assert lines[0][0] == "P" and "null MX" in lines[0][3] and lines[0][2] == "-"
    lines, _ = send(root, "nosuch.test", "s@b.test", ["a@nosuch.test"], MSG, env=mxenv(dns, port))
    assert lines[0][0] == "P" and "NXDOMAIN" in lines[0][3]
    lines, _ = send(root, "dead.test", "s@b.test", ["a@dead.test"], MSG, env=mxenv(dns, port))
    assert lines[0][0] == "T"


# ---- STARTTLS ----

@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_ca(tmp_path_factory.mktemp("ca"), "mx.tls.test")


def tls_ctx(cert, key):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    c.load_cert_chain(cert, key)
    return c


def test_starttls_may_is_used_and_ehlo_repeated(root, server, certs):
    srv = server(starttls=tls_ctx(certs["self.pem"], certs["self.key"]))
    route(root, srv)
    lines, err = send(root, "dest.test", "s@b.test", ["a@dest.test"], MSG)
    assert lines[0][0] == "D", (lines, err)
    s = srv.sessions[0]
    assert s["tls"]
    assert s["commands"][:2] == ["EHLO client.example.test", "STARTTLS"]
    assert s["tls_commands"][0] == "EHLO client.example.test"
    assert b"MAIL FROM" not in s["raw"] and b"hello" not in s["raw"]
    assert "TLS" in err


def test_extra_lines_after_starttls_reply_are_ignored(root, server, certs):
    srv = server(starttls=tls_ctx(certs["self.pem"], certs["self.key"]),
                 after_starttls="250-injected\r\n250 PIPELINING\r\n")
    route(root, srv)
    lines, err = send(root, "dest.test", "s@b.test", ["a@dest.test"], MSG)
    assert lines[0][0] == "D", (lines, err)
    s = srv.sessions[0]
    # After the handshake the client began again with EHLO: nothing was answered from the
    # injected lines, and nothing but STARTTLS was sent in the clear after EHLO.
    assert s["tls_commands"][0] == "EHLO client.example.test"
    assert s["commands"][:2] == ["EHLO client.example.test", "STARTTLS"]
    assert b"MAIL" not in s["raw"]


def test_policy_none_skips_starttls(root, server, certs):
    srv = server(starttls=tls_ctx(certs["self.pem"], certs["self.key"]))
    route(root, srv)
    control(root, "tls-policy", "dest.test none\n")
    lines, _ = send(root, "dest.test", "s@b.test", ["a@dest.test"], MSG)
    assert lines[0][0] == "D" and not srv.sessions[0]["tls"]
    assert "STARTTLS" not in srv.sessions[0]["commands"]


def test_policy_encrypt_without_starttls_defers_and_sends_nothing(root, server):
    srv = server()
    route(root, srv)
    control(root, "tls-policy", "* encrypt\n")
    lines, _ = send(root, "dest.test", "s@b.test", ["a@dest.test"], MSG)
    assert lines[0][0] == "T" and "STARTTLS" in lines[0][3]
    raw = srv.sessions[0]["raw"]
    assert b"MAIL" not in raw and b"RCPT" not in raw and b"hello" not in raw


def test_policy_encrypt_with_starttls_delivers(root, server, certs):
    srv = server(starttls=tls_ctx(certs["self.pem"], certs["self.key"]))
    route(root, srv)
    control(root, "tls-policy", "dest.test encrypt\n")
    lines, _ = send(root, "dest.test", "s@b.test", ["a@dest.test"], MSG)
    assert lines[0][0] == "D" and srv.sessions[0]["tls"]


def test_policy_verify(root, server, certs, dns):
    port = free_port()
    good = server(host="127.0.0.5", port=port,
                  starttls=tls_ctx(certs["srv.pem"], certs["srv.key"]))
    control(root, "tls-policy", "tls.test verify\n")
    env = mxenv(dns, port, PILLARBOX_CA_FILE=certs["ca.pem"])
    lines, err = send(root, "tls.test", "s@b.test", ["a@tls.test"], MSG, env=env)
    assert lines[0][0] == "D", (lines, err)
    assert good.sessions[0]["tls"]
    good.stop()
    # untrusted (self-signed) certificate: deferred, nothing sent
    bad = server(host="127.0.0.5", port=port,
                 starttls=tls_ctx(certs["self.pem"], certs["self.key"]))
    lines, err = send(root, "tls.test", "s@b.test", ["a@tls.test"], MSG, env=env)
    assert lines[0][0] == "T" and "certificate" in lines[0][3], lines
    assert not any(s["tls_commands"] for s in bad.sessions)
    assert not any(b"MAIL" in s["raw"] for s in bad.sessions)
    bad.stop()
    # trusted but for another name (reached through a route with another host name)
    srv = server(host="127.0.0.5", port=port,
                 starttls=tls_ctx(certs["srv.pem"], certs["srv.key"]))
    control(root, "routes", "tls.test [127.0.0.5]:%d\n" % port)
    lines, err = send(root, "tls.test", "s@b.test", ["a@tls.test"], MSG, env=env)
    assert lines[0][0] == "T" and "certificate" in lines[0][3], lines
    # the system bundle does not trust the test CA
    control(root, "routes", "")
    env.pop("PILLARBOX_CA_FILE")
    lines, err = send(root, "tls.test", "s@b.test", ["a@tls.test"], MSG, env=env)
    assert lines[0][0] == "T" and "not trusted" in lines[0][3], lines


def test_failed_handshake_may_retries_in_clear_encrypt_defers(root, server, certs):
    ctx = tls_ctx(certs["self.pem"], certs["self.key"])
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3  # BearSSL speaks TLS 1.2 at most
    srv = server(starttls=ctx)
    route(root, srv)
    lines, err = send(root, "dest.test", "s@b.test", ["a@dest.test"], MSG)
    assert lines[0][0] == "D", (lines, err)
    assert len(srv.sessions) == 2 and "retrying without TLS" in err
    assert "STARTTLS" not in srv.sessions[1]["commands"]
    control(root, "tls-policy", "* encrypt\n")
    lines, err = send(root, "dest.test", "s@b.test", ["a@dest.test"], MSG)
    assert lines[0][0] == "T" and "TLS" in lines[0][3], lines
    assert not any(b"MAIL" in s["raw"] for s in srv.sessions[2:])


def test_unresolvable_route_host_is_temporary(root, dns):
    control(root, "routes", "* nosuch.test:2525\n")
    lines, _ = send(root, "dest.test", "s@b.test", ["a@dest.test"], MSG, env=dns.env)
    assert lines[0][0] == "T" and "route host" in lines[0][3] and "NXDOMAIN" in lines[0][3]


def test_random_messages_keep_their_lines(root, server):
    """Random mixes of '.', CR, LF and text: the wire always has CRLF lines, stuffed dots and
    one end-of-data, and un-stuffing it gives the message with every line ending made CRLF."""
    import random
    rnd = random.Random(5)
    srv = server()
    route(root, srv)
    for n in range(25):
        stored = bytes(rnd.choice(b"..\r\n\nab") for _ in range(rnd.randrange(0, 60)))
        lines, _ = send(root, "dest.test", "s@b.test", ["a@dest.test"], stored)
        assert lines[0][0] == "D", lines
        d = srv.sessions[-1]["data"][0]
        assert d.endswith(b".\r\n") and (b"\r\n" + d).count(b"\r\n.\r\n") == 1
        body = d[:-3]
        assert body.replace(b"\r\n", b"").count(b"\r") == 0
        assert body.replace(b"\r\n", b"").count(b"\n") == 0
        got = [l[1:] if l.startswith(b".") else l for l in body.split(b"\r\n")[:-1]]
        for l in body.split(b"\r\n")[:-1]:
            assert not l.startswith(b".") or l.startswith(b"..")
        # the expected lines: split on CRLF, lone CR or lone LF; no empty line added at the end
        want, cur, i = [], b"", 0
        while i < len(stored):
            c = stored[i:i + 1]
            if c == b"\r" and stored[i + 1:i + 2] == b"\n":
                want.append(cur); cur = b""; i += 2; continue
            if c in (b"\r", b"\n"):
                want.append(cur); cur = b""; i += 1; continue
            cur += c
            i += 1
        if cur:
            want.append(cur)
        assert got == want, (stored, d)


@pytest.mark.parametrize("greeting,why", [
    ("220-" + "x" * 5000 + "\r\n220 ok\r\n", "too long"),
    ("220-first\r\n250 other code\r\n", "malformed"),
    ("".join("220-l%d\r\n" % i for i in range(300)) + "220 ok\r\n",
     "malformed"),
    ("hello there\r\n", "malformed"),
])
def test_bad_replies_end_the_session(root, server, greeting, why):
    srv = server(greeting=greeting)
    route(root, srv)
    lines, _ = send(root, "dest.test", "s@b.test", ["a@dest.test"], MSG)
    assert lines[0][0] == "T" and why in lines[0][3], lines
    assert not any(c.startswith("MAIL") for c in srv.sessions[0]["commands"])


def test_connection_closed_after_greeting(root, server):
    srv = server(greeting="220 hi\r\n", ehlo=None, helo="421 4.3.2 closing\r\n")
    route(root, srv)
    lines, _ = send(root, "dest.test", "s@b.test", ["a@dest.test"], MSG)
    assert lines[0][0] == "T" and "421" in lines[0][3]


def test_ipv6_mx(root, server):
    port = free_port()
    d = Dnsmasq("--mx-host=six.test,mx.six.test,10", "--host-record=mx.six.test,::1")
    try:
        srv = server(host="::1", port=port)
        lines, _ = send(root, "six.test", "s@b.test", ["a@six.test"], MSG, env=mxenv(d, port))
        assert lines[0][0] == "D" and lines[0][2] == "mx.six.test"
        assert len(srv.sessions) == 1
    finally:
        d.stop()
