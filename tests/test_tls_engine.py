"""tls-engine, the STARTTLS engine service, with the real protocol programs (smtp-receive,
pop3-serve, imap-serve) run alone under tcpserver with TLS_ENGINE set: STARTTLS through the
service, the injection rule, the engine's uid before the ClientHello, a certificate replaced
while it runs, who may connect, and what the client sees when the service is gone."""
import os
import pwd
import select
import signal
import socket
import ssl
import subprocess
import time

import pytest

from conftest import base_env, prog, wait_for
from tls_helpers import Server, client_context, readline

HOST = "mx.example.test"


def engine_ids():
    """TLS_UID/TLS_GID for the engines when root (pb-tls if present, else nobody)."""
    if os.geteuid():
        return {}
    try:
        pw = pwd.getpwnam("pb-tls")
    except KeyError:
        pw = pwd.getpwnam("nobody")
    return {"TLS_UID": str(pw.pw_uid), "TLS_GID": str(pw.pw_gid)}


class Engine:
    """tls-engine on sock (default INSTANCE/run/tls/engine), stderr to a log file."""

    def __init__(self, inst, args=(), sock=None, env=None):
        self.sock = sock or inst.path("run", "tls", "engine")
        os.makedirs(os.path.dirname(self.sock), exist_ok=True)
        self.logpath = self.sock + ".log"
        self.log = open(self.logpath, "wb")
        e = dict(inst.env)
        e.update(engine_ids())
        e.update(env or {})
        # readiness on fd 3 (-d 3), as s6-supervise gives it: after it, fd 3 is free again and
        # the next connection gets it
        rd, wr = os.pipe()
        self.p = subprocess.Popen([prog("tls-engine"), "-d", "3"] + list(args) + [self.sock],
                                  env=e, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=self.log, start_new_session=True,
                                  preexec_fn=lambda: os.dup2(wr, 3), pass_fds=(3,))
        os.close(wr)
        try:
            with os.fdopen(rd, "rb") as r:
                ready, _, _ = select.select([r], [], [], 10)
                assert ready and r.read(1) == b"\n", self.logbytes()
            assert self.p.poll() is None, self.logbytes()
        except BaseException:
            self.stop()
            raise

    def logbytes(self):
        self.log.flush()
        with open(self.logpath, "rb") as f:
            return f.read()

    def kill(self):
        """SIGKILL the service process alone (its engines carry on, as after a crash)."""
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(timeout=10)

    def stop(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(timeout=5)
        try:
            os.killpg(self.p.pid, signal.SIGKILL)  # engines still running
        except ProcessLookupError:
            pass
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()


@pytest.fixture
def cafile(instance):
    return instance.path("tls", "cert.pem")


def smtp_reply(s):
    lines = []
    while True:
        line = readline(s)
        assert line, lines
        lines.append(line)
        if line[3:4] == b" ":
            return lines


def smtp_starttls(srv, cafile, pipelined=b""):
    raw = srv.connect()
    assert smtp_reply(raw)[0].startswith(b"220 ")
    raw.sendall(b"EHLO client.example\r\n")
    ehlo = b"".join(smtp_reply(raw))
    assert b"250-STARTTLS" in ehlo or b"250 STARTTLS" in ehlo
    raw.sendall(b"STARTTLS\r\n" + pipelined)
    line = smtp_reply(raw)[0]
    return raw, line


def children_of(pid):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open("/proc/%s/stat" % p) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(p))
            except (OSError, IndexError):
                pass
    return out


def smtp_server(inst, eng, env=None):
    e = {"TLS_ENGINE": eng.sock}
    e.update(env or {})
    return Server(inst, [prog("smtp-receive")], env=e)


# ---- SMTP ----

def test_smtp_starttls_through_the_engine_discards_pipelined_plaintext(instance, cafile):
    with Engine(instance) as eng, smtp_server(instance, eng) as srv:
        raw, line = smtp_starttls(srv, cafile, pipelined=b"EHLO injected\r\n")
        assert line.startswith(b"220 ")
        s = client_context(cafile).wrap_socket(raw, server_hostname=HOST)
        assert s.version() == "TLSv1.2"
        s.sendall(b"EHLO inside.example\r\n")
        ehlo = b"".join(smtp_reply(s))
        assert ehlo.startswith(b"250-") and b"STARTTLS" not in ehlo
        s.sendall(b"NOOP\r\n")
        # the injected EHLO got no reply: the next one is NOOP's
        assert smtp_reply(s)[0].startswith(b"250 ")
        s.sendall(b"QUIT\r\n")
        assert smtp_reply(s)[0].startswith(b"221 ")
        s.close()
        assert b"loaded again" not in eng.logbytes()  # nothing changed: no reload


def test_plaintext_session_makes_no_engine(instance):
    with Engine(instance) as eng, smtp_server(instance, eng) as srv:
        raw = srv.connect()
        assert smtp_reply(raw)[0].startswith(b"220 ")
        raw.sendall(b"EHLO x\r\n")
        smtp_reply(raw)
        assert children_of(eng.p.pid) == []
        raw.sendall(b"QUIT\r\n")
        assert smtp_reply(raw)[0].startswith(b"221 ")
        raw.close()


def test_smtp_starttls_engine_unreachable_gives_454(instance):
    with Engine(instance) as eng, smtp_server(instance, eng) as srv:
        raw = srv.connect()
        assert smtp_reply(raw)[0].startswith(b"220 ")
        eng.kill()  # SIGKILL before STARTTLS: the socket stays, nobody listens
        raw.sendall(b"EHLO x\r\n")
        assert b"STARTTLS" in b"".join(smtp_reply(raw))
        raw.sendall(b"STARTTLS\r\n")
        assert smtp_reply(raw)[0].startswith(b"454 4.7.0")
        # the session carries on in plaintext
        raw.sendall(b"NOOP\r\n")
        assert smtp_reply(raw)[0].startswith(b"250 ")
        raw.close()


def test_engine_killed_mid_session_closes_the_connection(instance, cafile):
    with Engine(instance) as eng, smtp_server(instance, eng) as srv:
        raw, line = smtp_starttls(srv, cafile)
        assert line.startswith(b"220 ")
        s = client_context(cafile).wrap_socket(raw, server_hostname=HOST)
        s.sendall(b"EHLO inside\r\n")
        smtp_reply(s)
        s.sendall(b"MAIL FROM:<a@example.test>\r\n")
        assert smtp_reply(s)[0].startswith(b"250 ")
        kids = children_of(eng.p.pid)
        assert len(kids) == 1
        os.kill(kids[0], signal.SIGKILL)
        s.settimeout(10)
        # the connection ends at once: no half-written reply, no plaintext after TLS
        try:
            got = s.recv(100)
        except (ssl.SSLError, ConnectionResetError):
            got = b""
        assert got == b""
        # and smtp-receive went away with it
        wait_for(lambda: not [p for p in children_of(srv.p.pid)], timeout=10,
                 what="smtp-receive to exit")


def test_service_killed_mid_session_leaves_the_session_alone(instance, cafile):
    """SIGKILL of the service process while a TLS session runs: that session's engine is a
    process of its own and carries on; a new STARTTLS then gets 454."""
    with Engine(instance) as eng, smtp_server(instance, eng) as srv:
        raw, line = smtp_starttls(srv, cafile)
        assert line.startswith(b"220 ")
        s = client_context(cafile).wrap_socket(raw, server_hostname=HOST)
        s.sendall(b"EHLO inside\r\n")
        smtp_reply(s)
        eng.kill()
        s.sendall(b"MAIL FROM:<a@example.test>\r\n")
        assert smtp_reply(s)[0].startswith(b"250 ")
        s.sendall(b"QUIT\r\n")
        assert smtp_reply(s)[0].startswith(b"221 ")
        s.close()
        raw, line = smtp_starttls(srv, cafile)
        assert line.startswith(b"454 4.7.0")
        raw.close()


def test_engine_child_is_not_root_before_the_client_hello(instance, cafile):
    if os.geteuid():
        pytest.skip("needs root: the drop to TLS_UID is what is checked")
    want = int(engine_ids()["TLS_UID"])
    with Engine(instance) as eng, smtp_server(instance, eng) as srv:
        raw, line = smtp_starttls(srv, cafile)
        assert line.startswith(b"220 ")
        wait_for(lambda: children_of(eng.p.pid), timeout=10, what="the engine child")
        (kid,) = children_of(eng.p.pid)

        def status():
            with open("/proc/%d/status" % kid) as f:
                return dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
        # seen just after its fork, the child may not have dropped root yet: it must before the
        # ClientHello, which has not been sent (a bounded wait; a child that stays root fails)
        wait_for(lambda: [int(x) for x in status()["Uid"].split()] == [want] * 4, timeout=10,
                 what="the engine child's drop to TLS_UID")
        st = status()
        assert [int(x) for x in st["Uid"].split()] == [want] * 4
        assert st["Groups"].split() == [engine_ids()["TLS_GID"]]
        # the service itself read nothing from the client and is still root
        with open("/proc/%d/status" % eng.p.pid) as f:
            assert "Uid:\t0\t0\t0\t0" in f.read()
        s = client_context(cafile).wrap_socket(raw, server_hostname=HOST)
        s.sendall(b"QUIT\r\n")
        assert smtp_reply(s)[0].startswith(b"221 ")
        s.close()


def test_replaced_certificate_used_by_next_connection(instance, cafile, tmp_path):
    with Engine(instance) as eng, smtp_server(instance, eng) as srv:
        raw, _ = smtp_starttls(srv, cafile)
        s = client_context(cafile).wrap_socket(raw, server_hostname=HOST)
        old = s.getpeercert(binary_form=True)
        s.close()
        # a new self-signed pair, renamed into place
        new_c, new_k = tmp_path / "c.pem", tmp_path / "k.pem"
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
                            "/CN=" + HOST, "-addext", "subjectAltName=DNS:" + HOST,
                            "-keyout", str(new_k), "-out", str(new_c)],
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        os.replace(str(new_k), instance.path("tls", "key.pem.new"))
        os.rename(instance.path("tls", "key.pem.new"), instance.path("tls", "key.pem"))
        os.replace(str(new_c), instance.path("tls", "cert.pem"))
        raw, _ = smtp_starttls(srv, cafile)
        s = client_context(instance.path("tls", "cert.pem")).wrap_socket(raw,
                                                                         server_hostname=HOST)
        assert s.getpeercert(binary_form=True) != old
        s.close()
        assert b"loaded again" in eng.logbytes()


def test_uid_not_allowed_is_refused(instance, shared_tmp):
    if os.geteuid():
        pytest.skip("needs root: a second uid connects")
    sock = os.path.join(shared_tmp, "engine")
    with Engine(instance, args=["-a", "4242"], sock=sock) as eng:
        code = ("import socket,os,sys\n"
                "os.setgid(65534); os.setgroups([]); os.setuid(65534)\n"
                "s=socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])\n"
                "a,b=socket.socketpair()\n"
                "try:\n"
                "  socket.send_fds(s,[b'Y'],[a.fileno(),a.fileno(),b.fileno()])\n"
                "  print(repr(s.recv(100)))\n"
                "except OSError as e: print('error', e.errno)\n")
        r = subprocess.run(["/usr/bin/python3", "-c", code, sock], capture_output=True,
                           timeout=30)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() in (b"b''", b"error 104", b"error 32"), r.stdout
        wait_for(lambda: b"uid not allowed" in eng.logbytes(), timeout=10, what="the log line")
        assert b"uid 65534" in eng.logbytes()
        assert children_of(eng.p.pid) == []


def test_handover_junk_is_refused(instance):
    with Engine(instance) as eng:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(eng.sock)
        s.sendall(b"Y")  # no descriptors
        assert s.recv(100) == b""
        s.close()
        wait_for(lambda: b"receive the connection" in eng.logbytes(), timeout=10,
                 what="the engine's complaint")


def test_usage_and_missing_ids(instance):
    r = subprocess.run([prog("tls-engine"), "-c", "x"], env=instance.env, capture_output=True,
                       timeout=10)
    assert r.returncode == 100
    if not os.geteuid():
        e = dict(instance.env)
        r = subprocess.run([prog("tls-engine"), instance.path("x")], env=e, capture_output=True,
                           timeout=10)
        assert r.returncode == 100 and b"TLS_UID" in r.stderr


# ---- POP3 and IMAP ----

def test_pop3_stls_through_the_engine(instance, cafile):
    with Engine(instance) as eng, Server(instance, [prog("pop3-serve"), "true"],
                                         env={"TLS_ENGINE": eng.sock}) as srv:
        raw = srv.connect()
        assert readline(raw).startswith(b"+OK")
        raw.sendall(b"CAPA\r\n")
        capa = b""
        while not capa.endswith(b"\r\n.\r\n"):
            capa += readline(raw)
        assert b"STLS" in capa
        raw.sendall(b"STLS\r\nCAPA\r\n")  # CAPA injected in plaintext
        assert readline(raw).startswith(b"+OK")
        s = client_context(cafile).wrap_socket(raw, server_hostname=HOST)
        s.sendall(b"NOOP\r\n")
        line = readline(s)
        assert not line.startswith(b"+OK Capability")
        s.sendall(b"QUIT\r\n")
        s.close()


def test_pop3_stls_engine_gone(instance):
    with Engine(instance) as eng, Server(instance, [prog("pop3-serve"), "true"],
                                         env={"TLS_ENGINE": eng.sock}) as srv:
        eng.kill()
        raw = srv.connect()
        assert readline(raw).startswith(b"+OK")
        raw.sendall(b"STLS\r\n")
        assert readline(raw).startswith(b"-ERR [SYS/TEMP]")
        raw.close()


def test_imap_starttls_through_the_engine(instance, cafile):
    with Engine(instance) as eng, Server(instance, [prog("imap-serve"), "true"],
                                         env={"TLS_ENGINE": eng.sock}) as srv:
        raw = srv.connect()
        greet = readline(raw)
        assert b"STARTTLS" in greet
        raw.sendall(b"a STARTTLS\r\nb CAPABILITY\r\n")  # b injected in plaintext
        assert readline(raw).startswith(b"a OK")
        s = client_context(cafile).wrap_socket(raw, server_hostname=HOST)
        s.sendall(b"c NOOP\r\n")
        line = readline(s)
        assert line.startswith(b"c OK"), line
        s.sendall(b"d LOGOUT\r\n")
        s.close()


def test_imap_starttls_engine_gone(instance):
    with Engine(instance) as eng, Server(instance, [prog("imap-serve"), "true"],
                                         env={"TLS_ENGINE": eng.sock}) as srv:
        eng.kill()
        raw = srv.connect()
        readline(raw)
        raw.sendall(b"a STARTTLS\r\n")
        assert readline(raw).startswith(b"a NO [UNAVAILABLE]")
        raw.close()


def test_closed_notification_fd_is_refused(instance):
    """-d names an fd that is not open: refused at once (it would otherwise be reused by the
    service's own self-pipe, closed by the readiness write, and the service would spin)."""
    e = dict(instance.env)
    e.update(engine_ids())
    r = subprocess.run([prog("tls-engine"), "-d", "7", instance.path("run", "tls", "e2")],
                       env=e, capture_output=True, timeout=10)
    assert r.returncode == 100 and b"notification fd" in r.stderr
