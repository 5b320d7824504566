"""Starting the auth service (auth-serve) for a test instance, and talking to it.

Run as root, the service runs under its own uid (pb-auth when the instance's users exist, else
nobody) with control/passwd.cdb owned by it and MAILROOT/run/auth/ mode 0750 group AUTHC_GID:
the shape mail-instance gives a root-made instance. Not root, everything runs as the caller.
"""
import grp
import os
import pwd
import re
import socket
import subprocess

from conftest import prog, stop_procs, wait_for

ROOT_MODE = os.geteuid() == 0


def _uid_gid(name, fallback):
    try:
        p = pwd.getpwnam(name)
        return p.pw_uid, p.pw_gid
    except KeyError:
        p = pwd.getpwnam(fallback)
        return p.pw_uid, p.pw_gid


def _gid(name, fallback):
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return fallback


SVC_UID, SVC_GID = _uid_gid("pb-auth", "nobody") if ROOT_MODE else (os.getuid(), os.getgid())
AUTHC_GID = _gid("pb-authc", 4242) if ROOT_MODE else os.getgid()
OUTSIDER_UID, OUTSIDER_GID = 4243, 4244  # a uid/gid no group of the service knows


def open_path_to(path):
    """Lets other uids traverse every directory above path (pytest's are 0700)."""
    d = os.path.dirname(os.path.abspath(path))
    while d not in ("/", ""):
        st = os.stat(d)
        if st.st_mode & 0o001 == 0:
            os.chmod(d, (st.st_mode & 0o7777) | 0o011)
        d = os.path.dirname(d)


def as_uid(uid, gid, argv):
    """argv run under uid/gid (no supplementary groups) when root; unchanged otherwise."""
    if not ROOT_MODE:
        return argv
    return ["s6-applyuidgid", "-u", str(uid), "-g", str(gid), "-G", ""] + argv


class AuthService:
    def __init__(self, inst, *args, env=None):
        self.inst = inst
        self.sock = inst.path("run", "auth", "socket")
        self.logpath = inst.path("auth-serve.log")
        if ROOT_MODE:
            open_path_to(inst.path("control", "x"))
            os.makedirs(inst.path("run", "auth"), exist_ok=True)
            os.chmod(inst.path("run"), 0o755)
            os.chown(inst.path("run", "auth"), SVC_UID, AUTHC_GID)
            os.chmod(inst.path("run", "auth"), 0o750)
            if os.path.exists(inst.path("control", "passwd.cdb")):
                os.chown(inst.path("control", "passwd.cdb"), SVC_UID, SVC_GID)
        e = dict(inst.env)
        e.update(env or {})
        self.log = open(self.logpath, "w")
        self.proc = subprocess.Popen(as_uid(SVC_UID, SVC_GID, [prog("auth-serve")] + list(args)),
                                     env=e, stdout=self.log, stderr=self.log)
        try:
            wait_for(self.ready, timeout=10, what="auth-serve's socket")
        except BaseException:
            self.stop()
            raise

    def ready(self):
        if self.proc.poll() is not None:
            raise AssertionError("auth-serve exited: %s" % open(self.logpath).read())
        try:
            self.stats()
            return True
        except OSError:
            return False

    def request(self, data):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(30)
            s.connect(self.sock)
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            out = b""
            while True:
                d = s.recv(4096)
                if not d:
                    return out
                out += d
        finally:
            s.close()

    def stats(self):
        r = self.request(b"S")
        assert r[:1] == b"S", r
        return {k: int(v) for k, v in (l.split("=") for l in r[1:].decode().split())}

    def loglines(self):
        with open(self.logpath) as f:
            return f.read().splitlines()

    def hash_lines(self):
        return [l for l in self.loglines() if re.search(r" hash \d+ms running=\d+$", l)]

    def stop(self):
        stop_procs([self.proc])
        if getattr(self.proc, "stdout", None):
            self.proc.stdout.close()
        self.log.close()


DELIV_UID, DELIV_GID = _uid_gid("pb-deliv", "nobody") if ROOT_MODE else (os.getuid(), os.getgid())
if ROOT_MODE and DELIV_UID == SVC_UID:
    DELIV_UID, DELIV_GID = 4250, 4250  # not the auth service's uid: it must not read passwd.cdb
LOGIN_UID, LOGIN_GID = _uid_gid("pb-login", "nobody") if ROOT_MODE else (os.getuid(), os.getgid())
if ROOT_MODE and LOGIN_UID in (SVC_UID, DELIV_UID):
    LOGIN_UID, LOGIN_GID = 4251, 4251
LOGINC_GID = _gid("pb-loginc", 4252) if ROOT_MODE else os.getgid()


def as_uid_groups(uid, gid, groups, argv):
    if not ROOT_MODE:
        return argv
    return ["s6-applyuidgid", "-u", str(uid), "-g", str(gid), "-G",
            ",".join(str(g) for g in groups)] + argv


def chown_tree(path, uid, gid):
    for dp, dns, fns in os.walk(path):
        os.chown(dp, uid, gid)
        for n in fns:
            os.lchown(os.path.join(dp, n), uid, gid)


class LoginBroker:
    """s6-ipcserver on MAILROOT/run/login/NAME running login-broker PROG... under the delivery
    uid (a member of the auth clients' group), the shape of services/login-pop3."""

    def __init__(self, inst, name, prog_argv, env=None):
        self.inst = inst
        self.sock = inst.path("run", "login", name)
        d = inst.path("run", "login")
        os.makedirs(d, exist_ok=True)
        if ROOT_MODE:
            open_path_to(d + "/x")
            os.chmod(inst.path("run"), 0o755)
            os.chown(d, DELIV_UID, LOGINC_GID)
            os.chmod(d, 0o750)
            chown_tree(inst.path("mail"), DELIV_UID, DELIV_GID)
        e = dict(inst.env)
        e.update(env or {})
        self.logpath = inst.path("login-broker-%s.log" % name)
        self.log = open(self.logpath, "w")
        self.proc = subprocess.Popen(
            as_uid_groups(DELIV_UID, DELIV_GID, [AUTHC_GID],
                          ["s6-ipcserver", "-1", "-c", "200", self.sock, prog("login-broker")] +
                          list(prog_argv)), env=e, stdout=subprocess.PIPE, stderr=self.log)
        try:
            # -1: s6-ipcserver writes a newline once it listens
            line = self.proc.stdout.readline()
            assert line == b"\n", (line, open(self.logpath).read())
        except BaseException:
            self.stop()
            raise

    def stop(self):
        stop_procs([self.proc])
        if getattr(self.proc, "stdout", None):
            self.proc.stdout.close()
        self.log.close()
