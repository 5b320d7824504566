"""tls-serve on its own: implicit TLS and UCSPI-TLS (STARTTLS) with trivial protocol programs,
the TLS floor and suites, SNI, certificate replacement, timeouts, and the key staying in the
TLS engine. Real clients: Python's ssl with a verifying context, openssl s_client."""
import os
import socket
import ssl
import subprocess
import time

import pytest

from conftest import prog, wait_for
from tls_helpers import (Server, client_context, echo_roundtrip, make_cert, peer_cn, readline,
                         s_client)

ECHO = ["sh", "-c", 'printf "hello %s %s [%s]\\r\\n" "$SSL_PROTOCOL" "$SSL_CIPHER" '
        '"${SSL_TLS_SNI_SERVERNAME-unset}"; exec cat']
# The same greeting, then the end of the session (for s_client, which waits for the close).
HELLO = ECHO[:2] + [ECHO[2].replace("; exec cat", "")]

# A STARTTLS protocol program speaking raw UCSPI-TLS: plaintext greeting, waits for STARTTLS,
# throws away whatever was pipelined after it, asks the sidecar for TLS (command from
# $APP_CMD, default Y), reports the facts it got, then echoes inside TLS.
STARTTLS_APP = r'''#!/usr/bin/python3
import os, sys
ctl = int(os.environ["SSLCTLFD"]); rfd = int(os.environ["SSLREADFD"])
wfd = int(os.environ["SSLWRITEFD"]); cmd = os.environ.get("APP_CMD", "Y").encode()
os.write(1, b"220 plain ready\r\n")
buf = b""
while b"\r\n" not in buf:
    c = os.read(0, 4096)
    if not c:
        sys.exit(0)
    buf += c
line, rest = buf.split(b"\r\n", 1)
if line != b"STARTTLS":
    os.write(1, b"500 plaintext only: " + line + b"\r\n")
    sys.exit(0)
os.write(1, b"220 go ahead\r\n")
os.write(ctl, cmd)
facts = b""
if cmd == b"Y":
    while True:
        c = os.read(ctl, 4096)
        if not c:
            break
        facts += c
    if not facts.endswith(b"\0\0"):
        sys.exit(3)
os.close(ctl)
env = " ".join(k for k in sorted(os.environ) if k.startswith(("TLS_", "CERTFILE", "KEYFILE")))
os.write(wfd, b"220 tls discarded=%d facts=%s env=[%s]\r\n"
         % (len(rest), facts.replace(b"\0", b"|"), env.encode()))
while True:
    c = os.read(rfd, 65536)
    if not c:
        break
    os.write(wfd, c)
'''

HOST = "mx.example.test"


@pytest.fixture
def cafile(instance):
    return instance.path("tls", "cert.pem")


@pytest.fixture
def starttls_app(tmp_path):
    p = tmp_path / "starttls-app"
    p.write_text(STARTTLS_APP)
    p.chmod(0o755)
    return str(p)


def tls_connect(server, cafile, name=HOST, verify=True):
    if verify:
        ctx = client_context(cafile)
    else:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    raw = server.connect()
    return ctx.wrap_socket(raw, server_hostname=name)


def recv_all(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(min(1 << 20, n - len(b)))
        if not c:
            break
        b += c
    return b


# ---- implicit TLS ----

def test_implicit_tls_verified_facts_and_echo(instance, cafile):
    with Server(instance, [prog("tls-serve")] + ECHO) as srv:
        with tls_connect(srv, cafile) as s:
            assert s.version() == "TLSv1.2"
            name, _, bits = s.cipher()
            assert name == "ECDHE-ECDSA-AES128-GCM-SHA256"  # server preference: AES-128-GCM
            hello = readline(s)
            assert hello == b"hello TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256 [mx.example.test]\r\n"
            s.sendall(b"ping\r\n")
            assert readline(s) == b"ping\r\n"


def test_implicit_close_notify_when_program_exits(instance, cafile):
    app = ["sh", "-c", "echo bye"]
    with Server(instance, [prog("tls-serve")] + app) as srv:
        with tls_connect(srv, cafile) as s:
            assert recv_all(s, 100) == b"bye\n"
            # a clean TLS end: Python raises SSLEOFError when close_notify is missing
            assert s.recv(10) == b""


def test_bulk_transfer_both_ways_is_intact(instance, cafile):
    data = os.urandom(3 << 20)
    with Server(instance, [prog("tls-serve"), "cat"]) as srv:
        with tls_connect(srv, cafile) as s:
            assert echo_roundtrip(s, data) == data


def test_peer_vanishing_mid_transfer_ends_the_session(instance, cafile):
    """The client floods an echo program without reading, then disappears: the engine must
    not stay blocked between a full pipe and a dead peer."""
    with Server(instance, [prog("tls-serve"), "cat"]) as srv:
        s = tls_connect(srv, cafile)
        s.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sent < (8 << 20):
            try:
                sent += s.send(b"x" * 65536)
            except (ssl.SSLWantWriteError, BlockingIOError):
                time.sleep(0.01)
                if sent > (1 << 20):
                    break
        assert sent > 0
        s.close()
        wait_for(lambda: " end " in srv.logtext(), timeout=15, what="the session to end")


def test_no_sni_gives_default_and_unset_name(instance, cafile):
    with Server(instance, [prog("tls-serve")] + ECHO) as srv:
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.check_hostname = False
        with ctx.wrap_socket(srv.connect(), server_hostname=None) as s:
            assert peer_cn(s) == HOST
            assert readline(s).endswith(b"[unset]\r\n")


def test_handshake_timeout(instance):
    with Server(instance, [prog("tls-serve"), "-K", "300"] + ECHO) as srv:
        s = srv.connect()
        s.settimeout(10)
        t0 = time.monotonic()
        assert s.recv(100) == b""  # closed by tls-serve, nothing sent
        assert time.monotonic() - t0 < 5
        s.close()
        wait_for(lambda: "timed out" in srv.logtext(), timeout=5, what="the timeout logged")


def test_garbage_instead_of_client_hello(instance):
    with Server(instance, [prog("tls-serve")] + ECHO) as srv:
        s = srv.connect()
        s.sendall(b"EHLO plaintext\r\n" * 10)
        s.settimeout(10)
        try:
            got = s.recv(100)
        except ConnectionResetError:
            got = b""
        assert b"hello" not in got
        s.close()
        wait_for(lambda: "handshake failed" in srv.logtext(), timeout=5, what="failure logged")


def test_missing_certificate_refuses_to_start_the_program(instance, tmp_path):
    marker = tmp_path / "ran"
    os.unlink(instance.path("tls", "key.pem"))
    with Server(instance, [prog("tls-serve"), "sh", "-c", "touch %s" % marker]) as srv:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            ctx.wrap_socket(srv.connect(), server_hostname=HOST).recv(10)
        wait_for(lambda: "no usable certificate" in srv.logtext(), timeout=5, what="log line")
    assert not marker.exists()


# ---- the floor and the suites ----

def test_tls11_refused(instance):
    with Server(instance, [prog("tls-serve")] + HELLO) as srv:
        rc, out = s_client(srv.port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0",
                           servername=HOST)
        assert rc != 0 and b"hello" not in out
        wait_for(lambda: "handshake failed" in srv.logtext(), timeout=5, what="failure logged")


def test_tls12_with_openssl_works(instance):
    """The control for the refusals below: the same client, a good suite, succeeds."""
    with Server(instance, [prog("tls-serve")] + HELLO) as srv:
        rc, out = s_client(srv.port, "-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305",
                           servername=HOST, input=b"")
        assert b"hello TLSv1.2 ECDHE-ECDSA-CHACHA20-POLY1305" in out, out


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA",
                                    "ECDHE-ECDSA-AES128-SHA"])
def test_cbc_only_client_refused(instance, cipher):
    with Server(instance, [prog("tls-serve")] + HELLO) as srv:
        rc, out = s_client(srv.port, "-tls1_2", "-cipher", cipher + "@SECLEVEL=0",
                           servername=HOST)
        assert rc != 0 and b"hello" not in out


@pytest.fixture
def rsa_instance(instance):
    """The instance with an RSA default certificate instead of the EC one."""
    make_cert(instance.path("tls"), HOST, "rsa")
    return instance


def test_rsa_certificate_uses_ecdhe_rsa(rsa_instance, cafile):
    with Server(rsa_instance, [prog("tls-serve")] + ECHO) as srv:
        with tls_connect(srv, cafile) as s:
            assert s.cipher()[0] == "ECDHE-RSA-AES128-GCM-SHA256"
            assert readline(s).startswith(b"hello TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256")


@pytest.mark.parametrize("cipher", ["AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA256"])
def test_rsa_key_exchange_only_client_refused(rsa_instance, cipher):
    with Server(rsa_instance, [prog("tls-serve")] + HELLO) as srv:
        rc, out = s_client(srv.port, "-tls1_2", "-cipher", cipher + "@SECLEVEL=0",
                           servername=HOST)
        assert rc != 0 and b"hello" not in out
        rc, out = s_client(srv.port, "-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384",
                           servername=HOST)
        assert b"hello TLSv1.2 ECDHE-RSA-AES256-GCM-SHA384" in out


def test_server_preference_wins(instance):
    with Server(instance, [prog("tls-serve")] + HELLO) as srv:
        # the client prefers ChaCha20, the server AES-128-GCM
        rc, out = s_client(srv.port, "-tls1_2", "-cipher",
                           "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256",
                           servername=HOST)
        assert b"hello TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256" in out


def test_renegotiation_refused(instance):
    with Server(instance, [prog("tls-serve")] + ECHO) as srv:
        p = subprocess.Popen(["openssl", "s_client", "-connect", "127.0.0.1:%d" % srv.port,
                              "-servername", HOST, "-tls1_2", "-legacy_renegotiation"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        try:
            out = b""
            while b"hello" not in out:
                c = p.stdout.read1(4096)
                if not c:
                    break
                out += c
            assert b"hello" in out
            p.stdin.write(b"R\n")  # s_client: renegotiate
            p.stdin.flush()
            rest, _ = p.communicate(timeout=20)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        # the renegotiation is refused with a no_renegotiation alert
        assert b"RENEGOTIATING" in rest and b"no renegotiation" in rest


# ---- SNI ----

@pytest.fixture
def sni_instance(instance):
    make_cert(instance.path("tls", "other.example.test"), "other.example.test", "rsa")
    return instance


def test_sni_picks_the_named_certificate(sni_instance, cafile):
    other_ca = sni_instance.path("tls", "other.example.test", "cert.pem")
    with Server(sni_instance, [prog("tls-serve")] + ECHO) as srv:
        with tls_connect(srv, other_ca, name="other.example.test") as s:
            assert peer_cn(s) == "other.example.test"
            assert readline(s).endswith(b"[other.example.test]\r\n")
        with tls_connect(srv, other_ca, name="OTHER.Example.TEST") as s:
            assert peer_cn(s) == "other.example.test"
        with tls_connect(srv, cafile, name=HOST) as s:
            assert peer_cn(s) == HOST


def test_unknown_sni_gets_the_default(sni_instance, cafile):
    with Server(sni_instance, [prog("tls-serve")] + ECHO) as srv:
        ctx = client_context(cafile)
        ctx.check_hostname = False
        with ctx.wrap_socket(srv.connect(), server_hostname="nobody.example.test") as s:
            assert peer_cn(s) == HOST
            assert readline(s).endswith(b"[nobody.example.test]\r\n")


@pytest.mark.parametrize("name", [b"a" * 300, b"x." * 150, b"\x01\xff\xfe\x80binary",
                                  b"../../../etc", b"..", b"other.example.test/../x",
                                  b"-rf .example"])
def test_hostile_sni_is_harmless(sni_instance, name):
    with Server(sni_instance, [prog("tls-serve")] + HELLO) as srv:
        r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % srv.port,
                            "-servername", name, "-tls1_2", "-ign_eof"], input=b"",
                           capture_output=True, timeout=20)
        out = r.stdout + r.stderr
        if b"hello" in out:
            # served with the default certificate, and the name is not passed on
            assert b"CN = mx.example.test" in out or b"CN=mx.example.test" in out
            assert b"[unset]" in out
        # whatever happened, the next normal connection is fine
        rc, out = s_client(srv.port, "-tls1_2", servername=HOST)
        assert b"hello TLSv1.2" in out


def test_new_certificate_used_by_next_connection(instance, tmp_path):
    with Server(instance, [prog("tls-serve")] + ECHO) as srv:
        with tls_connect(srv, instance.path("tls", "cert.pem")) as s:
            assert readline(s).startswith(b"hello")
            old = s.getpeercert(binary_form=True)
        # an ACME client's way: write new files beside, rename over
        new = tmp_path / "new"
        cert, key = make_cert(str(new), HOST, "ec")
        os.rename(key, instance.path("tls", "key.pem.new"))
        os.rename(cert, instance.path("tls", "cert.pem.new"))
        os.rename(instance.path("tls", "key.pem.new"), instance.path("tls", "key.pem"))
        os.rename(instance.path("tls", "cert.pem.new"), instance.path("tls", "cert.pem"))
        with tls_connect(srv, instance.path("tls", "cert.pem")) as s:
            assert readline(s).startswith(b"hello")
            assert s.getpeercert(binary_form=True) != old


def test_certfile_environment_overrides(instance, tmp_path):
    cert, key = make_cert(str(tmp_path / "alt"), "alt.example.test", "ec")
    env = {"TLS_CERTFILE": cert, "TLS_KEYFILE": key}
    app = ["sh", "-c", 'echo "env=${TLS_CERTFILE-none}${TLS_KEYFILE-none}"']
    with Server(instance, [prog("tls-serve")] + app, env=env) as srv:
        with tls_connect(srv, cert, name="alt.example.test") as s:
            assert peer_cn(s) == "alt.example.test"
            # the program is not told where the key is
            assert recv_all(s, 100) == b"env=nonenone\n"


# ---- STARTTLS (UCSPI-TLS) ----

def starttls_session(srv, cafile, pipelined=b"EHLO x\r\n"):
    raw = srv.connect()
    assert readline(raw) == b"220 plain ready\r\n"
    raw.sendall(b"STARTTLS\r\n" + pipelined)  # one write: the injection attempt
    assert readline(raw) == b"220 go ahead\r\n"
    s = client_context(cafile).wrap_socket(raw, server_hostname=HOST)
    return s


def test_starttls_facts_discard_and_echo(instance, cafile, starttls_app):
    with Server(instance, [prog("tls-serve"), "-S", starttls_app]) as srv:
        with starttls_session(srv, cafile) as s:
            line = readline(s)
            assert line.startswith(b"220 tls discarded=8 ")
            assert (b"facts=SSL_PROTOCOL=TLSv1.2|SSL_CIPHER=ECDHE-ECDSA-AES128-GCM-SHA256|"
                    b"SSL_TLS_SNI_SERVERNAME=mx.example.test||") in line
            s.sendall(b"EHLO inside\r\n")
            assert readline(s) == b"EHLO inside\r\n"  # the echo: nothing from before TLS


def test_starttls_lowercase_y_skips_facts(instance, cafile, starttls_app):
    with Server(instance, [prog("tls-serve"), "-S", starttls_app], env={"APP_CMD": "y"}) as srv:
        with starttls_session(srv, cafile, pipelined=b"") as s:
            assert readline(s).startswith(b"220 tls discarded=0 facts= ")


def test_starttls_never_started_is_plain(instance, starttls_app):
    with Server(instance, [prog("tls-serve"), "-S", starttls_app]) as srv:
        raw = srv.connect()
        assert readline(raw) == b"220 plain ready\r\n"
        raw.sendall(b"HELLO\r\n")
        assert readline(raw) == b"500 plaintext only: HELLO\r\n"
        raw.settimeout(10)
        assert raw.recv(10) == b""  # both the program and the engine are gone
        raw.close()


def test_starttls_failed_handshake_tells_the_program(instance, tmp_path):
    app = tmp_path / "app"
    app.write_text(r'''#!/usr/bin/python3
import os
ctl = int(os.environ["SSLCTLFD"])
os.write(1, b"220 ready\r\n")
os.read(0, 100)
os.write(1, b"220 go\r\n")
os.write(ctl, b"Y")
got = os.read(ctl, 100)
with open(os.environ["OUT"], "w") as f: f.write("eof" if got == b"" else "data")
''')
    app.chmod(0o755)
    out = tmp_path / "out"
    with Server(instance, [prog("tls-serve"), "-S", str(app)], env={"OUT": str(out)}) as srv:
        raw = srv.connect()
        readline(raw)
        raw.sendall(b"STARTTLS\r\n")
        assert readline(raw) == b"220 go\r\n"
        raw.sendall(b"this is not a client hello\r\n" * 4)
        wait_for(lambda: out.exists() and out.read_text(), timeout=10, what="program result")
        assert out.read_text() == "eof"
        raw.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the TLS engine is asked to switch to uid 0")
def test_engine_variables_hidden_from_program(instance, cafile, starttls_app, tmp_path):
    env = {"TLS_CERTFILE": cafile, "TLS_KEYFILE": instance.path("tls", "key.pem"),
           "CERTFILE:x.test": "/nonexistent", "TLS_UID": "0", "TLS_GID": "0"}
    with Server(instance, [prog("tls-serve"), "-S", starttls_app], env=env) as srv:
        with starttls_session(srv, cafile, pipelined=b"") as s:
            assert readline(s).endswith(b"env=[]\r\n")
    with Server(instance, [prog("tls-serve"), "-S", "-Z", starttls_app], env=env) as srv:
        with starttls_session(srv, cafile, pipelined=b"") as s:
            assert b"TLS_KEYFILE" in readline(s)


def test_usage_errors_exit_100(instance):
    for args in ([], ["-K", "x", "cat"], ["-u", "65534", "cat"], ["-g", "65534", "cat"],
                 ["-Q", "cat"]):
        r = instance.run("tls-serve", *args, stdin=subprocess.DEVNULL)
        assert r.returncode == 100, (args, r.stderr)


# ---- privilege separation ----

@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the program as another user")
def test_key_unreadable_from_the_program(instance, cafile):
    app = ["sh", "-c", 'id -u; id -g; if cat "$MAILROOT/tls/key.pem" >/dev/null 2>&1; '
           'then echo READABLE; else echo refused; fi']
    with Server(instance, [prog("tls-serve"), "-u", "65534", "-g", "65534"] + app) as srv:
        with tls_connect(srv, cafile) as s:
            assert recv_all(s, 1000) == b"65534\n65534\nrefused\n"
    # and the control: the same program as root reads it (so the test can fail)
    with Server(instance, [prog("tls-serve")] + app) as srv:
        with tls_connect(srv, cafile) as s:
            assert recv_all(s, 1000) == b"0\n0\nREADABLE\n"
