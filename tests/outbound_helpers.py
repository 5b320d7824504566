"""Helpers for the outbound tests: a dnsmasq on a loopback port, a recording SMTP server, a
test certificate authority made with openssl. Every server here is stopped by its owner."""
import os
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import wait_for, free_port


def free_udp_port():
    """A port free on 127.0.0.1 for both UDP and TCP (dnsmasq binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise AssertionError("no free port")


class Dnsmasq:
    """dnsmasq on 127.0.0.1:PORT answering only from its command line: everything under .test
    is local (unknown names are NXDOMAIN), dead.test is forwarded to a port where nothing
    answers (SERVFAIL / timeout)."""

    def __init__(self, *records):
        for attempt in range(3):  # the port may be taken between the probe and dnsmasq's bind
            try:
                self._start(records)
                return
            except AssertionError as e:
                if "in use" not in str(e) or attempt == 2:
                    raise

    def _start(self, records):
        self.port = free_udp_port()
        self.dead = free_udp_port()
        args = ["/usr/sbin/dnsmasq", "--no-daemon", "--port=%d" % self.port,
                "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
                "--local=/test/", "--server=/dead.test/127.0.0.1#%d" % self.dead,
                "--log-facility=/dev/null", "--pid-file=", "--cache-size=0"]
        args += list(records)
        self.p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for(self._ready, timeout=10, what="dnsmasq to answer")
        except BaseException:
            self.stop()
            raise

    def _ready(self):
        if self.p.poll() is not None:
            raise AssertionError("dnsmasq exited: %r" % self.p.stderr.read())
        # A minimal query for "x.test" type A; any answer means dnsmasq is up.
        q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01x\x04test\x00\x00\x01\x00\x01"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            try:
                s.sendto(q, ("127.0.0.1", self.port))
                s.recvfrom(512)
                return True
            except OSError:
                return False

    @property
    def env(self):
        return {"PILLARBOX_DNS": "127.0.0.1:%d" % self.port, "PILLARBOX_DNS_TIMEOUT": "1"}

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=5)
        if self.p.stderr:
            self.p.stderr.close()


def make_ca(d, hostname="localhost"):
    """A CA and a server certificate for hostname signed by it, plus a self-signed one.
    Returns a dict of paths."""
    d = str(d)
    p = {k: os.path.join(d, k) for k in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem",
                                         "self.key", "self.pem", "ext.cnf")}

    def run(*a):
        subprocess.run(a, check=True, capture_output=True, timeout=60)

    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p["ca.key"],
        "-out", p["ca.pem"], "-days", "2", "-subj", "/CN=pillarbox test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", p["srv.key"],
        "-out", p["srv.csr"], "-subj", "/CN=" + hostname)
    with open(p["ext.cnf"], "w") as f:
        f.write("subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\n" % hostname)
    run("openssl", "x509", "-req", "-in", p["srv.csr"], "-CA", p["ca.pem"], "-CAkey",
        p["ca.key"], "-CAcreateserial", "-out", p["srv.pem"], "-days", "2", "-extfile",
        p["ext.cnf"])
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p["self.key"],
        "-out", p["self.pem"], "-days", "2", "-subj", "/CN=" + hostname,
        "-addext", "subjectAltName=DNS:" + hostname)
    return p


class SmtpServer:
    """A scripted SMTP server on 127.0.0.1 (or ::1) that records every byte a client sends.

    script: dict of overrides; keys 'greeting', 'ehlo' (list of extension lines or None for
    500), 'helo', 'mail', 'rcpt' (function rcpt -> reply), 'data', 'end', 'starttls' (a
    ssl.SSLContext to offer STARTTLS), 'after_starttls' (bytes sent right after the 220 before
    the handshake). Each connection's transcript is appended to self.sessions as a dict with
    'raw' (bytes received in plaintext), 'tls_raw' (after the handshake), 'commands'
    (command lines in order), 'data' (list of raw DATA payloads, end marker included)."""

    def __init__(self, host="127.0.0.1", port=0, **script):
        self.script = script
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(self.family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.sessions = []
        self.stopping = False
        self.threads = []
        self.t = threading.Thread(target=self._accept, daemon=True)
        self.t.start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            th = threading.Thread(target=self._serve, args=(c,), daemon=True)
            self.threads.append(th)
            th.start()

    def stop(self):
        self.stopping = True
        self.t.join(timeout=5)
        self.sock.close()
        for th in self.threads:
            th.join(timeout=5)

    def _serve(self, c):
        s = {"raw": b"", "tls_raw": b"", "commands": [], "data": [], "tls": False,
             "chunks": [], "tls_commands": []}
        self.sessions.append(s)
        c.settimeout(10)
        conn = c
        buf = b""
        key = "raw"
        sc = self.script

        def send(x):
            x = x if isinstance(x, bytes) else x.encode()
            conn.sendall(x)
            if x.startswith(b"421"):
                raise EOFError

        def readline():
            nonlocal buf
            while b"\n" not in buf:
                d = conn.recv(65536)
                if not d:
                    return None
                s[key] += d
                s["chunks"].append(d)
                buf += d
            i = buf.index(b"\n") + 1
            line, buf = buf[:i], buf[i:]
            return line

        try:
            g = sc.get("greeting", "220 test.sink ESMTP\r\n")
            if g is None:  # never greets: wait for the client to give up
                while conn.recv(4096):
                    pass
                return
            send(g)
            in_data = False
            while True:
                line = readline()
                if line is None:
                    return
                if in_data:
                    s["data"][-1] += line
                    if line == b".\r\n":
                        in_data = False
                        send(sc.get("end", "250 2.0.0 queued as X\r\n"))
                    continue
                cmd = line.rstrip(b"\r\n").decode("utf-8", "replace")
                s["commands"].append(cmd)
                if s["tls"]:
                    s["tls_commands"].append(cmd)
                verb = cmd.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    ext = sc.get("ehlo", ["PIPELINING", "8BITMIME", "SIZE 10000000"])
                    if ext is None:
                        send("500 5.5.1 what is EHLO\r\n")
                        continue
                    ext = list(ext)
                    if sc.get("starttls") and not s["tls"]:
                        ext.append("STARTTLS")
                    lines = ["test.sink"] + ext
                    out = ""
                    for i, e in enumerate(lines):
                        out += "250%s%s\r\n" % ("-" if i < len(lines) - 1 else " ", e)
                    send(out)
                elif verb == "HELO":
                    send(sc.get("helo", "250 test.sink\r\n"))
                elif verb == "STARTTLS" and sc.get("starttls") and not s["tls"]:
                    send("220 2.0.0 Ready to start TLS\r\n" + sc.get("after_starttls", ""))
                    buf = b""
                    conn = sc["starttls"].wrap_socket(c, server_side=True)
                    s["tls"] = True
                    key = "tls_raw"
                elif verb == "MAIL":
                    send(sc.get("mail", "250 2.1.0 ok\r\n"))
                elif verb == "RCPT":
                    f = sc.get("rcpt")
                    send(f(cmd) if f else "250 2.1.5 ok\r\n")
                elif verb == "DATA":
                    r = sc.get("data", "354 go ahead\r\n")
                    send(r)
                    if r.startswith("354"):
                        in_data = True
                        s["data"].append(b"")
                elif verb == "RSET":
                    send("250 2.0.0 ok\r\n")
                elif verb == "QUIT":
                    send("221 2.0.0 bye\r\n")
                    return
                else:
                    send("502 5.5.2 unknown command\r\n")
        except (OSError, ssl.SSLError, EOFError):
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass


def dnsmasq_fixture(*records):
    """A module-scoped fixture: a Dnsmasq answering records for the module's tests."""
    @pytest.fixture(scope="module")
    def dns():
        d = Dnsmasq(*records)
        try:
            yield d
        finally:
            d.stop()
    return dns
