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
        self.log.close()
