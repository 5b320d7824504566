"""C unit tests of lib/: each tests/unit/NAME.c is a program linked with libpillarbox.a that
built into build/tests/NAME, that exits 0 when all its checks pass and prints what failed otherwise."""
import glob
import os
import subprocess

import pytest

from conftest import BUILD, LIBPILLARBOX, ROOT, SANITIZE

UNITS = sorted(glob.glob(os.path.join(ROOT, "tests", "unit", "*.c")))


def build(src):
    outdir = os.path.join(BUILD, "tests")
    os.makedirs(outdir, exist_ok=True)
    out = os.path.join(outdir, os.path.basename(src)[:-2])
    cflags = ["-std=c99", "-D_POSIX_C_SOURCE=200809L", "-D_XOPEN_SOURCE=700", "-Wall", "-Wextra",
              "-Werror", "-g", "-iquote", os.path.join(ROOT, "lib"),
              '-DMAILROOT_DEFAULT="/nonexistent"']
    if SANITIZE:
        cflags += ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
    libs = [LIBPILLARBOX, "-l:libcdb.a", "-l:libbearssl.a",
            "-l:libskarnet.a", "-l:libz.a", "-lcrypt", "-lresolv"]
    subprocess.run(["cc"] + cflags + ["-o", out, src] + libs, check=True, timeout=120)
    return out


@pytest.mark.parametrize("src", UNITS, ids=[os.path.basename(u)[:-2] for u in UNITS])
def test_unit(src, tmp_path):
    exe = build(src)
    r = subprocess.run([exe], cwd=tmp_path, capture_output=True, timeout=120,
                       env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0"))
    assert r.returncode == 0, (r.stdout + r.stderr).decode(errors="replace")
