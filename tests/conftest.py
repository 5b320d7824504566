"""Shared fixtures for pillarbox's tests.

Every test drives the real programs built into build/bin/ (see the Makefile) with MAILROOT pointing at an instance made in a
temporary directory by `mail-instance create`. Servers started by a test are stopped by it.
"""
import collections
import fcntl
import os
import random
import socket
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
BIN = os.path.join(BUILD, "bin")  # the built programs; bin/ holds their sources
LIBPILLARBOX = os.path.join(BUILD, "libpillarbox.a")
SANITIZE = os.environ.get("SANITIZE") == "1"


def prog(name):
    return os.path.join(BIN, name)


# The system users and groups `mail-instance create` makes when root runs it (bin/mail-instance.c).
SYSTEM_USERS = ("pb-tls", "pb-smtpd", "pb-login", "pb-auth", "pb-queue", "pb-deliv", "pb-remote",
                "pb-log")
SYSTEM_GROUPS = ("pb-authc", "pb-loginc", "pb-authfail", "pb-tlsc")


def _missing_system_ids():
    import grp
    import pwd
    missing = []
    for u in SYSTEM_USERS:
        try:
            pwd.getpwnam(u)
        except KeyError:
            missing.append(u)
    for g in SYSTEM_GROUPS:
        try:
            grp.getgrnam(g)
        except KeyError:
            missing.append(g)
    return missing


def pytest_configure(config):
    """Run as root, the tests give their servers the system users (pb-login, pb-deliv, ...), and
    helpers look their ids up once, when their module is imported (authsvc_helpers: LOGIN_UID;
    test_tls_engine). On a machine where no instance was made yet, those users did not exist
    then: the lookups fell back to other ids than the ones the instances (made later, by
    `mail-instance create`, which adds the users) give their directories to and the TLS engine
    admits, and the tests that depend on them failed on the first run only (a pool worker
    unable to take its slot in run/slots/pop3, or refused by the engine). The users are made
    here first, by a throwaway instance, before any test module is imported. Bounded retries:
    several runs at once on a fresh machine race for /etc/passwd's lock."""
    if os.geteuid() != 0 or not _missing_system_ids():
        return
    import shutil
    import tempfile
    err = b""
    for _ in range(50):
        d = tempfile.mkdtemp(prefix="pillarbox-users-")
        try:
            r = subprocess.run([prog("mail-instance"), "create", os.path.join(d, "i"),
                                "--hostname", "mx.example.test", "--domain", "example.test"],
                               env=base_env(), capture_output=True, timeout=60)
            err = r.stderr
        except OSError as e:
            raise pytest.UsageError("unable to run %s (make first): %s"
                                    % (prog("mail-instance"), e))
        finally:
            shutil.rmtree(d, ignore_errors=True)
        if not _missing_system_ids():
            return
        time.sleep(0.1)  # another run holds /etc/passwd's lock: try again
    raise pytest.UsageError("unable to create the system users %s with mail-instance: %s"
                            % (", ".join(_missing_system_ids()), err.decode(errors="replace")))


def base_env(**extra):
    env = dict(os.environ)
    env["PATH"] = BIN + ":" + env.get("PATH", "/usr/bin:/bin")
    env.pop("MAILROOT", None)
    if SANITIZE:
        env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0"
    env.update(extra)
    return env


def wait_for(pred, timeout=10.0, interval=0.02, what="condition"):
    """Polls pred() until it returns a true value, or fails the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def stop_procs(procs, timeout=10):
    """Terminates the processes a test started and reaps them (SIGKILL past the timeout)."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# Ports for the tests' servers come from below the kernel's ephemeral range (so no client
# connection's local port takes one between the choice and the bind), each claimed with a lock
# file, so that test runs going on at the same time in other checkouts never pick the same port
# (a server of theirs would otherwise pass for ours). The newest claims are held until the run
# ends; older ones are let go (their tests are over), to bound the open descriptors.
PORT_DIR = "/tmp/pillarbox-test-ports"
_port_claims = collections.deque()
_port_rng = random.Random()


def free_port():
    if not os.path.isdir(PORT_DIR):
        os.makedirs(PORT_DIR, exist_ok=True)
        os.chmod(PORT_DIR, 0o1777)  # shared by every user's runs
    for _ in range(5000):
        port = _port_rng.randrange(20000, 32000)
        try:
            fd = os.open(os.path.join(PORT_DIR, str(port)), os.O_RDONLY | os.O_CREAT, 0o666)
        except OSError:  # another user's claim file, not readable: take another port
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", port))
        except OSError:
            os.close(fd)
            continue
        _port_claims.append(fd)
        if len(_port_claims) > 200:
            os.close(_port_claims.popleft())
        return port
    raise AssertionError("no free port in 20000-31999")


def envelope(sender, *rcpts):
    """The qmail-queue envelope: F sender NUL, T rcpt NUL ..., NUL."""
    b = b"F" + sender.encode() + b"\0"
    for r in rcpts:
        b += b"T" + r.encode() + b"\0"
    return b + b"\0"


class Instance:
    def __init__(self, root):
        self.root = str(root)
        self.env = base_env(MAILROOT=self.root)

    def path(self, *p):
        return os.path.join(self.root, *p)

    def run(self, name, *args, input=None, env=None, timeout=30, check=False, **kw):
        e = dict(self.env)
        if env:
            e.update(env)
        return subprocess.run([prog(name)] + [str(a) for a in args], input=input, env=e,
                              capture_output=True, timeout=timeout, check=check, **kw)

    def add_user(self, address, password="secret", *extra):
        r = self.run("mail-user", "add", address, *extra, input=(password + "\n").encode())
        assert r.returncode == 0, r.stderr
        return r

    def add_alias(self, address, *targets):
        r = self.run("mail-alias", "add", address, *targets)
        assert r.returncode == 0, r.stderr
        return r

    def add_domain(self, domain):
        r = self.run("mail-domain", "add", domain)
        assert r.returncode == 0, r.stderr
        return r

    def control(self, name, value):
        with open(self.path("control", name), "w") as f:
            f.write(value if value.endswith("\n") else value + "\n")

    def inject(self, message, sender, *rcpts, env=None):
        """Runs queue-inject the qmail-queue way: message on fd 0, envelope on fd 1."""
        r_env, w_env = os.pipe()
        e = dict(self.env)
        if env:
            e.update(env)
        p = subprocess.Popen([prog("queue-inject")], stdin=subprocess.PIPE, stdout=r_env,
                             stderr=subprocess.PIPE, env=e)
        os.close(r_env)
        data = message if isinstance(message, bytes) else message.encode()
        try:
            p.stdin.write(data)
            p.stdin.close()
        except BrokenPipeError:
            pass
        try:
            os.write(w_env, envelope(sender, *rcpts))
        except BrokenPipeError:
            pass
        os.close(w_env)
        err = p.stderr.read()
        rc = p.wait(timeout=30)
        return rc, err

    def maildir(self, address):
        local, domain = address.lower().split("@")
        return self.path("mail", domain, local)

    def messages(self, address, sub="new"):
        d = os.path.join(self.maildir(address), sub)
        out = []
        for n in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            with open(os.path.join(d, n), "rb") as f:
                out.append(f.read())
        return out


def make_instance(root):
    """A fresh instance at root (mail-instance create: mx.example.test, example.test)."""
    r = subprocess.run([prog("mail-instance"), "create", str(root), "--hostname", "mx.example.test",
                        "--domain", "example.test"], env=base_env(), capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return Instance(root)


@pytest.fixture
def instance(tmp_path):
    return make_instance(tmp_path / "inst")


@pytest.fixture
def shared_tmp():
    """A temporary directory the service users (pb-*) can reach: pytest's tmp_path sits in a
    0700 directory under root, which they cannot traverse. Removed afterwards."""
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="pillarbox-test-", dir="/var/tmp")
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(d + ".bin", ignore_errors=True)


def proc_children(pid):
    """The live children of pid: {pid: comm}."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        comm = st[st.index("(") + 1:st.rindex(")")]
        fields = st[st.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out[int(d)] = comm
    return out
