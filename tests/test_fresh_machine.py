"""The first `make check` on a fresh machine: run as root where none of the system users
mail-instance makes (pb-login, pb-deliv, ...) exists yet. The tests must give their servers
the same users as the instances they make (which add them) and the TLS engine admits, from the
first run on. Simulated without touching the machine: a private mount namespace whose /etc is
a copy without the pb-* users and groups (what mail-instance then adds goes into the copy),
in which a nested pytest runs the tests that depend on those users."""
import os
import shutil
import subprocess

import pytest

from conftest import ROOT

NESTED = ["test_login_pool.py::test_pop3_the_address_slot_lasts_the_whole_session",
          "test_login_pool.py::test_imap_worker_forgets_starttls_and_failures"]

SCRIPT = r"""
set -e
mount --make-rprivate /
cp -a /etc "$T/etc"
for f in passwd group shadow gshadow; do
  if [ -f "$T/etc/$f" ]; then sed -i '/^pb-/d' "$T/etc/$f"; fi
done
mount --bind "$T/etc" /etc
if getent passwd pb-login >/dev/null; then echo "pb-login still there" >&2; exit 99; fi
cd "$TESTS"
exec /usr/bin/python3 -m pytest -q -p no:cacheprovider --basetemp="$T/bt" "$@"
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="root and unshare(1) needed for a private /etc")
def test_users_made_before_the_helpers_look_them_up():
    import tempfile
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("no mount namespace here: %s" % probe.stderr.decode(errors="replace"))
    t = tempfile.mkdtemp(prefix="pb-fresh-")  # short: the nested sockets' paths fit in 108
    try:
        env = dict(os.environ, T=t, TESTS=os.path.join(ROOT, "tests"))
        r = subprocess.run(["unshare", "-m", "sh", "-c", SCRIPT, "sh"] + NESTED, env=env,
                           capture_output=True, timeout=300)
    finally:
        shutil.rmtree(t, ignore_errors=True)
    out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
    assert r.returncode == 0, out
    assert "2 passed" in out, out
