"""Helpers shared by the POP3 and IMAP tests: the pre-login fronts driven through pipes with a
stand-in checkpassword program (test_pop3.py, test_imap_serve.py), a session's process on
pipes (those and test_imap.py, test_imap_compress.py), a UCSPI-TLS stand-in, and the real
clients' servers through tcpserver and tls-serve (test_pop3_clients.py, test_imap_clients.py).
"""
import os
import select
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from conftest import ROOT, base_env, free_port, stop_procs, wait_for

# The checkpassword stand-in: joe / $FAKE_PASS is good (it then runs the rest of its command
# line as that user, HOME $FAKE_HOME); each run is counted in $FAKE_RUNS when that is set.
FAKECHECK = r'''#!/usr/bin/python3
import os, sys
d = b""
while True:
    b = os.read(3, 1024)
    if not b:
        break
    d += b
if os.environ.get("FAKE_RUNS"):
    with open(os.environ["FAKE_RUNS"], "a") as f:
        f.write("run\n")
f = d.split(b"\0")
if len(f) >= 2 and f[0] == b"joe" and f[1] == os.environb[b"FAKE_PASS"]:
    os.environ["HOME"] = os.environ["FAKE_HOME"]
    os.environ["USER"] = "joe@example.test"
    os.execvp(sys.argv[1], sys.argv[1:])
sys.exit(int(os.environ.get("FAKE_FAILCODE", "1")))
'''


class FakeCheckBox:
    """A Maildir, an instance root and the environment to serve them through a pre-login front
    and FAKECHECK. Subclasses say which front (argv)."""

    def __init__(self, tmp_path, password, control=False, runs=False, **env):
        self.dir = str(tmp_path / "Maildir")
        for sub in ("new", "cur", "tmp"):
            os.makedirs(os.path.join(self.dir, sub))
        self.root = str(tmp_path / "root")
        os.makedirs(os.path.join(self.root, "control") if control else self.root)
        self.check = str(tmp_path / "fakecheck")
        self.runs = str(tmp_path / "runs")
        with open(self.check, "w") as f:
            f.write(FAKECHECK)
        os.chmod(self.check, 0o755)
        if runs:
            env["FAKE_RUNS"] = self.runs
        self.env = base_env(MAILROOT=self.root, FAKE_HOME=self.dir, FAKE_PASS=password,
                            TCPREMOTEIP="127.0.0.1", **env)
        self.seq = 0

    def add(self, body, name=None, sub="new", when=None):
        self.seq += 1
        if name is None:
            name = "%d.M%dP1.host" % (when or 1700000000 + self.seq, self.seq)
        with open(os.path.join(self.dir, sub, name), "wb") as f:
            f.write(body)
        return name

    def run(self, data, env=None, timeout=30, argv=None):
        e = dict(self.env)
        e.update(env or {})
        return subprocess.run(argv or self.argv(), input=data, env=e, capture_output=True,
                              timeout=timeout)


def end(p, close_outputs=False):
    """Ends a session's process: its input closed, reaped (killed past 10 s)."""
    try:
        p.stdin.close()
    except OSError:
        pass
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    if close_outputs:
        p.stdout.close()
        p.stderr.close()


class PipeSession:
    """A protocol program on pipes, read a CRLF line at a time with a bound."""

    def __init__(self, argv, env, pass_fds=()):
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=env, pass_fds=pass_fds)
        self.buf = b""

    def send(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def line(self, timeout=10):
        deadline = time.monotonic() + timeout
        fd = self.p.stdout.fileno()
        while b"\r\n" not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0, "no reply line within %ss; got %r" % (timeout, self.buf)
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise EOFError(self.buf)
                self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def close(self):
        end(self.p)


class FakeTLS:
    """A stand-in UCSPI-TLS sidecar: SSLCTLFD is a socketpair, and 'TLS' is plaintext over two
    pipes, so that STARTTLS's state handling is tested without a handshake."""

    def __init__(self):
        self.ctl_ours, self.ctl_theirs = socket.socketpair()
        self.rd_theirs, self.rd_ours = os.pipe()
        self.wr_ours, self.wr_theirs = os.pipe()

    def env(self):
        return {"SSLCTLFD": str(self.ctl_theirs.fileno()), "SSLREADFD": str(self.rd_theirs),
                "SSLWRITEFD": str(self.wr_theirs)}

    def fds(self):
        return (self.ctl_theirs.fileno(), self.rd_theirs, self.wr_theirs)

    def after_spawn(self):
        self.ctl_theirs.close()
        os.close(self.rd_theirs)
        os.close(self.wr_theirs)

    def handshake(self):
        self.ctl_ours.settimeout(10)
        assert self.ctl_ours.recv(1) == b"Y"
        self.ctl_ours.sendall(b"SSL_PROTOCOL=TLSv1.2\0SSL_CIPHER=FAKE\0\0")
        self.ctl_ours.close()


def lines(out):
    return [l for l in out.split(b"\r\n") if l]


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# ---- real clients through tcpserver -> tls-serve [-S] -> PROTO-serve -> auth-check ----

USER = "joe@example.test"
PASSWORD = "correct horse"


def tls_context():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


class Servers:
    """port: PROTO with STARTTLS/STLS (tls-serve -S); sport: implicit TLS. proto is "imap" or
    "pop3"; the servers' stderr goes to the instance's file log (or nowhere)."""

    def __init__(self, instance, proto, allow_plain=False, log=None):
        self.instance = instance
        self.port = free_port()
        self.sport = free_port()
        pre = proto.upper()
        env = dict(instance.env, **{pre + "_FAIL_DELAY": "0"})
        if allow_plain:
            env[pre + "_ALLOW_PLAINTEXT_AUTH"] = "1"
        chain = [proto + "-serve", "auth-check", proto + "-maildir"]
        self.log = open(instance.path(log), "w") if log else None
        err = self.log or subprocess.DEVNULL
        self.procs = [
            subprocess.Popen(["tcpserver", "-R", "-H", "-l", "localhost", "127.0.0.1",
                              str(self.port), "tls-serve", "-S"] + chain, env=env,
                             stdout=subprocess.DEVNULL, stderr=err),
            subprocess.Popen(["tcpserver", "-R", "-H", "-l", "localhost", "127.0.0.1",
                              str(self.sport), "tls-serve"] + chain, env=env,
                             stdout=subprocess.DEVNULL, stderr=err),
        ]
        try:
            wait_for(lambda: listening(self.port) and listening(self.sport), what="tcpserver")
        except BaseException:
            self.stop()
            raise

    def stop(self):
        stop_procs(self.procs)
        if self.log:
            self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


@pytest.fixture
def mailbox(instance):
    instance.add_user(USER, PASSWORD)
    return instance


def put(instance, n, body=None, sub="new", tail=b""):
    """Puts message n straight into USER's Maildir, the way a delivery does."""
    d = instance.maildir(USER)
    name = "%d.M%dP99.mx.example.test" % (1700000000 + n, n)
    data = body if body is not None else (
        b"From: sender@example.org\nTo: " + USER.encode() + b"\nSubject: message %d\n"
        b"Message-ID: <%d@example.org>\n\nHello %d.\n" % (n, n, n) + tail)
    with open(os.path.join(d, "tmp", name), "wb") as f:
        f.write(data)
    os.rename(os.path.join(d, "tmp", name), os.path.join(d, sub, name))
    return name, data


def wire(data):
    return data.replace(b"\n", b"\r\n")


# ---- the service templates as an instance gets them ----

def start_notifying_services(tmp_path, names, env, procs):
    """Copies services/NAME for each name and runs it as the caller (env/SERVICE_USER emptied:
    that is for a root-made instance), waiting for its readiness line on fd 3; appends the
    processes to procs (stop them with conftest.stop_procs)."""
    for name in names:
        d = tmp_path / "service" / name
        shutil.copytree(os.path.join(ROOT, "services", name), d)
        (d / "env" / "SERVICE_USER").write_text("")
        r, w = os.pipe()  # notification-fd 3
        procs.append(subprocess.Popen(["./run"], cwd=str(d), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, env=env,
                                      pass_fds=(3, w), preexec_fn=lambda w=w: os.dup2(w, 3)))
        os.close(w)
        assert os.read(r, 1) == b"\n"  # ready: listening
        os.close(r)


def copy_service(tmp_path, name):
    d = tmp_path / "service" / name
    shutil.copytree(os.path.join(ROOT, "services", name), d)
    return d


def start_listening_service(d, port, env, procs):
    """Runs the copied service d on port, as the caller (the instance is in a 0700 tmp_path:
    drop nothing, one uid, as when not root); appends the process to procs."""
    (d / "env" / "PORT").write_text("%d\n" % port)
    (d / "env" / "SERVICE_USER").write_text("")
    (d / "env" / "TLS_USER").write_text("")
    procs.append(subprocess.Popen(["./run"], cwd=str(d), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, env=env))
