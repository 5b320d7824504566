"""`make install` into a DESTDIR staging tree only (Postfix, a test dependency, owns
/usr/sbin/sendmail on the test machine), then the staged programs run from there: the daemons
in PREFIX/libexec/pillarbox, the user commands in PREFIX/bin, /usr/sbin/sendmail, mailq and
newaliases as other software calls them, a systemd unit, and an installed mail-instance that
finds its own templates, staged or moved."""
import os
import shutil
import subprocess

import pytest

from conftest import ROOT, wait_for

PREFIX = "/usr/local"
CRON_ENV = {"PATH": "/usr/bin:/bin", "LOGNAME": "root", "HOME": "/"}


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    d = tmp_path_factory.mktemp("destdir")
    env = dict(os.environ)
    env.pop("MAILROOT", None)
    r = subprocess.run(["make", "-C", ROOT, "install", "DESTDIR=%s" % d,
                        "SANITIZE=%s" % os.environ.get("SANITIZE", "")],
                       env=env, capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    return str(d)


def p(d, *parts):
    return os.path.join(d, *[x.lstrip("/") for x in parts])


def run(argv, env=None, **kw):
    e = dict(CRON_ENV)
    if os.environ.get("SANITIZE") == "1":  # as conftest.base_env: exit-time leaks are not bugs
        e["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0"
    e.update(env or {})
    return subprocess.run(argv, env=e, capture_output=True, timeout=60, **kw)


def test_layout(staged):
    libexec = p(staged, PREFIX, "libexec/pillarbox")
    progs = set(os.listdir(os.path.join(ROOT, "build", "bin")))
    assert set(os.listdir(libexec)) == progs
    for daemon in ("smtp-receive", "queue-run", "pop3-serve", "tls-serve", "deliver-maildir"):
        assert os.access(os.path.join(libexec, daemon), os.X_OK)
        assert not os.path.lexists(p(staged, PREFIX, "bin", daemon)), daemon
    for cmd in ("mail-instance", "mail-user", "mail-alias", "mail-domain", "queue-list",
                "queue-ctl", "sendmail"):
        link = p(staged, PREFIX, "bin", cmd)
        assert os.path.islink(link) and not os.readlink(link).startswith("/"), cmd
        assert os.path.realpath(link) == os.path.realpath(os.path.join(libexec, cmd))
    # the names other software calls: relative links, right once installed and when staged
    for name, target in (("/usr/sbin/sendmail", "sendmail"), ("/usr/bin/mailq", "queue-list"),
                         ("/usr/bin/newaliases", "mail-alias")):
        link = p(staged, name)
        assert os.readlink(link) == "../local/libexec/pillarbox/" + target, name
        assert os.path.realpath(link) == os.path.realpath(os.path.join(libexec, target))
    assert os.path.isfile(p(staged, PREFIX, "share/man/man8/smtp-receive.8"))
    assert os.path.isfile(p(staged, PREFIX, "share/man/man1/sendmail.1"))
    assert os.path.isfile(p(staged, PREFIX, "share/pillarbox/services/smtpd/run"))
    assert os.path.isfile(p(staged, PREFIX, "share/doc/pillarbox/operations.md"))


def test_systemd_unit(staged):
    unit = open(p(staged, PREFIX, "lib/systemd/system/pillarbox.service")).read()
    assert "@" not in unit.replace("man:", "")
    lines = unit.splitlines()
    assert "ExecStart=/usr/bin/s6-svscan /var/lib/pillarbox/service" in lines
    assert "Environment=PATH=%s/libexec/pillarbox:/usr/sbin:/usr/bin:/sbin:/bin" % PREFIX in lines
    assert "KillMode=mixed" in lines and "WantedBy=multi-user.target" in lines
    assert os.access("/usr/bin/s6-svscan", os.X_OK)
    if shutil.which("systemd-analyze"):
        r = subprocess.run(["systemd-analyze", "verify", "--man=no",
                            p(staged, PREFIX, "lib/systemd/system/pillarbox.service")],
                           capture_output=True, timeout=60)
        assert b"Unknown key" not in r.stderr and b"Invalid" not in r.stderr, r.stderr


def make_instance(prefix_dir, root):
    r = run([os.path.join(prefix_dir, "bin", "mail-instance"), "create", str(root),
             "--hostname", "mx.example.test", "--domain", "example.test"])
    assert r.returncode == 0, r.stderr
    # the templates came from this install, and the run scripts name its programs
    tpl = os.path.join(prefix_dir, "share/pillarbox/services")
    assert sorted(os.listdir(os.path.join(root, "service"))) == \
        sorted(n for n in os.listdir(tpl) if os.path.isdir(os.path.join(tpl, n)))
    path = open(os.path.join(root, "env", "PATH")).read() \
        if os.path.exists(os.path.join(root, "env", "PATH")) else ""
    assert os.path.realpath(os.path.join(prefix_dir, "libexec/pillarbox")) in path, path


def test_staged_programs_work(staged, tmp_path):
    prefix = p(staged, PREFIX)
    root = tmp_path / "inst"
    make_instance(prefix, root)
    env = {"MAILROOT": str(root)}
    r = run([os.path.join(prefix, "bin", "mail-user"), "add", "joe@example.test"], env=env,
            input=b"pw\n")
    assert r.returncode == 0, r.stderr
    # cron: /usr/sbin/sendmail with cron's PATH, a bare name
    r = run([p(staged, "/usr/sbin/sendmail"), "root"], env=env,
            input=b"Subject: from cron\n\nstaged\n")
    assert r.returncode == 0, r.stderr
    q = run([p(staged, "/usr/bin/mailq")], env=env)
    assert q.returncode == 0 and b"root@example.test" in q.stdout, q
    # the staged scheduler delivers it to the postmaster (the first account)
    qr = subprocess.Popen([p(prefix, "libexec/pillarbox/queue-run")],
                          env=dict(CRON_ENV, MAILROOT=str(root),
                                   PATH=p(prefix, "libexec/pillarbox") + ":/usr/bin:/bin"),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        new = os.path.join(root, "mail", "example.test", "joe", "new")
        wait_for(lambda: os.listdir(new), timeout=30, what="the cron mail delivered")
        m = open(os.path.join(new, os.listdir(new)[0]), "rb").read()
        assert b"staged" in m and b"Delivered-To: joe@example.test" in m
    finally:
        qr.terminate()
        qr.wait(timeout=10)
    # newaliases rebuilds aliases.cdb from a hand edit
    with open(os.path.join(root, "control", "aliases"), "a") as f:
        f.write("ops@example.test: joe@example.test\n")
    lk = [os.path.join(prefix, "bin", "mail-lookup"), "ops@example.test"]
    assert run(lk, env=env).returncode == 100
    r = run([p(staged, "/usr/bin/newaliases")], env=env)
    assert r.returncode == 0, r.stderr
    r = run(lk, env=env)
    assert r.returncode == 0 and r.stdout.startswith(b"local joe@example.test "), r
    assert run([p(staged, "/usr/bin/newaliases"), "x"], env=env).returncode == 100


def test_moved_install_finds_its_templates(staged, tmp_path):
    """The same tree copied elsewhere (what a package manager does with DESTDIR) works from
    its new place: nothing in it points back to the staging directory."""
    moved = tmp_path / "opt" / "pb"
    shutil.copytree(p(staged, PREFIX), moved, symlinks=True)
    make_instance(str(moved), tmp_path / "inst")
    run_script = open(tmp_path / "inst" / "service" / "smtpd" / "run").read()
    assert staged not in run_script and staged not in open(tmp_path / "inst" / "env" / "PATH").read()
