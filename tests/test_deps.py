"""package/deps-*: every executable and Python module the tests use comes from a Debian package
they list (or one that every Debian 12 system has), so that `make check` works on a fresh
machine (issue 10: swaks' TLS needed libnet-ssleay-perl, which was not listed)."""
import glob
import importlib.util
import os
import re
import shutil
import subprocess

import pytest

from conftest import BIN, ROOT

HERE = os.path.dirname(os.path.abspath(__file__))


def listed():
    """The packages of deps-build, deps-run and deps-test, with what they depend on (two
    levels: gcc brings gcc-12, which gives cc; dovecot-pop3d brings dovecot-core)."""
    pkgs = set()
    for name in ("build", "run", "test"):
        with open(os.path.join(ROOT, "package", "deps-" + name)) as f:
            pkgs.update(l.split()[0] for l in f if l.strip() and not l.startswith("#"))
    for _ in range(2):
        r = subprocess.run(["dpkg-query", "-W", "-f=${Depends}, ${Pre-Depends}\n"] + sorted(pkgs),
                           capture_output=True, timeout=60)
        for dep in re.split(r"[,|]", r.stdout.decode()):
            dep = dep.strip().split(" ")[0].split(":")[0]
            if dep:
                pkgs.add(dep)
    return pkgs


def packages_of(paths):
    """{path: package} for files on this system (dpkg-query -S, once for all)."""
    cands = {}
    for p in paths:
        for q in {p, os.path.realpath(p)}:
            for x in {q, q.replace("/usr/bin/", "/bin/"), q.replace("/usr/sbin/", "/sbin/")}:
                cands[x] = p
    r = subprocess.run(["dpkg-query", "-S"] + sorted(cands), capture_output=True, timeout=120)
    out = {}
    for line in r.stdout.decode().splitlines():
        if line.startswith("diversion ") or ": " not in line:
            continue
        pkg, f = line.split(": ", 1)
        if f in cands:
            out.setdefault(cands[f], pkg.split(",")[0].split(":")[0].strip())
    return out


def always_there(pkgs):
    """The packages among pkgs that every Debian 12 system has (Essential, or priority
    required / important)."""
    if not pkgs:
        return set()
    r = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Essential} ${Priority}\n"] +
                       sorted(pkgs), capture_output=True, timeout=60)
    return {l.split()[0] for l in r.stdout.decode().splitlines()
            if {"yes", "required", "important"} & set(l.split()[1:])}


def sources():
    for f in sorted(glob.glob(os.path.join(HERE, "*.py"))):
        with open(f, errors="replace") as fh:
            yield os.path.basename(f), fh.read()


# a command: the first item of an argv list, a which() argument, or an absolute program path
COMMAND = re.compile(r'(?:\[\s*|which\(\s*)"([a-z0-9][a-z0-9_.+-]*)"|"(/usr/s?bin/[a-z0-9_.+-]+)"')


@pytest.mark.skipif(not shutil.which("dpkg-query"), reason="not a Debian system (no dpkg-query)")
def test_executables_used_by_the_tests_are_listed():
    ours = set(os.listdir(BIN)) if os.path.isdir(BIN) else set()
    seen = {}
    for name, src in sources():
        for a, b in COMMAND.findall(src):
            word = a or b
            base = os.path.basename(word)
            if base in ours or base in seen:
                continue
            path = word if word.startswith("/") else shutil.which(word)
            if path and os.path.isfile(path) and os.access(path, os.X_OK) and \
                    path.startswith(("/usr/", "/bin/", "/sbin/")):
                seen[base] = (name, path)
    assert "swaks" in seen and "dnsmasq" in seen and "tcpserver" in seen  # the scan works
    pkgs = packages_of([path for _, path in seen.values()])
    want = listed()
    base_pkgs = always_there(set(pkgs.values()) - want)
    missing = ["%s (%s, used in %s)" % (pkgs.get(path), base, name)
               for base, (name, path) in sorted(seen.items())
               if pkgs.get(path) not in want and pkgs.get(path) not in base_pkgs]
    assert missing == [], "add to package/deps-test: " + ", ".join(missing)


@pytest.mark.skipif(not shutil.which("dpkg-query"), reason="not a Debian system (no dpkg-query)")
def test_python_modules_used_by_the_tests_are_listed():
    want = listed()
    mods = set()
    for name, src in sources():
        for m in re.findall(r'^\s*(?:import|from)\s+([A-Za-z_][A-Za-z0-9_]*)', src, re.M):
            mods.add((m, name))
    checked, origins = set(), {}
    for m, name in sorted(mods):
        if m in checked or os.path.exists(os.path.join(HERE, m + ".py")):
            continue
        checked.add(m)
        spec = importlib.util.find_spec(m)
        origin = spec.origin if spec else None
        if origin and origin not in ("built-in", "frozen") and "dist-packages" in origin:
            origins[origin] = (m, name)  # not the standard library (python3)
    assert "dnslib" in checked and "pytest" in checked
    pkgs = packages_of(list(origins))
    base_pkgs = always_there(set(pkgs.values()) - want)
    missing = ["%s (import %s, in %s)" % (pkgs.get(o), m, name)
               for o, (m, name) in sorted(origins.items())
               if pkgs.get(o) not in want and pkgs.get(o) not in base_pkgs]
    assert missing == [], "add to package/deps-test: " + ", ".join(missing)


def test_swaks_can_do_tls():
    """swaks' --tls needs Net::SSLeay (libnet-ssleay-perl), which the scan of commands cannot
    see: listed, and there."""
    assert "libnet-ssleay-perl" in listed()
    r = subprocess.run(["perl", "-MNet::SSLeay", "-e", "1"], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
