"""Nevers you can check with nm (issue 11): which built programs, and which lib/ modules, may
hold a piece of code. The table NEVERS below is the one place that says who may; a program or
a module outside its row that links the piece fails the test with the row's reason.

- The TLS engine (BearSSL's br_ssl_*) only in the two programs that speak TLS. BearSSL's
  hashes, HMAC and RSA may serve any program (DKIM, SRS, session tokens).
- tinycdb (cdb_*) only in the modules whose headers say they use it. skalibs exports cdb_*
  names too, with other signatures (doc/hacking.md): nothing of ours may include
  <skalibs/cdb.h>, so every cdb_* reference is tinycdb's.
"""
import glob
import os
import re
import subprocess

import pytest

from conftest import BIN, BUILD, ROOT

# name: (what, symbol regex, "programs" or "modules", the only ones allowed to hold it, why)
NEVERS = {
    "tls-engine": ("BearSSL's TLS engine", r"^br_ssl_", "programs",
                   {"tls-serve", "tls-engine", "smtp-send"},
                   "a TLS engine in a program is code a network peer can reach; TLS is done by "
                   "tls-serve (implicit TLS) and tls-engine (STARTTLS) for the servers and in "
                   "smtp-send for outbound mail"),
    "tinycdb": ("tinycdb", r"^cdb_", "modules", {"cdbfile", "cdbmake"},
                "every constant database is read through lib/cdbfile (for lib/lookup and "
                "lib/authdb) and written through lib/cdbmake (their headers say so); see "
                "doc/hacking.md on the cdb_* clash"),
    "passwd-reader": ("the reader of passwd.cdb", r"^(lookup_account|authdb_\w+)$", "programs",
                      {"auth-serve"},
                      "the password hashes are read by the auth service alone (issue 9, issue "
                      "11 item 3): every other program asks it (lib/authclient)"),
}

# Programs every build has: an empty or partial build/bin must not pass as "nothing found".
EXPECTED_PROGRAMS = {os.path.basename(p)[:-2] for p in glob.glob(os.path.join(ROOT, "bin", "*.c"))}


def symbols(path, defined):
    """The symbol names of an object or program: defined ones (T, D, B, R...) or undefined."""
    args = ["nm", "--defined-only" if defined else "--undefined-only", path]
    r = subprocess.run(args, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return {l.split()[-1] for l in r.stdout.decode().splitlines() if l.strip()}


def holders(where, pattern):
    """{name: [matching symbols]} for every program (defined symbols) or every lib/ module
    (the symbols its object refers to) holding a symbol that matches pattern."""
    rx = re.compile(pattern)
    if where == "programs":
        names = sorted(os.listdir(BIN))
        assert EXPECTED_PROGRAMS <= set(names), "not built: %s" % sorted(EXPECTED_PROGRAMS - set(names))
        paths = {n: os.path.join(BIN, n) for n in names}
        defined = True
    else:
        objs = sorted(glob.glob(os.path.join(BUILD, "lib", "*.o")))
        srcs = glob.glob(os.path.join(ROOT, "lib", "*.c"))
        assert len(objs) >= len(srcs), "lib/ is not built"
        paths = {os.path.basename(o)[:-2]: o for o in objs}
        defined = False
    out = {}
    for n, p in paths.items():
        hit = sorted(s for s in symbols(p, defined) if rx.search(s))
        if hit:
            out[n] = hit
    return out


@pytest.mark.parametrize("name", sorted(NEVERS))
def test_never(name):
    what, pattern, where, allowed, why = NEVERS[name]
    have = holders(where, pattern)
    wrong = {n: s for n, s in have.items() if n not in allowed}
    assert not wrong, "%s (%s) found in %s %s, but only %s may hold it: %s" % (
        what, pattern, where, ", ".join("%s (%s)" % (n, ", ".join(s[:3])) for n, s in sorted(wrong.items())),
        ", ".join(sorted(allowed)), why)
    # The check looks at the right thing: the piece is there where it is allowed.
    assert set(have) & allowed, "%s found nowhere: is the pattern %s still right?" % (what, pattern)


def test_no_file_includes_skalibs_cdb():
    """tinycdb and skalibs both export cdb_*: with <skalibs/cdb.h> nowhere, every cdb_*
    reference the tinycdb row sees is tinycdb's."""
    bad = []
    for f in glob.glob(os.path.join(ROOT, "bin", "*.c")) + glob.glob(os.path.join(ROOT, "lib", "*.[ch]")):
        with open(f, encoding="utf-8", errors="replace") as fh:
            if re.search(r"#\s*include\s*<skalibs/cdb(make)?\.h>", fh.read()):
                bad.append(os.path.relpath(f, ROOT))
    assert not bad, "these include skalibs' cdb, which clashes with tinycdb: %s" % bad
