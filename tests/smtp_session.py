"""SMTP test sessions that pair each command with the reply it must get.

    script(inst, expect(None, 220), expect("EHLO c", 250), expect("RCPT TO:<x@y>", 550))

sends the commands in one go (piped into smtp-receive, as a pipelining client would) and checks
the replies one by one: a failure names the command, the code expected and the reply seen.
`data(payload, code)` sends raw bytes (a message body ending in CRLF.CRLF, a BDAT chunk) that
get one reply. `Live` drives smtp-receive step by step over a socket pair, so smtp-receive sees a
network peer (the pipelining rules apply) and the test can wait for each reply before sending.
"""
import os
import re
import socket
import subprocess
import time

from conftest import prog

REPLY = re.compile(rb"^(\d{3})([ -])(.*)$")
PEER = {"TCPREMOTEIP": "192.0.2.7", "TCPLOCALIP": "192.0.2.1", "TCPREMOTEPORT": "40000"}


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


class Step:
    def __init__(self, cmd, code, text=None, raw=False):
        if isinstance(cmd, str):
            cmd = cmd.encode()
        self.cmd, self.code, self.text = cmd, code, text
        if isinstance(self.text, str):
            self.text = self.text.encode()
        self.wire = b"" if cmd is None else (cmd if raw else cmd + b"\r\n")

    def name(self):
        if self.cmd is None:
            return "(greeting)"
        s = self.cmd[:60]
        return repr(s if len(self.cmd) <= 60 else s + b"...")

    def check(self, got):
        """got: (code, lines) or None."""
        assert got is not None, "%s: expected %d, got no reply" % (self.name(), self.code)
        code, lines = got
        assert code == self.code, "%s: expected %d, got %d %r" % (self.name(), self.code, code,
                                                                 b"/".join(lines))
        if self.text is not None:
            assert lines[-1].startswith(self.text), "%s: expected %r, got %r" % (
                self.name(), self.text, lines[-1])


def expect(cmd, code, text=None):
    """A command line (CRLF added) and the reply code it must get; text: the start of the
    reply's last line (its enhanced code and words), when that is decided too."""
    return Step(cmd, code, text)


def data(payload, code, text=None):
    """Raw bytes sent as they are (a DATA body with its CRLF.CRLF, a BDAT command with its
    chunk) and the one reply they must get."""
    return Step(payload, code, text, raw=True)


def send(payload):
    """Raw bytes that get no reply of their own (the first chunk of a split command...)."""
    return Step(payload, None, raw=True)


def script(inst, *steps, env=None, timeout=60):
    """Pipes every step's bytes into smtp-receive at once and checks every reply in order;
    there must be no reply left over. Returns the CompletedProcess (stdout, stderr)."""
    e = dict(PEER)
    e.update(env or {})
    r = inst.run("smtp-receive", input=b"".join(s.wire for s in steps), env=e, timeout=timeout)
    got = replies(r.stdout)
    want = [s for s in steps if s.code is not None]
    for i, s in enumerate(want):
        s.check(got[i] if i < len(got) else None)
    assert len(got) == len(want), "replies left over: %r" % got[len(want):]
    return r


class Live:
    """smtp-receive on one end of a socket pair: a network peer, one step at a time."""

    def __init__(self, inst, env=None, early=b""):
        e = dict(inst.env, **PEER)
        e.update(env or {})
        self.sock, theirs = socket.socketpair()
        if early:
            self.sock.sendall(early)  # there before the server starts: an early talker
        self.p = subprocess.Popen([prog("smtp-receive")], stdin=theirs, stdout=theirs,
                                  stderr=subprocess.PIPE, env=e)
        theirs.close()
        self.buf = b""

    def reply(self, timeout=20):
        """Reads one complete reply: (code, lines), or None at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(rb"(?:^|\r\n)(\d{3}) [^\r\n]*\r\n", self.buf)
            if m:
                end = m.end()
                got = replies(self.buf[:end])
                self.buf = self.buf[end:]
                return got[-1]
            left = deadline - time.monotonic()
            assert left > 0, "no reply within %ds: %r" % (timeout, self.buf)
            self.sock.settimeout(left)
            c = self.sock.recv(65536)
            if not c:
                return None
            self.buf += c

    def expect(self, cmd, code, text=None):
        """Sends cmd (CRLF added; None sends nothing) and checks the next reply."""
        st = Step(cmd, code, text)
        if st.wire:
            self.sock.sendall(st.wire)
        got = self.reply()
        st.check(got)
        return got

    def send(self, raw):
        self.sock.sendall(raw)

    def closed(self, timeout=20):
        """True when the server has closed the connection (after what it said)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                c = self.sock.recv(65536)
                if not c:
                    return True
                self.buf += c
        except (ConnectionResetError, BrokenPipeError):
            return True

    def close(self):
        try:
            self.sock.close()
        finally:
            if self.p.poll() is None:
                try:
                    self.p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.p.kill()
                    self.p.wait()
            self.stderr = self.p.stderr.read()
            self.p.stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
