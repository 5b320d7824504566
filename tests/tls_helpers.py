"""Helpers for the TLS and AUTH tests: a tcpserver on a loopback port running a command line,
certificates made with openssl, and a verifying client context. Every server is stopped by
its owner (use `with Server(...) as s:`)."""
import os
import signal
import socket
import ssl
import subprocess
import time

from conftest import base_env, free_port, prog, wait_for


def listening(port):
    """True when something listens on 127.0.0.1:port (read from /proc, so no connection is
    made, so no session is started)."""
    want = ":%04X" % port
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(f) as fh:
                next(fh)
                for ln in fh:
                    parts = ln.split()
                    if parts[1].endswith(want) and parts[3] == "0A":
                        return True
        except OSError:
            pass
    return False


class Server:
    """tcpserver on 127.0.0.1:PORT running argv (a list) for each connection. stderr of
    tcpserver and everything under it goes to self.logpath."""

    def __init__(self, inst, argv, env=None, logdir=None):
        self.port = free_port()
        e = dict(inst.env if inst is not None else base_env())
        e.update(env or {})
        logdir = logdir or (inst.root if inst is not None else "/tmp")
        self.logpath = os.path.join(logdir, "server-%d.log" % self.port)
        self.log = open(self.logpath, "wb")
        self.p = subprocess.Popen(["tcpserver", "-v", "-R", "-H", "-l", "localhost", "127.0.0.1",
                                   str(self.port)] + list(argv), env=e, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=self.log,
                                  start_new_session=True)
        try:
            wait_for(lambda: self.p.poll() is not None or listening(self.port), timeout=10,
                     what="tcpserver to listen")
            assert self.p.poll() is None, "tcpserver exited: " + self.logtext()
        except BaseException:
            self.stop()
            raise

    def logtext(self):
        self.log.flush()
        with open(self.logpath, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(timeout=5)
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()

    def connect(self, timeout=10):
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)


def client_context(cafile):
    """A verifying client context that trusts exactly cafile."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def make_cert(d, name, kind="ec"):
    """A self-signed certificate for name in d/cert.pem + d/key.pem (kind "ec" or "rsa")."""
    os.makedirs(d, exist_ok=True)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if kind == "ec" else \
        ["-newkey", "rsa:2048"]
    subprocess.run(["openssl", "req", "-x509"] + key + ["-nodes", "-keyout",
                    os.path.join(d, "key.pem"), "-out", os.path.join(d, "cert.pem"), "-days", "2",
                    "-subj", "/CN=" + name, "-addext", "subjectAltName=DNS:" + name],
                   check=True, capture_output=True, timeout=60)
    return os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")


def peer_cn(tls_sock):
    cert = tls_sock.getpeercert()
    for rdn in cert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return v
    return None


def readline(sock, limit=65536):
    """Reads one CRLF-terminated line byte by byte (so nothing after it is consumed)."""
    b = b""
    while not b.endswith(b"\r\n"):
        c = sock.recv(1)
        if not c:
            break
        b += c
        assert len(b) < limit
    return b


def s_client(port, *args, input=b"", servername=None, timeout=20):
    """Runs openssl s_client against 127.0.0.1:port; returns (rc, output)."""
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-ign_eof"]
    if servername is not None:
        cmd += ["-servername", servername]
    cmd += list(args)
    r = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)
    return r.returncode, r.stdout + r.stderr


def echo_roundtrip(tls_sock, data, timeout=60):
    """Sends data and reads as many bytes back, both at once, from one thread (an SSL socket
    must not be used by two threads at the same time). Returns what was read."""
    import selectors
    tls_sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(tls_sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    sent, got = 0, bytearray()
    deadline = time.monotonic() + timeout
    try:
        while len(got) < len(data) and time.monotonic() < deadline:
            sel.select(timeout=1)
            if sent < len(data):
                try:
                    sent += tls_sock.send(data[sent:sent + 65536])
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    pass
            while True:
                try:
                    c = tls_sock.recv(1 << 20)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    break
                if not c:
                    return bytes(got)
                got += c
            if sent >= len(data):
                sel.modify(tls_sock, selectors.EVENT_READ)
    finally:
        sel.close()
        tls_sock.setblocking(True)
    return bytes(got)
