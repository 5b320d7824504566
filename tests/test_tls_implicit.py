"""Implicit TLS (pop3s, imaps, smtps) through the engine service: the protocol program alone
under tcpserver with TLS_IMPLICIT=1 and TLS_ENGINE hands the connection to tls-engine before it
says a byte (lib/ucspitls ucspitls_implicit). Real clients (Python ssl) over the real programs;
the engine unreachable or missing gives a closed connection with not one plaintext byte, and a
log line; tls-serve with TLS_IMPLICIT set still works (it did the TLS already)."""
import os
import socket

import pytest

from conftest import prog, wait_for
from test_tls_engine import Engine, children_of, engine_ids, smtp_reply
from tls_helpers import Server, client_context, readline

HOST = "mx.example.test"


@pytest.fixture
def cafile(instance):
    return instance.path("tls", "cert.pem")


def implicit(inst, eng, argv, env=None):
    e = {"TLS_ENGINE": eng.sock if eng else inst.path("run", "tls", "engine"),
         "TLS_IMPLICIT": "1"}
    e.update(env or {})
    return Server(inst, argv, env=e)


def tls_connect(srv, cafile):
    raw = srv.connect()
    raw.settimeout(20)
    return client_context(cafile).wrap_socket(raw, server_hostname=HOST)


def capa(s):
    out = b""
    while not out.endswith(b"\r\n.\r\n"):
        line = readline(s)
        assert line, out
        out += line
    return out


def test_pop3s_through_the_engine(instance, cafile):
    with Engine(instance) as eng, implicit(instance, eng, [prog("pop3-serve"), "true"]) as srv:
        s = tls_connect(srv, cafile)
        assert s.version() == "TLSv1.2"
        assert readline(s).startswith(b"+OK ")
        s.sendall(b"CAPA\r\n")
        c = capa(s)
        # in TLS from the first byte: no STLS, and login offered (not loopback-plaintext rules)
        assert b"\r\nSTLS\r\n" not in c and b"\r\nUSER\r\n" in c, c
        s.sendall(b"QUIT\r\n")
        assert readline(s).startswith(b"+OK")
        s.close()


def test_imaps_through_the_engine(instance, cafile):
    with Engine(instance) as eng, implicit(instance, eng, [prog("imap-serve"), "true"]) as srv:
        s = tls_connect(srv, cafile)
        greet = readline(s)
        assert greet.startswith(b"* OK [CAPABILITY ") and b"STARTTLS" not in greet, greet
        assert b"AUTH=PLAIN" in greet and b"LOGINDISABLED" not in greet, greet
        s.sendall(b"a LOGOUT\r\n")
        assert readline(s).startswith(b"* BYE")
        s.close()


def test_smtps_through_the_engine_engine_child_not_root(instance, cafile):
    with Engine(instance) as eng, implicit(instance, eng, [prog("smtp-receive")],
                                           env={"SMTPAUTH": "1"}) as srv:
        s = tls_connect(srv, cafile)
        assert smtp_reply(s)[0].startswith(b"220 ")
        s.sendall(b"EHLO client.example\r\n")
        ehlo = b"".join(smtp_reply(s))
        assert b"AUTH PLAIN" in ehlo and b"STARTTLS" not in ehlo, ehlo
        if not os.geteuid():
            (kid,) = children_of(eng.p.pid)
            with open("/proc/%d/status" % kid) as f:
                st = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
            assert [int(x) for x in st["Uid"].split()] == [int(engine_ids()["TLS_UID"])] * 4
        s.sendall(b"QUIT\r\n")
        assert smtp_reply(s)[0].startswith(b"221 ")
        s.close()


def closed_without_a_byte(srv):
    """Connects in plaintext and sends a ClientHello-like junk: the server must close without
    having written anything (never a plaintext greeting on a TLS port)."""
    raw = srv.connect()
    raw.settimeout(20)
    got = b""
    try:
        while True:
            b = raw.recv(4096)
            if not b:
                break
            got += b
    except ConnectionResetError:
        pass
    raw.close()
    return got


@pytest.mark.parametrize("argv", [["pop3-serve", "true"], ["imap-serve", "true"],
                                  ["smtp-receive"]])
def test_engine_unreachable_closes_cleanly_and_logs(instance, argv):
    eng = Engine(instance)
    eng.kill()  # the socket stays, nobody listens
    try:
        with implicit(instance, eng, [prog(argv[0])] + argv[1:]) as srv:
            assert closed_without_a_byte(srv) == b""
            wait_for(lambda: "start implicit TLS through TLS_ENGINE" in srv.logtext(),
                     timeout=10, what="the log line")
            log = srv.logtext()
            assert "%s: fatal: unable to start implicit TLS through TLS_ENGINE" % argv[0] in log
    finally:
        eng.stop()


def test_implicit_without_engine_fails_closed(instance):
    with Server(instance, [prog("pop3-serve"), "true"], env={"TLS_IMPLICIT": "1"}) as srv:
        assert closed_without_a_byte(srv) == b""
        wait_for(lambda: "start implicit TLS through TLS_ENGINE" in srv.logtext(), timeout=10,
                 what="the log line")


def test_tls_serve_still_works_with_implicit_set(instance, cafile):
    # tls-serve did the TLS: the program sees SSL_PROTOCOL and does not go to the engine
    with Server(instance, [prog("tls-serve"), prog("pop3-serve"), "true"],
                env={"TLS_IMPLICIT": "1", "TLS_ENGINE": "/nonexistent/engine"}) as srv:
        s = tls_connect(srv, cafile)
        assert readline(s).startswith(b"+OK ")
        s.sendall(b"CAPA\r\n")
        assert b"\r\nUSER\r\n" in capa(s)
        s.sendall(b"QUIT\r\n")
        assert readline(s).startswith(b"+OK")
        s.close()


def test_greeting_not_sent_before_the_handshake(instance, cafile):
    """A client that connects and waits (no ClientHello) gets nothing: the greeting exists only
    inside TLS."""
    with Engine(instance) as eng, implicit(instance, eng, [prog("pop3-serve"), "true"]) as srv:
        raw = srv.connect()
        raw.settimeout(1.0)
        with pytest.raises(socket.timeout):
            raw.recv(10)
        s = client_context(cafile).wrap_socket(raw, server_hostname=HOST)
        s.settimeout(20)
        assert readline(s).startswith(b"+OK ")
        s.close()
