"""COMPRESS=DEFLATE (RFC 4978) in imap-maildir, through pipes as test_imap.py does: Python's
imaplib driving the program (IMAP4_stream, its socket layer wrapped in zlib's raw deflate,
wbits=-15), and raw sessions for what imaplib does not do (input pipelined behind COMPRESS,
IDLE under compression, refusals, a corrupt stream)."""
import imaplib
import os
import random
import select
import shlex
import subprocess
import time
import zlib

import pytest

from access_helpers import end
from conftest import base_env, prog
from test_imap import MSG1, Box

imaplib.Commands.setdefault("COMPRESS", ("AUTH", "SELECTED"))


class DeflateIMAP(imaplib.IMAP4_stream):
    """imaplib over a pipe to imap-maildir, with COMPRESS DEFLATE."""
    z = False

    def compress(self):
        typ, dat = self._simple_command("COMPRESS", "DEFLATE")
        if typ == "OK":
            self.zo = zlib.compressobj(wbits=-15)
            self.zi = zlib.decompressobj(wbits=-15)
            self.zbuf = b""
            self.raw_in = self.plain_in = 0
            self.z = True
        return typ, dat

    def send(self, data):
        if self.z:
            data = self.zo.compress(data) + self.zo.flush(zlib.Z_SYNC_FLUSH)
        super().send(data)

    def _more(self):
        chunk = self.readfile.read1(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.raw_in += len(chunk)
        d = self.zi.decompress(chunk)
        self.plain_in += len(d)
        self.zbuf += d

    def read(self, size):
        if not self.z:
            return super().read(size)
        while len(self.zbuf) < size:
            self._more()
        d, self.zbuf = self.zbuf[:size], self.zbuf[size:]
        return d

    def readline(self):
        if not self.z:
            return super().readline()
        while b"\n" not in self.zbuf:
            self._more()
        i = self.zbuf.index(b"\n") + 1
        d, self.zbuf = self.zbuf[:i], self.zbuf[i:]
        return d


@pytest.fixture
def box(tmp_path):
    return Box(tmp_path)


def text(n, seed):
    """n octets of mail-like text lines (compressible, but not trivially)."""
    rnd = random.Random(seed)
    words = [b"mail", b"server", b"folder", b"message", b"pillarbox", b"deflate", b"imap",
             b"the", b"and", b"of", b"compress", b"zlib", b"client"]
    out = []
    size = 0
    while size < n:
        line = b" ".join(rnd.choice(words) for _ in range(rnd.randint(3, 12))) + b"\r\n"
        out.append(line)
        size += len(line)
    return b"".join(out)[:n - 2] + b"\r\n"


def test_imaplib_session_compressed(box, monkeypatch):
    big = b"From: a@example.org\r\nSubject: big\r\n\r\n" + text(300000, 1)
    box.add(MSG1)
    box.add(big.replace(b"\r\n", b"\n"))
    for k, v in base_env(HOME=box.dir).items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("IMAP_TAG", raising=False)
    monkeypatch.delenv("IMAP_INPUT", raising=False)
    m = DeflateIMAP(shlex.quote(prog("imap-maildir")))
    try:
        assert "COMPRESS=DEFLATE" in m.capabilities
        typ, dat = m.compress()
        assert typ == "OK" and dat == [b"DEFLATE active"], (typ, dat)
        typ, dat = m.select("INBOX")
        assert typ == "OK" and dat == [b"2"]
        typ, dat = m.fetch("2", "(BODY.PEEK[])")
        assert typ == "OK" and dat[0][1] == big
        # the 300 KB went over the pipe compressed
        assert m.raw_in < m.plain_in / 2, (m.raw_in, m.plain_in)
        # a literal bigger than the input buffer, inflated on its way in and spooled
        up = b"From: b@example.org\r\nSubject: up\r\n\r\n" + text(200000, 2)
        typ, dat = m.append("INBOX", "(\\Seen)", None, up)
        assert typ == "OK", dat
        typ, dat = m.fetch("3", "(FLAGS BODY.PEEK[])")
        assert typ == "OK" and dat[0][1] == up and b"\\Seen" in dat[0][0]
        typ, dat = m.search(None, "SUBJECT", "up")
        assert typ == "OK" and dat == [b"3"]
        typ, dat = m.compress()  # once is enough
        assert typ == "NO" and dat[0].startswith(b"[COMPRESSIONACTIVE]"), (typ, dat)
        typ, dat = m.noop()
        assert typ == "OK"
    finally:
        typ, dat = m.logout()
    assert typ == "BYE"


class ZSession:
    """A raw session: bytes in, reply lines out, with COMPRESS switched on by hand."""

    def __init__(self, box, *args):
        e = base_env(HOME=box.dir)
        e.pop("IMAP_TAG", None)
        e.pop("IMAP_INPUT", None)
        self.p = subprocess.Popen([prog("imap-maildir")] + list(args), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
        self.raw = b""
        self.buf = b""
        self.zi = self.zo = None
        self.greeting = self.line()

    def start(self):
        """Compression on from here (the plain OK has been read)."""
        self.zo = zlib.compressobj(wbits=-15)
        self.zi = zlib.decompressobj(wbits=-15)
        self.buf += self.zi.decompress(self.raw)
        self.raw = b""

    def z(self, data):
        return self.zo.compress(data) + self.zo.flush(zlib.Z_SYNC_FLUSH)

    def send(self, data, compress=True):
        if self.zo and compress:
            data = self.z(data)
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def line(self, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            src = self.buf if self.zi else self.raw
            if b"\r\n" in src:
                line, rest = src.split(b"\r\n", 1)
                if self.zi:
                    self.buf = rest
                else:
                    self.raw = rest
                return line
            left = deadline - time.monotonic()
            assert left > 0, "no reply line within %ss; got %r" % (timeout, src)
            r, _, _ = select.select([self.p.stdout], [], [], left)
            if r:
                b = os.read(self.p.stdout.fileno(), 65536)
                if not b:
                    raise EOFError(src)
                if self.zi:
                    self.buf += self.zi.decompress(b)
                else:
                    self.raw += b

    def close(self):
        end(self.p, close_outputs=True)


def test_input_pipelined_behind_compress_is_inflated(box):
    """RFC 4978: the client compresses from the CRLF of its COMPRESS line on, so what it sends
    in the same write is already compressed."""
    box.add(MSG1)
    s = ZSession(box)
    try:
        zo = zlib.compressobj(wbits=-15)
        s.send(b"a COMPRESS DEFLATE\r\n" + zo.compress(b"b SELECT INBOX\r\nc LOGOUT\r\n") +
               zo.flush(zlib.Z_SYNC_FLUSH))
        assert s.line() == b"a OK DEFLATE active"  # plain
        s.start()
        lines = []
        while not lines or not lines[-1].startswith(b"c "):
            lines.append(s.line())
        assert b"* 1 EXISTS" in lines
        assert any(x.startswith(b"b OK [READ-WRITE]") for x in lines), lines
        assert lines[-1] == b"c OK Logout completed."
        assert s.p.wait(timeout=10) == 0
    finally:
        s.close()


def test_compress_refusals_keep_the_session_plain(box):
    s = ZSession(box)
    try:
        for cmd, reply in [(b"a COMPRESS GZIP", b"a BAD "), (b"b COMPRESS", b"b BAD "),
                           (b'c COMPRESS "DEFLATE"', b"c BAD ")]:
            s.send(cmd + b"\r\n")
            assert s.line().startswith(reply), cmd
        s.send(b"d CAPABILITY\r\n")
        caps = s.line()
        assert caps.startswith(b"* CAPABILITY ") and b" COMPRESS=DEFLATE" in caps
        assert s.line() == b"d OK Capability completed."
    finally:
        s.close()


def test_idle_pushes_under_compression(box):
    """IDLE under COMPRESS: the EXISTS of a delivery arrives (a complete deflate block, at
    once), and DONE, compressed, ends it."""
    s = ZSession(box, "-P", "-p", "1")
    try:
        s.send(b"a COMPRESS DEFLATE\r\n")
        assert s.line() == b"a OK DEFLATE active"
        s.start()
        s.send(b"b SELECT INBOX\r\n")
        while not s.line().startswith(b"b OK"):
            pass
        s.send(b"c IDLE\r\n")
        assert s.line() == b"+ idling"
        box.add(MSG1)
        assert s.line(timeout=5) == b"* 1 EXISTS"
        s.send(b"DONE\r\n")
        while True:
            line = s.line()
            if line.startswith(b"c "):
                break
        assert line == b"c OK Idle completed."
    finally:
        s.close()


def test_corrupt_compressed_input_ends_the_session(box):
    s = ZSession(box)
    try:
        s.send(b"a COMPRESS DEFLATE\r\n")
        assert s.line() == b"a OK DEFLATE active"
        s.start()
        s.send(b"\xff" * 64, compress=False)
        assert s.p.wait(timeout=10) == 111  # ends, does not hang or run garbage as commands
        assert b"unable to read a command: Protocol error" in s.p.stderr.read()
    finally:
        s.close()
