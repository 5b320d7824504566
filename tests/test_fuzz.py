"""The libFuzzer targets of fuzz/ (SMTP command and address parsers, Maildir/DSN, POP3, SASL, MIME),
run for a fixed number of iterations. They must find nothing. Longer runs by hand:
`make fuzz && build/fuzz/smtp_fuzz -max_total_time=600 fuzz/corpus/smtp`. (dns_fuzz runs in test_dns.py.)"""
import os
import shutil
import subprocess

import pytest

from conftest import ROOT

FUZZ = os.path.join(ROOT, "fuzz")
FUZZ_BIN = os.path.join(ROOT, "build", "fuzz")  # where fuzz/Makefile puts the targets


@pytest.mark.skipif(not shutil.which("clang"), reason="clang not installed")
def test_smtp_fuzz(tmp_path):
    r = subprocess.run(["make", "-C", FUZZ, "smtp_fuzz"], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    corpus = tmp_path / "corpus"
    shutil.copytree(os.path.join(FUZZ, "corpus", "smtp"), corpus)
    r = subprocess.run([os.path.join(FUZZ_BIN, "smtp_fuzz"), "-runs=200000", "-seed=1",
                        "-max_len=4096", "-artifact_prefix=%s/" % tmp_path, str(corpus)],
                       capture_output=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-3000:]
    assert b"Done 200000 runs" in r.stderr
    assert not [f for f in os.listdir(tmp_path) if f.startswith(("crash-", "leak-", "oom-"))]


@pytest.mark.skipif(not shutil.which("clang"), reason="clang not installed")
@pytest.mark.parametrize("target", ["maildir_fuzz", "pop3_fuzz", "sasl_fuzz", "imap_fuzz"])
def test_other_fuzz_targets(target, tmp_path):
    """The maildir/dsn, POP3, SASL and IMAP command parsers, from an empty corpus, for a fixed count."""
    r = subprocess.run(["make", "-C", FUZZ, target], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    r = subprocess.run([os.path.join(FUZZ_BIN, target), "-runs=100000", "-seed=1", "-max_len=4096",
                        "-artifact_prefix=%s/" % tmp_path, str(corpus)],
                       capture_output=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-3000:]
    assert b"Done 100000 runs" in r.stderr
    assert not [f for f in os.listdir(tmp_path) if f.startswith(("crash-", "leak-", "oom-"))]


@pytest.mark.skipif(not shutil.which("clang"), reason="clang not installed")
def test_mime_fuzz(tmp_path):
    """lib/mime from its seed corpus (the shapes of mime_corpus.py), for a fixed count: no
    overread, parts inside their parents, partial sections are slices of the whole."""
    r = subprocess.run(["make", "-C", FUZZ, "mime_fuzz"], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    corpus = tmp_path / "corpus"
    shutil.copytree(os.path.join(FUZZ, "corpus", "mime"), corpus)
    r = subprocess.run([os.path.join(FUZZ_BIN, "mime_fuzz"), "-runs=20000", "-seed=1",
                        "-max_len=4096", "-artifact_prefix=%s/" % tmp_path, str(corpus)],
                       capture_output=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-3000:]
    assert b"Done 20000 runs" in r.stderr
    assert not [f for f in os.listdir(tmp_path) if f.startswith(("crash-", "leak-", "oom-"))]
