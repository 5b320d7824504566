"""lib/mime against Debian's Dovecot 2.3 on a corpus of real-world shapes (tests/mime_corpus.py):
BODYSTRUCTURE, BODY, ENVELOPE, RFC822.SIZE and BODY[section] for every message must be the
same bytes Dovecot sends (our side through tests/tools/mime-dump, built here; Dovecot started
on a loopback port with its own configuration, see dovecot_helpers.py). The deliberate
differences are listed in DIFFERENCES with their reason; BINARY[] of the whole message is not
compared for the same reason (Dovecot converts every part inside it)."""
import imaplib
import os
import shutil
import subprocess

import pytest

from conftest import LIBPILLARBOX, ROOT, SANITIZE
import dovecot_helpers
from mime_corpus import BINARY_SECTIONS, MESSAGES, PARTIALS, SECTIONS

ITEMS = (["BODYSTRUCTURE", "BODY", "ENVELOPE", "RFC822.SIZE"] + ["BODY[%s]" % s for s in SECTIONS]
         + PARTIALS
         + ["BINARY[%s]" % s for s in BINARY_SECTIONS]
         + ["BINARY.SIZE[%s]" % s for s in BINARY_SECTIONS if s])

# (message name, item) -> why we answer differently from Dovecot 2.3.
CONVERTED = ("Dovecot's BINARY of a message or multipart part converts every encoded part inside "
             "it to binary and rewrites its Content-Transfer-Encoding field; we send such a "
             "part as it is stored (RFC 3516 defines BINARY for leaf parts)")
DIFFERENCES = {
    ("rfc822-without-mime-version", "BINARY[1]"): CONVERTED,
    ("rfc822-without-mime-version", "BINARY.SIZE[1]"): CONVERTED,
}


# Items where Dovecot's own answer depends on its cache state (seen to change between runs):
# not compared. A header without an empty line and without a final LF: HEADER.FIELDS ends with
# an empty line when Dovecot parses the message, without one when it answers from its cache.
UNSTABLE = {("no-header-end", "BODY[HEADER.FIELDS (From Subject)]")}


def build_dump(tmp_path):
    exe = str(tmp_path / "mime-dump")
    cflags = ["-std=c99", "-D_POSIX_C_SOURCE=200809L", "-D_XOPEN_SOURCE=700", "-Wall", "-Wextra",
              "-Werror", "-g", "-I" + os.path.join(ROOT, "lib")]
    if SANITIZE:
        cflags += ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
    src = os.path.join(ROOT, "tests", "tools", "mime-dump.c")
    subprocess.run(["cc"] + cflags + ["-o", exe, src,
                    LIBPILLARBOX, "-l:libskarnet.a"],
                   check=True, timeout=120)
    return exe


def dump(exe, path, items):
    r = subprocess.run([exe, path] + items, capture_output=True, timeout=60,
                       env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0"))
    assert r.returncode == 0, r.stderr
    out, pos, res = r.stdout, 0, []
    for _ in items:
        nl = out.index(b"\n", pos)
        n = int(out[pos:nl])
        res.append(out[nl + 1:nl + 1 + n])
        pos = nl + 1 + n + 1
    return res


def peek(item):
    for a in ("BODY[", "BINARY["):
        if item.startswith(a):
            return item.replace("[", ".PEEK[", 1)
    return item


def fetch_raw(client, seq, item):
    """FETCH seq (item): the reply's bytes after "* seq FETCH (" with the literals inlined as
    {n}\\r\\n<bytes>, without the final ")": exactly what the server sent; for a tagged NO,
    "NO [CODE]"."""
    client.untagged_responses.pop("FETCH", None)
    typ, data = client.fetch(str(seq), "(%s)" % item)
    if typ == "NO":
        return b"NO " + data[-1].split(b"]")[0] + b"]"
    assert typ == "OK", data
    out = b""
    for d in data:
        out += d[0] + b"\r\n" + d[1] if isinstance(d, tuple) else d
    prefix = b"%d (" % seq
    assert out.startswith(prefix) and out.endswith(b")"), out
    return out[len(prefix):-1]


@pytest.fixture(scope="module")
def reference():
    """Dovecot's answers for every (message, item): the corpus in its INBOX (cur/, in name
    order, so message n is MESSAGES[n-1])."""
    why = dovecot_helpers.usable()
    if why:
        pytest.skip(why)
    d = dovecot_helpers.Dovecot()
    try:
        md = d.maildir()
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(md, sub))
        for i, (_, m) in enumerate(MESSAGES):
            with open(os.path.join(md, "cur", "%010d.M1P1.ref:2," % (i + 1)), "wb") as f:
                f.write(m)
        for dirpath, _, files in os.walk(os.path.join(d.dir, "home")):
            shutil.chown(dirpath, "nobody", "nogroup")
            for f in files:
                shutil.chown(os.path.join(dirpath, f), "nobody", "nogroup")
        d.start()
        c = imaplib.IMAP4("127.0.0.1", d.port, timeout=30)
        c.login(d.user, d.password)
        typ, data = c.select("INBOX", readonly=True)
        assert typ == "OK" and int(data[0]) == len(MESSAGES), data
        ref = {}
        for i, (name, _) in enumerate(MESSAGES):
            for item in ITEMS:
                ref[(name, item)] = fetch_raw(c, i + 1, peek(item))
        c.logout()
    finally:
        d.stop()
    return ref


def test_same_as_dovecot(reference, tmp_path):
    exe = build_dump(tmp_path)
    bad = []
    compared = 0
    for name, msg in MESSAGES:
        path = tmp_path / name
        path.write_bytes(msg)
        ours = dump(exe, str(path), ITEMS)
        for item, got in zip(ITEMS, ours):
            want = reference[(name, item)]
            if (name, item) in UNSTABLE:
                continue
            if (name, item) in DIFFERENCES:
                assert got != want, "%s %s now agrees with Dovecot: drop it from DIFFERENCES" % (
                    name, item)
                continue
            compared += 1
            if got != want:
                bad.append("%s %s\n  dovecot: %r\n  ours:    %r" % (name, item, want, got))
    assert not bad, "%d of %d differ:\n%s" % (len(bad), compared, "\n".join(bad[:40]))
    assert compared > 1000
