"""lib/mime against Debian's Dovecot 2.3 on a corpus of real-world shapes (tests/mime_corpus.py):
BODYSTRUCTURE, BODY, ENVELOPE, RFC822.SIZE and BODY[section] for every message must be the
same bytes Dovecot sends (our side through tests/tools/mime-dump, built here; Dovecot started
on a loopback port with its own configuration, see dovecot_helpers.py). The deliberate
differences are listed in DIFFERENCES with their reason; BINARY[] of the whole message is not
compared for the same reason (Dovecot converts every part inside it)."""
import os
import subprocess

import pytest

from conftest import ROOT, SANITIZE
from dovecot_helpers import DOVECOT, Dovecot, fetch_raw
from mime_corpus import BINARY_SECTIONS, MESSAGES, SECTIONS

ITEMS = (["BODYSTRUCTURE", "BODY", "ENVELOPE", "RFC822.SIZE"] + ["BODY[%s]" % s for s in SECTIONS]
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


def build_dump(tmp_path):
    exe = str(tmp_path / "mime-dump")
    cflags = ["-std=c99", "-D_POSIX_C_SOURCE=200809L", "-D_XOPEN_SOURCE=700", "-Wall", "-Wextra",
              "-Werror", "-g", "-I" + os.path.join(ROOT, "lib")]
    if SANITIZE:
        cflags += ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
    subprocess.run(["cc"] + cflags + ["-o", exe, os.path.join(ROOT, "tests", "tools", "mime-dump.c"),
                    os.path.join(ROOT, "lib", "libpillarbox.a"), "-l:libskarnet.a"],
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


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Dovecot's answers for every (message, item)."""
    if not DOVECOT:
        pytest.skip("dovecot not installed (Debian dovecot-imapd, package/deps-test)")
    tmp = tmp_path_factory.mktemp("dovecot")
    d = Dovecot(tmp)
    d.put([m for _, m in MESSAGES])
    d.start()
    try:
        c = d.login()
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
            if (name, item) in DIFFERENCES:
                assert got != want, "%s %s now agrees with Dovecot: drop it from DIFFERENCES" % (
                    name, item)
                continue
            compared += 1
            if got != want:
                bad.append("%s %s\n  dovecot: %r\n  ours:    %r" % (name, item, want, got))
    assert not bad, "%d of %d differ:\n%s" % (len(bad), compared, "\n".join(bad[:40]))
    assert compared > 1000
