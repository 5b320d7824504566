"""POP3 end to end with real clients: Python's poplib (STLS and POP3S), curl (pop3:// and
pop3s://) and fetchmail (keep mode twice, then delete mode), through
tcpserver -> tls-serve -> pop3-serve -> auth-check -> pop3-maildir on loopback."""
import os
import poplib
import shutil
import socket
import subprocess

import pytest

import access_helpers
from access_helpers import (PASSWORD, USER, Servers, copy_service, listening,
                            mailbox, start_listening_service,  # noqa: F401 (mailbox)
                            start_notifying_services, tls_context, wire)
from conftest import BIN, free_port, stop_procs, wait_for


def put(instance, n, body=None, sub="new"):
    """Puts message n straight into the Maildir, the way a delivery does (a dot-led line in
    it)."""
    return access_helpers.put(instance, n, body, sub, tail=b".leading dot\n")


@pytest.fixture
def servers(mailbox):
    with Servers(mailbox, "pop3", allow_plain=False) as s:
        yield s


@pytest.fixture
def plain_servers(mailbox):
    with Servers(mailbox, "pop3", allow_plain=True) as s:
        yield s


def remaining(instance):
    d = instance.maildir(USER)
    return sorted(os.listdir(os.path.join(d, "new")) + os.listdir(os.path.join(d, "cur")))


def test_poplib_stls(servers):
    _, m1 = put(servers.instance, 1)
    put(servers.instance, 2)
    p = poplib.POP3("127.0.0.1", servers.port, timeout=20)
    try:
        caps = p.capa()
        assert "STLS" in caps and "USER" not in caps and "SASL" not in caps
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            p.user(USER)
        p.stls(tls_context())
        caps = p.capa()
        assert "STLS" not in caps and "USER" in caps and caps["SASL"] == ["PLAIN", "LOGIN"]
        p.user(USER)
        assert p.pass_(PASSWORD).startswith(b"+OK 2 messages")
        count, size = p.stat()
        assert count == 2 and size == 2 * len(wire(m1))
        resp, ls, _ = p.retr(1)
        assert b"\r\n".join(ls) + b"\r\n" == wire(m1).replace(b"\r\n..", b"\r\n.")
        p.dele(1)
        assert p.quit().startswith(b"+OK")
    finally:
        p.close()
    assert len(remaining(servers.instance)) == 1


def test_poplib_pop3s(servers):
    n1, m1 = put(servers.instance, 1)
    p = poplib.POP3_SSL("127.0.0.1", servers.sport, context=tls_context(), timeout=20)
    try:
        caps = p.capa()
        assert "USER" in caps and "STLS" not in caps
        p.user(USER)
        p.pass_(PASSWORD)
        assert p.uidl(1).split()[-1] == n1.encode()
        resp, ls, _ = p.top(1, 0)
        assert ls[-1] == b"" and ls[0].startswith(b"From: ")
        resp, ls, octets = p.retr(1)
        assert b"Hello 1." in ls
        p.quit()
    finally:
        p.close()
    assert remaining(servers.instance) == [n1 + ":2,S"]


def test_poplib_wrong_password_and_sasl_plain(servers):
    put(servers.instance, 1)
    p = poplib.POP3_SSL("127.0.0.1", servers.sport, context=tls_context(), timeout=20)
    try:
        p.user(USER)
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            p.pass_("wrong")
        import base64
        tok = base64.b64encode(b"\0" + USER.encode() + b"\0" + PASSWORD.encode()).decode()
        assert p._shortcmd("AUTH PLAIN " + tok).startswith(b"+OK 1 message")
        assert p.stat()[0] == 1
        p.quit()
    finally:
        p.close()


def curl(*args, timeout=30):
    return subprocess.run(["curl", "-sS", "--max-time", "20", "-u", USER + ":" + PASSWORD] +
                          list(args), capture_output=True, timeout=timeout)


@pytest.mark.skipif(not shutil.which("curl"), reason="needs curl")
def test_curl_pop3_plaintext_on_loopback(plain_servers):
    s = plain_servers
    _, m1 = put(s.instance, 1)
    _, m2 = put(s.instance, 2)
    url = "pop3://127.0.0.1:%d/" % s.port
    r = curl(url)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"1 %d\r\n2 %d\r\n" % (len(wire(m1)), len(wire(m2)))
    r = curl(url + "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout == wire(m2)  # curl undoes the dot-stuffing
    r = curl(url + "1", "-X", "DELE", "-I")
    assert r.returncode == 0, r.stderr
    assert len(remaining(s.instance)) == 1
    r = curl(url)
    assert r.stdout == b"1 %d\r\n" % len(wire(m2))


@pytest.mark.skipif(not shutil.which("curl"), reason="needs curl")
def test_curl_pop3_stls_and_pop3s(servers):
    s = servers
    _, m1 = put(s.instance, 1)
    # Without TLS the login is refused.
    r = curl("pop3://127.0.0.1:%d/" % s.port)
    assert r.returncode != 0
    r = curl("--ssl-reqd", "-k", "pop3://127.0.0.1:%d/1" % s.port)
    assert r.returncode == 0, r.stderr
    assert r.stdout == wire(m1)
    url = "pop3s://127.0.0.1:%d/" % s.sport
    r = curl("-k", url)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"1 %d\r\n" % len(wire(m1))
    r = curl("-k", url + "1")
    assert r.stdout == wire(m1)
    r = curl("-k", url + "1", "-X", "DELE", "-I")
    assert r.returncode == 0, r.stderr
    assert remaining(s.instance) == []


def fetchmail(tmp_path, port, out, keep):
    home = tmp_path / "fmhome"
    home.mkdir(exist_ok=True)
    rc = home / ".fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        "set no bouncemail\n"
        "poll 127.0.0.1 with proto POP3 port %d and options no dns uidl\n"
        "  user \"%s\" there with password \"%s\" is \"%s\" here\n"
        "  options %s ssl no sslcertck\n"
        "  mda \"cat >> %s\"\n" % (port, USER, PASSWORD, os.environ.get("USER", "root"),
                                   "keep" if keep else "no keep", out))
    os.chmod(rc, 0o600)
    env = dict(os.environ, HOME=str(home), FETCHMAILHOME=str(home))
    # its own pid (lock) file: as root fetchmail's default is one for the whole machine
    return subprocess.run(["fetchmail", "-f", str(rc), "-i", str(home / "fetchids"),
                           "--pidfile", str(home / "fetchmail.pid"), "--nosyslog"],
                          capture_output=True, env=env, timeout=60)


@pytest.mark.skipif(not shutil.which("fetchmail"), reason="needs fetchmail")
def test_fetchmail_keep_twice_then_delete(servers, tmp_path):
    s = servers
    put(s.instance, 1)
    put(s.instance, 2)
    put(s.instance, 3, sub="cur")
    out = tmp_path / "fetched.mbox"
    r = fetchmail(tmp_path, s.sport, out, keep=True)
    assert r.returncode == 0, r.stdout + r.stderr
    got = out.read_bytes()
    assert got.count(b"Subject: message") == 3
    assert b"\r\n" not in got  # delivered with local line ends
    assert b"\n.leading dot\n" in got  # dot-stuffing undone by the client: byte-correct
    assert len(remaining(s.instance)) == 3
    # Second run in keep mode: UIDL says everything was seen, nothing comes.
    r = fetchmail(tmp_path, s.sport, out, keep=True)
    assert r.returncode == 1, r.stdout + r.stderr  # 1: no mail
    assert out.read_bytes().count(b"Subject: message") == 3
    # A new message arrives: keep mode fetches just that one (the others moved to cur/ with
    # the S flag, and kept their UIDLs).
    put(s.instance, 4)
    r = fetchmail(tmp_path, s.sport, out, keep=True)
    assert r.returncode == 0, r.stdout + r.stderr
    got = out.read_bytes()
    assert got.count(b"Subject: message") == 4 and got.count(b"Subject: message 4") == 1
    # Delete mode, with the id file forgotten: fetches all four and removes them.
    os.unlink(str(tmp_path / "fmhome" / "fetchids"))
    r = fetchmail(tmp_path, s.sport, out, keep=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert out.read_bytes().count(b"Subject: message") == 8
    assert remaining(s.instance) == []


def test_delivered_message_retrieved_byte_correct(servers):
    s = servers
    msg = b"Subject: delivered\n\n.one\n..two\nthree\n"
    r = s.instance.run("deliver-maildir", s.instance.maildir(USER), input=msg,
                       env={"SENDER": "a@example.org", "RECIPIENT": USER})
    assert r.returncode == 0, r.stderr
    p = poplib.POP3_SSL("127.0.0.1", s.sport, context=tls_context(), timeout=20)
    try:
        p.user(USER)
        p.pass_(PASSWORD)
        resp, ls, octets = p.retr(1)
        text = b"\n".join(ls) + b"\n"
        assert text.endswith(msg)  # after Return-Path / Delivered-To
        assert int(resp.split()[1]) == octets  # the size announced is the size sent, unstuffed
        p.quit()
    finally:
        p.close()


def test_service_templates(mailbox, tmp_path):
    """services/pop3 (STLS) and services/pop3s (implicit TLS) as an instance gets them: tokens
    filled in, env/PORT set; each run script must bring up a working server."""
    put(mailbox, 1)
    ports, procs = {}, []
    try:
        # the services they hand STLS and logins to: the STARTTLS engine, the auth service and
        # the POP3 login broker (run as the caller here: their env/SERVICE_USER is for a
        # root-made instance)
        start_notifying_services(tmp_path, ("auth", "tls-engine", "login-pop3"), mailbox.env,
                                 procs)
        for name in ("pop3", "pop3s"):
            d = copy_service(tmp_path, name)
            run = (d / "run").read_text().replace("@MAILROOT@", mailbox.root).replace(
                "@BINDIR@", BIN)
            (d / "run").write_text(run)
            assert os.access(str(d / "run"), os.X_OK)
            assert (d / "env" / "PORT").read_text().strip() == {"pop3": "110", "pop3s": "995"}[name]
            ports[name] = free_port()
            start_listening_service(d, ports[name], mailbox.env, procs)
        wait_for(lambda: all(listening(p) for p in ports.values()), what="services")
        p = poplib.POP3("127.0.0.1", ports["pop3"], timeout=20)
        try:
            assert "STLS" in p.capa()
            p.stls(tls_context())
            p.user(USER)
            assert p.pass_(PASSWORD).startswith(b"+OK 1 message")
            p.quit()
        finally:
            p.close()
        p = poplib.POP3_SSL("127.0.0.1", ports["pop3s"], context=tls_context(), timeout=20)
        try:
            p.user(USER)
            assert p.pass_(PASSWORD).startswith(b"+OK 1 message")
            p.quit()
        finally:
            p.close()
    finally:
        stop_procs(procs)


def test_stls_injection_through_tls_serve(servers):
    """A command pipelined behind STLS in plaintext is never answered inside TLS."""
    s = socket.create_connection(("127.0.0.1", servers.port), timeout=20)
    try:
        f = s.makefile("rb")
        assert f.readline().startswith(b"+OK")
        s.sendall(b"STLS\r\nCAPA\r\n")
        assert f.readline() == b"+OK begin TLS negotiation\r\n"
        t = tls_context().wrap_socket(s, server_hostname="mx.example.test")
        t.sendall(b"NOOP\r\n")
        got = b""
        while b"\r\n" not in got:
            chunk = t.recv(4096)
            assert chunk, got
            got += chunk
        assert got.startswith(b"-ERR not logged in\r\n"), got  # not the CAPA's +OK
        t.sendall(b"QUIT\r\n")
        t.close()
    finally:
        s.close()
