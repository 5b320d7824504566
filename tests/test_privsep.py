"""The privilege model (doc/security.md): an instance created by root with `mail-instance
create`, its services started by s6-svscan as root, each running under its own uid.

Per uid, `s6-setuidgid UID cat FILE` must be refused for what the model forbids; each
service's processes are checked in /proc; the TLS engine must have dropped root while a client
holds the connection before sending its ClientHello; a key that does not match its
certificate is refused when tls-serve starts, with the reason."""
import grp
import os
import pwd
import re
import shutil
import select
import signal
import socket
import ssl
import stat
import subprocess
import tempfile
import time

import pytest

from conftest import ROOT, BIN, base_env, free_port, prog, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="the privilege model needs root (system users, setuid)")

USERS = ["pb-tls", "pb-smtpd", "pb-login", "pb-auth", "pb-queue", "pb-deliv", "pb-remote",
         "pb-log"]
USER = "demo@example.test"
TCP_SERVICES = {"smtpd": "pb-smtpd", "submission": "pb-smtpd", "smtps": "pb-smtpd",
                "pop3": "pb-login", "pop3s": "pb-login", "imap": "pb-login", "imaps": "pb-login"}


def listening(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def listened_by_instance(root, port):
    """Is 127.0.0.1:port's listening socket held by a process of the instance at root? (A
    stranger on a port free_port() gave out would otherwise pass for our service.)"""
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fld = line.split()
            if fld[3] == "0A" and int(fld[1].rsplit(":", 1)[1], 16) == port:
                inodes.add("socket:[%s]" % fld[9])
    for pid in instance_procs(root):
        try:
            fds = os.listdir("/proc/%d/fd" % pid)
            if any(os.readlink("/proc/%d/fd/%s" % (pid, fd)) in inodes for fd in fds):
                return True
        except OSError:
            continue
    return False


def proc_info(pid):
    """(comm, uid, gid, ppid) of a process, or None if it is gone."""
    try:
        with open("/proc/%s/status" % pid) as f:
            st = f.read()
    except OSError:
        return None
    fields = dict(l.split(":", 1) for l in st.splitlines() if ":" in l)
    return (fields["Name"].strip(), int(fields["Uid"].split()[1]),
            int(fields["Gid"].split()[1]), int(fields["PPid"].strip()))


def instance_procs(root):
    """{pid: (comm, euid, egid, ppid)} of the processes of the instance at root: those with
    MAILROOT=root in their environment or root in their command line."""
    out = {}
    key = ("MAILROOT=" + root).encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                env = f.read().split(b"\0")
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if key in env or root.encode() + b"/" in cmd:
            info = proc_info(pid)
            if info:
                out[int(pid)] = info
    return out


def uid(name):
    return pwd.getpwnam(name).pw_uid


def as_user(user, *argv):
    return subprocess.run(["s6-setuidgid", user] + list(argv), capture_output=True, timeout=30)


class ModelInstance:
    def __init__(self, root):
        self.root = root
        self.env = base_env(MAILROOT=root)
        self.ports = {}

    def path(self, *p):
        return os.path.join(self.root, *p)

    def run(self, name, *args, input=None, env=None):
        return subprocess.run([prog(name)] + list(args), input=input, capture_output=True,
                              env=env or self.env, timeout=60)

    def svc(self, *args):
        r = subprocess.run(["s6-svc"] + list(args), capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def model():
    """An instance made by root in a directory the service users can reach, its services
    under s6-svscan (as root) on free loopback ports; everything stopped and removed after."""
    top = tempfile.mkdtemp(prefix="pillarbox-privsep-", dir="/var/tmp")
    os.chmod(top, 0o755)
    root = os.path.join(top, "inst")
    inst = ModelInstance(root)
    svscan = None
    try:
        r = subprocess.run([prog("mail-instance"), "create", root, "--hostname", "mx.example.test",
                            "--domain", "example.test"], capture_output=True, env=inst.env,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        r = inst.run("mail-user", "add", USER, input=b"Sekr1t\n")
        assert r.returncode == 0, r.stderr
        for name in TCP_SERVICES:
            inst.ports[name] = free_port()
            with open(inst.path("service", name, "env", "PORT"), "w") as f:
                f.write("%d\n" % inst.ports[name])
            with open(inst.path("service", name, "env", "IP"), "w") as f:
                f.write("127.0.0.1\n")
        svscan = subprocess.Popen(["s6-svscan", inst.path("service")], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True,
                                  env=base_env())
        inst.svscan = svscan
        for name, port in inst.ports.items():
            wait_for(lambda: listening(port) and listened_by_instance(root, port), timeout=30,
                     what=name + " to listen")
        r = subprocess.run(["s6-svwait", "-U", "-t", "30000", inst.path("service", "inject")],
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        yield inst
    finally:
        if svscan is not None:
            subprocess.run(["s6-svscanctl", "-t", inst.path("service")], capture_output=True,
                           timeout=30)
            try:
                svscan.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(svscan.pid, signal.SIGKILL)
                svscan.wait()
            try:
                wait_for(lambda: not instance_procs(root), timeout=20, what="services to stop")
            finally:
                for pid in instance_procs(root):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
        shutil.rmtree(top, ignore_errors=True)


# ---- users and the layout ----

def test_system_users_and_groups(model):
    for u in USERS:
        pw = pwd.getpwnam(u)
        assert pw.pw_uid != 0 and pw.pw_shell.endswith("nologin"), u
        assert grp.getgrgid(pw.pw_gid).gr_name == u
    assert set(grp.getgrnam("pb-authc").gr_mem) == {"pb-smtpd", "pb-deliv"}
    assert set(grp.getgrnam("pb-loginc").gr_mem) == {"pb-login"}
    assert set(grp.getgrnam("pb-tlsc").gr_mem) == {"pb-smtpd", "pb-login"}


@pytest.mark.parametrize("rel,owner,group,mode", [
    ("queue", "pb-queue", "pb-queue", 0o711),
    ("queue/mess", "pb-queue", "pb-queue", 0o750),
    ("mail", "pb-deliv", "pb-deliv", 0o750),
    ("mail/example.test/demo", "pb-deliv", "pb-deliv", 0o700),
    ("mail/example.test/demo/new", "pb-deliv", "pb-deliv", 0o700),
    ("log", "pb-log", "pb-log", 0o750),
    ("control/passwd.cdb", "pb-auth", "pb-auth", 0o600),
    ("control/users", "root", "root", 0o600),
    ("tls", "root", "root", 0o700),
    ("tls/key.pem", "root", "root", 0o600),
    ("run/auth", "pb-auth", "pb-authc", 0o750),
    ("run/login", "pb-deliv", "pb-loginc", 0o750),
    ("run/tls", "root", "pb-tlsc", 0o750),
])
def test_owners_and_modes(model, rel, owner, group, mode):
    st = os.lstat(model.path(rel))
    assert (pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name,
            stat.S_IMODE(st.st_mode)) == (owner, group, mode)


def test_mail_user_add_as_root_gives_the_maildir_to_the_delivery_uid(model):
    r = model.run("mail-user", "add", "second@example.test", input=b"pw2\n")
    assert r.returncode == 0, r.stderr
    md = model.path("mail", "example.test", "second")
    for d in ("", "new", "cur", "tmp"):
        assert os.stat(os.path.join(md, d)).st_uid == uid("pb-deliv"), d
    # and the delivery uid can deliver into it at once
    r = subprocess.run(["s6-setuidgid", "pb-deliv", prog("deliver-maildir"), md],
                       input=b"Subject: hi\n\nhello\n", capture_output=True, timeout=30,
                       env=dict(model.env, SENDER="a@b.example", RECIPIENT="second@example.test"))
    assert r.returncode == 0, r.stderr
    assert len(os.listdir(os.path.join(md, "new"))) == 1


# ---- what each uid may not read ----

@pytest.fixture(scope="module")
def forbidden_files(model):
    """A message in the demo Maildir (delivered as pb-deliv) and one in the queue (injected
    through the socket while the scheduler is down, so it stays there)."""
    md = model.path("mail", "example.test", "demo")
    r = subprocess.run(["s6-setuidgid", "pb-deliv", prog("deliver-maildir"), md],
                       input=b"Subject: secret\n\nmailbox secret\n", capture_output=True,
                       timeout=30, env=dict(model.env, SENDER="a@b.example", RECIPIENT=USER))
    assert r.returncode == 0, r.stderr
    mailfile = os.path.join(md, "new", sorted(os.listdir(os.path.join(md, "new")))[0])
    model.svc("-wD", "-d", model.path("service", "queue"))
    try:
        r = subprocess.run([prog("sendmail"), USER], input=b"Subject: queued\n\nqueue secret\n",
                           capture_output=True, timeout=60,
                           env=dict(model.env, QUEUE_INJECT="queue-inject-ipc -c"))
        assert r.returncode == 0, r.stderr
        mess = model.path("queue", "mess")
        qfile = os.path.join(mess, wait_for(lambda: os.listdir(mess), what="queued")[0])
        yield {"passwd": model.path("control", "passwd.cdb"), "key": model.path("tls", "key.pem"),
               "users": model.path("control", "users"), "mailbox": mailfile, "queue": qfile}
    finally:
        model.svc("-u", model.path("service", "queue"))


FORBIDDEN = [(u, "passwd") for u in USERS if u != "pb-auth"] + \
            [(u, "users") for u in USERS] + \
            [(u, "key") for u in USERS] + \
            [(u, "mailbox") for u in USERS if u != "pb-deliv"] + \
            [(u, "queue") for u in USERS if u != "pb-queue"]


@pytest.mark.parametrize("user,what", FORBIDDEN)
def test_uid_cannot_read(model, forbidden_files, user, what):
    r = as_user(user, "cat", forbidden_files[what])
    assert r.returncode != 0 and b"Permission denied" in r.stderr, (user, what, r)


@pytest.mark.parametrize("user,what", [("pb-auth", "passwd"), ("pb-deliv", "mailbox"),
                                       ("pb-queue", "queue")])
def test_owner_can_read(model, forbidden_files, user, what):
    """The control for the refusals: the one uid the model allows reads the file."""
    r = as_user(user, "cat", forbidden_files[what])
    assert r.returncode == 0, r.stderr


def test_queue_holds_only_files_of_the_queue_uid(model, forbidden_files):
    for d, _, files in os.walk(model.path("queue")):
        for n in files:
            st = os.lstat(os.path.join(d, n))
            assert st.st_uid == uid("pb-queue"), os.path.join(d, n)


def test_any_local_user_injects_through_the_socket(model, forbidden_files):
    """nobody (any local user) reaches queue/inject.sock; the file is the queue uid's and the
    trace line names the real sender uid."""
    env = dict(model.env)
    r = subprocess.run(["s6-setuidgid", "nobody", prog("sendmail"), "-f", "nobody@example.test",
                        USER], input=b"Subject: from nobody\n\nhello from nobody\n",
                       capture_output=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    mess = model.path("queue", "mess")

    def got():
        for n in os.listdir(mess):
            p = os.path.join(mess, n)
            try:
                with open(p, "rb") as f:
                    b = f.read()
            except FileNotFoundError:   # delivered meanwhile
                continue
            if b"hello from nobody" in b:
                return p, b
    p, b = wait_for(got, timeout=30, what="the message in the queue")
    assert b"uid %d" % uid("nobody") in b
    assert os.stat(p).st_uid == uid("pb-queue")


# ---- the services' uids ----

def test_long_running_services_uids(model):
    procs = instance_procs(model.root)
    by = {}
    for pid, (comm, u, g, pp) in procs.items():
        by.setdefault(comm, set()).add(u)
    # tcp-pool (SMTP: smtpd, submission, smtps; since 2026-12-05 19:30 POP3 and IMAP too:
    # pop3, pop3s, imap, imaps) binds the ports as root, then runs under the service's uid (-u)
    # on every port, implicit TLS included: none stays root
    assert by.get("tcpserver") is None, by
    assert by.get("tcp-pool") == {uid("pb-smtpd"), uid("pb-login")}, by
    assert by.get("tls-engine") == {0}, by         # the TLS engine service (reads no byte)
    # the injection socket's workers (pb-queue) and the POP3 and IMAP login brokers (pb-deliv)
    assert by.get("queue-inject-ip") == {uid("pb-queue")}, by
    assert by.get("s6-ipcserverd") == {uid("pb-deliv")}, by
    assert by.get("auth-serve") == {uid("pb-auth")}, by
    assert by.get("s6-log") == {uid("pb-log")}, by


# The processes that listen on the TCP ports: tcpserver, or tcp-pool (smtpd, submission),
# which takes tcpserver's place with long-lived workers (tcp-pool(8)).
FRONTS = ("tcpserver", "tcp-pool")


def test_tcpserver_flags(model):
    """-H (no reverse lookup) and a listen backlog large enough for a burst, on every port."""
    n = 0
    for pid, (comm, *_rest) in instance_procs(model.root).items():
        if comm not in FRONTS:
            continue
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().split(b"\0")
        assert b"-H" in argv and b"-b" in argv, argv
        assert int(argv[argv.index(b"-b") + 1]) >= 80
        n += 1
    assert n == len(TCP_SERVICES)


def session_procs(model, comm):
    return [(pid, info) for pid, info in instance_procs(model.root).items() if info[0] == comm]


def test_smtpd_session_runs_as_pb_smtpd(model):
    with socket.create_connection(("127.0.0.1", model.ports["smtpd"]), timeout=10) as s:
        assert s.recv(512).startswith(b"220")
        ps = wait_for(lambda: session_procs(model, "smtp-receive"), what="smtp-receive")
        assert {i[1] for _, i in ps} == {uid("pb-smtpd")}, ps
        s.sendall(b"QUIT\r\n")


def test_pop3_session_runs_as_pb_login(model):
    with socket.create_connection(("127.0.0.1", model.ports["pop3"]), timeout=10) as s:
        assert s.recv(512).startswith(b"+OK")
        ps = wait_for(lambda: session_procs(model, "pop3-serve"), what="pop3-serve")
        assert {i[1] for _, i in ps} == {uid("pb-login")}, ps
        s.sendall(b"QUIT\r\n")


def tls_serve_uids(model):
    return sorted(i[1] for _, i in session_procs(model, "tls-serve"))


IMPLICIT_PROGRAM = {"smtps": "smtp-receive", "pop3s": "pop3-serve", "imaps": "imap-serve"}


@pytest.mark.parametrize("service,program", [("smtps", "pb-smtpd"), ("pop3s", "pb-login"),
                                             ("imaps", "pb-login")])
def test_tls_engine_dropped_before_client_hello(model, service, program):
    """A client connects to an implicit-TLS port and sends nothing: the program (under the
    service's uid) has handed the connection to the tls-engine service, whose engine for it
    already runs as pb-tls (uid, gid and groups); no tls-serve, nothing of it as root."""
    with socket.create_connection(("127.0.0.1", model.ports[service]), timeout=10) as s:
        kids = wait_for(lambda: engine_children(model), timeout=10, what="the engine child")
        assert [i[1] for _, i in kids] == [uid("pb-tls")]
        assert [i[2] for _, i in kids] == [grp.getgrnam("pb-tls").gr_gid]
        assert proc_groups(kids[0][0]) == {grp.getgrnam("pb-tls").gr_gid}
        progs = wait_for(lambda: session_procs(model, IMPLICIT_PROGRAM[service]), timeout=10,
                         what=IMPLICIT_PROGRAM[service])
        assert {i[1] for _, i in progs} == {uid(program)}, progs
        assert tls_serve_uids(model) == []
        # and the session then works, in TLS from the first byte
        t = ssl._create_unverified_context().wrap_socket(s, server_hostname="mx.example.test")
        assert t.recv(512)[:1] in (b"2", b"+", b"*")
        t.close()


def tcpserver_uid_of(model, port):
    """The uid of the tcpserver that listens on port (by its command line)."""
    for pid, (comm, u, g, pp) in instance_procs(model.root).items():
        if comm in FRONTS:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if str(port).encode() in f.read().split(b"\0"):
                    return u
    return None


def proc_groups(pid):
    with open("/proc/%d/status" % pid) as f:
        st = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
    return {int(g) for g in st["Groups"].split()}


@pytest.mark.parametrize("service,user", [("smtpd", "pb-smtpd"), ("submission", "pb-smtpd"),
                                          ("pop3", "pb-login"), ("imap", "pb-login"),
                                          ("smtps", "pb-smtpd"), ("pop3s", "pb-login"),
                                          ("imaps", "pb-login")])
def test_starttls_services_run_the_program_alone_under_its_uid(model, service, user):
    """No tls-serve in front of a STARTTLS or an implicit-TLS port: tcpserver itself runs
    under the service's uid, with its supplementary groups (pb-tlsc for the engine socket)."""
    assert tcpserver_uid_of(model, model.ports[service]) == uid(user)
    for pid, (comm, u, g, pp) in instance_procs(model.root).items():
        if comm in FRONTS and u == uid(user):
            assert grp.getgrnam("pb-tlsc").gr_gid in proc_groups(pid)


POOL_WORKER = {"smtpd": ("smtp-receive", "pb-smtpd", b"220"),
               "submission": ("smtp-receive", "pb-smtpd", b"220"),
               "smtps": ("smtp-receive", "pb-smtpd", b"220"),
               "pop3": ("pop3-serve", "pb-login", b"+OK"),
               "pop3s": ("pop3-serve", "pb-login", b"+OK"),
               "imap": ("imap-serve", "pb-login", b"* OK"),
               "imaps": ("imap-serve", "pb-login", b"* OK")}


@pytest.mark.parametrize("service", sorted(POOL_WORKER))
def test_pool_workers_run_under_the_service_uid(model, service):
    """Every TCP service runs tcp-pool: the pool itself (after binding) and every one of its
    workers (smtp-receive as pb-smtpd, pop3-serve and imap-serve as pb-login), idle or
    serving, run under the service's uid with its groups, never as root."""
    program, user, greeting = POOL_WORKER[service]
    port = str(model.ports[service]).encode()
    procs = instance_procs(model.root)
    pools = []
    for pid, (comm, u, g, pp) in procs.items():
        if comm == "tcp-pool":
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if port in f.read().split(b"\0"):
                    pools.append((pid, u))
    assert [u for _, u in pools] == [uid(user)], pools
    with socket.create_connection(("127.0.0.1", model.ports[service]), timeout=10) as s:
        if service.endswith("s"):  # implicit TLS: the worker's engine is a spare of tls-engine
            s = ssl._create_unverified_context().wrap_socket(s, server_hostname="mx.example.test")
        assert s.recv(512).startswith(greeting)
        workers = wait_for(lambda: [(pid, i) for pid, i in instance_procs(model.root).items()
                                    if i[3] == pools[0][0] and i[0] == program],
                           what="the workers")
        assert {i[1] for _, i in workers} == {uid(user)}, workers
        for pid, _ in workers:
            assert grp.getgrnam("pb-tlsc").gr_gid in proc_groups(pid)
        s.sendall(b"QUIT\r\n")


def engine_children(model):
    eng = [pid for pid, i in instance_procs(model.root).items() if i[0] == "tls-engine"
           and i[1] == 0]
    return [(pid, i) for pid, i in instance_procs(model.root).items()
            if i[0] == "tls-engine" and i[3] in eng]


@pytest.mark.parametrize("service", ["submission", "smtpd"])
def test_tls_engine_dropped_before_client_hello_starttls(model, service):
    """STARTTLS: after 220 to STARTTLS, before the ClientHello, the engine (a child of the
    tls-engine service) runs as pb-tls; the program (smtp-receive) as pb-smtpd; no tls-serve
    exists for the session."""
    with socket.create_connection(("127.0.0.1", model.ports[service]), timeout=10) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"220")
        assert engine_children(model) == []   # plaintext: no engine yet
        s.sendall(b"EHLO client.example\r\n")
        while True:
            line = f.readline()
            assert line.startswith(b"250"), line
            if line[3:4] == b" ":
                break
        s.sendall(b"STARTTLS\r\n")
        assert f.readline().startswith(b"220")
        kids = wait_for(lambda: engine_children(model), what="the engine child")
        assert [i[1] for _, i in kids] == [uid("pb-tls")]
        assert [i[2] for _, i in kids] == [grp.getgrnam("pb-tls").gr_gid]
        assert proc_groups(kids[0][0]) == {grp.getgrnam("pb-tls").gr_gid}
        assert {i[1] for _, i in session_procs(model, "smtp-receive")} == {uid("pb-smtpd")}
        assert tls_serve_uids(model) == []
        # and the handshake then works with the engine under pb-tls
        ctx = ssl._create_unverified_context()
        t = ctx.wrap_socket(s, server_hostname="mx.example.test")
        t.sendall(b"EHLO again\r\n")
        assert t.recv(512).startswith(b"250")
        t.close()


@pytest.mark.parametrize("user,ok", [("pb-smtpd", True), ("pb-login", True),
                                     ("pb-queue", False), ("nobody", False)])
def test_engine_socket_reachable_only_by_its_clients(model, user, ok):
    """Only the STARTTLS services' uids (group pb-tlsc) can connect to the engine socket."""
    code = ("import socket,sys\n"
            "s=socket.socket(socket.AF_UNIX)\n"
            "try: s.connect(sys.argv[1]); print('connected')\n"
            "except OSError as e: print('refused', e.errno)\n")
    r = as_user(user, "/usr/bin/python3", "-c", code, model.path("run", "tls", "engine"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == (b"connected" if ok else b"refused 13"), r.stdout


def test_engine_refuses_a_group_member_with_another_uid(model):
    """The directory lets pb-tlsc in; the service also checks the peer's uid (SO_PEERCRED): a
    process of another uid with pb-tlsc in its groups is closed without an engine."""
    tlsc = grp.getgrnam("pb-tlsc").gr_gid
    code = ("import socket,sys\n"
            "s=socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])\n"
            "a,b=socket.socketpair()\n"
            "try:\n"
            "  socket.send_fds(s,[b'Y'],[a.fileno(),a.fileno(),b.fileno()])\n"
            "  print(repr(s.recv(100)))\n"
            "except OSError as e: print('error', e.errno)\n")
    r = subprocess.run(["s6-applyuidgid", "-u", str(uid("pb-queue")), "-g", str(tlsc), "-G",
                        str(tlsc), "/usr/bin/python3", "-c", code,
                        model.path("run", "tls", "engine")], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() in (b"b''", b"error 104", b"error 32"), r.stdout
    assert engine_children(model) == []


def test_smtps_session_works_under_the_model(model):
    ctx = ssl._create_unverified_context()
    with socket.create_connection(("127.0.0.1", model.ports["smtps"]), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="mx.example.test") as s:
            assert s.recv(512).startswith(b"220")
            s.sendall(b"QUIT\r\n")


# ---- tcp rules, backlog ----

def test_tcp_rules_apply_without_restart(model):
    rules = model.path("control", "tcp-rules")
    old = open(rules).read()
    pid_before = [p for p, i in instance_procs(model.root).items() if i[0] in FRONTS]
    try:
        with open(rules, "w") as f:
            f.write("127.0.0.1:deny\n:allow\n")
        r = model.run("mail-instance", "tcprules", model.root)
        assert r.returncode == 0, r.stderr
        with socket.create_connection(("127.0.0.1", model.ports["smtpd"]), timeout=10) as s:
            assert s.recv(512) == b""   # closed by tcpserver, no greeting
    finally:
        with open(rules, "w") as f:
            f.write(old)
        r = model.run("mail-instance", "tcprules", model.root)
        assert r.returncode == 0, r.stderr
    with socket.create_connection(("127.0.0.1", model.ports["smtpd"]), timeout=10) as s:
        assert s.recv(512).startswith(b"220")
        s.sendall(b"QUIT\r\n")
    assert [p for p, i in instance_procs(model.root).items() if i[0] in FRONTS] == pid_before


def test_burst_of_80_connections_all_greeted(model):
    """80 connections at once to a service with MAXCONN 40: the others wait in the listen
    backlog (tcpserver -b) and every one gets its greeting. (All come from one address: the
    per-address cap, control/smtp-peermax, is raised for this test, or 70 would get 421.)"""
    socks = []
    cap = model.path("control", "smtp-peermax")
    with open(cap, "w") as f:
        f.write("100\n")
    try:
        for _ in range(80):
            s = socket.socket()
            s.settimeout(60)
            s.connect(("127.0.0.1", model.ports["smtpd"]))
            socks.append(s)
        for s in socks:
            assert s.recv(512).startswith(b"220")
            s.sendall(b"QUIT\r\n")
            s.close()
    finally:
        os.unlink(cap)
        for s in socks:
            s.close()


# ---- keys ----

def openssl_key(path):
    r = subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-out", path], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_mismatched_key_refused_at_start(shared_tmp):
    root = os.path.join(shared_tmp, "i")
    env = base_env(MAILROOT=root)
    r = subprocess.run([prog("mail-instance"), "create", root, "--hostname", "mx.example.test",
                        "--domain", "example.test"], capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([prog("tls-serve"), "-C"], capture_output=True, env=env, timeout=30)
    assert r.returncode == 0, r.stderr   # the control: the pair mail-instance made is good
    # a good pair is remembered (the check costs a private-key operation per connection)...
    assert os.path.getsize(os.path.join(root, "tls", ".pair-checked")) == 65
    # ...for those very files only: a new key is checked again, and refused
    openssl_key(os.path.join(root, "tls", "key.pem"))
    r = subprocess.run([prog("tls-serve"), "-C"], capture_output=True, env=env, timeout=30)
    assert r.returncode == 100
    assert b"key.pem does not match the certificate in " in r.stderr, r.stderr
    # per connection too: the program is never run
    r = subprocess.run([prog("tls-serve"), "true"], capture_output=True, env=env, timeout=30,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 100 and b"does not match" in r.stderr
    # the service refuses to start, and says why in its log
    svc = os.path.join(root, "service", "smtps")
    with open(os.path.join(svc, "env", "PORT"), "w") as f:
        f.write("%d\n" % free_port())
    r = subprocess.run(["./run"], cwd=svc, capture_output=True, timeout=60, env=base_env())
    assert r.returncode == 100
    assert b"does not match the certificate" in r.stdout, r.stdout


def test_mismatched_sni_pair_falls_back_to_default(shared_tmp):
    root = os.path.join(shared_tmp, "i")
    env = base_env(MAILROOT=root)
    r = subprocess.run([prog("mail-instance"), "create", root, "--hostname", "mx.example.test",
                        "--domain", "example.test"], capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    sni = os.path.join(root, "tls", "other.example")
    os.mkdir(sni)
    shutil.copy(os.path.join(root, "tls", "cert.pem"), os.path.join(sni, "cert.pem"))
    openssl_key(os.path.join(sni, "key.pem"))
    r = subprocess.run([prog("tls-serve"), "-C"], capture_output=True, env=env, timeout=30)
    assert r.returncode == 0
    assert b"SNI keypair for other.example refused" in r.stderr
    assert b"does not match" in r.stderr


# ---- templates ----

def test_run_scripts_carry_no_absolute_paths():
    for d in sorted(os.listdir(os.path.join(ROOT, "services"))):
        for f in ("run", "log/run", "finish"):
            p = os.path.join(ROOT, "services", d, f)
            if not os.path.isfile(p):
                continue
            for n, line in enumerate(open(p), 1):
                if n == 1 or line.lstrip().startswith("#"):
                    continue
                assert not re.search(r'(^|[\s="\'])/[a-z]', line), "%s:%d: %s" % (p, n, line)
                assert "@MAILROOT@" not in line and "@BINDIR@" not in line, p
            assert not os.path.exists(os.path.join(ROOT, "services", d, "env", "USER")), d


def test_update_replaces_scripts_and_keeps_env(shared_tmp):
    root = os.path.join(shared_tmp, "i")
    env = base_env(MAILROOT=root)
    r = subprocess.run([prog("mail-instance"), "create", root, "--hostname", "mx.example.test",
                        "--domain", "example.test"], capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    tpl = os.path.join(shared_tmp, "tpl")
    shutil.copytree(os.path.join(ROOT, "services"), tpl)
    with open(os.path.join(tpl, "smtpd", "run"), "a") as f:
        f.write("# new version\n")
    with open(os.path.join(tpl, "smtpd", "env", "NEWSETTING"), "w") as f:
        f.write("x\n")
    with open(os.path.join(root, "service", "smtpd", "env", "PORT"), "w") as f:
        f.write("2500\n")
    r = subprocess.run([prog("mail-instance"), "update", root], capture_output=True,
                       env=dict(env, PILLARBOX_SERVICES=tpl), timeout=60)
    assert r.returncode == 0, r.stderr
    svc = os.path.join(root, "service", "smtpd")
    assert open(os.path.join(svc, "run")).read().endswith("# new version\n")
    assert os.access(os.path.join(svc, "run"), os.X_OK)
    assert open(os.path.join(svc, "env", "PORT")).read() == "2500\n"
    assert open(os.path.join(svc, "env", "NEWSETTING")).read() == "x\n"
    assert open(os.path.join(svc, "env", "IP")).read() == "0.0.0.0\n"  # all addresses


def test_instance_moved_still_finds_itself(shared_tmp):
    """The run scripts derive MAILROOT from where they are: a moved instance starts as is."""
    root = os.path.join(shared_tmp, "i")
    env = base_env(MAILROOT=root)
    r = subprocess.run([prog("mail-instance"), "create", root, "--hostname", "mx.example.test",
                        "--domain", "example.test"], capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    moved = os.path.join(shared_tmp, "moved")
    os.rename(root, moved)
    svc = os.path.join(moved, "service", "smtps")
    port = free_port()
    with open(os.path.join(svc, "env", "PORT"), "w") as f:
        f.write("%d\n" % port)
    with open(os.path.join(svc, "env", "IP"), "w") as f:
        f.write("127.0.0.1\n")
    # smtps hands each connection to the TLS engine service: both find the moved instance
    r_, w_ = os.pipe()
    eng = subprocess.Popen(["./run"], cwd=os.path.join(moved, "service", "tls-engine"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True, env=base_env(), pass_fds=(3, w_),
                           preexec_fn=lambda: os.dup2(w_, 3))
    os.close(w_)
    with os.fdopen(r_, "rb") as rd:
        ready, _, _ = select.select([rd], [], [], 20)
        assert ready and rd.read(1) == b"\n", "tls-engine not ready"
    p = subprocess.Popen(["./run"], cwd=svc, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True, env=base_env())
    try:
        wait_for(lambda: listening(port) or p.poll() is not None, timeout=20, what="smtps")
        assert p.poll() is None
        ctx = ssl._create_unverified_context()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="mx.example.test") as s:
                assert s.recv(512).startswith(b"220 mx.example.test")
                s.sendall(b"QUIT\r\n")
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=20)
        p.stdout.close()
        os.killpg(eng.pid, signal.SIGTERM)
        eng.wait(timeout=20)


# ---- the auth service and the login broker, in the model (authsvc) ----

def test_pop3s_login_goes_through_the_broker_and_the_auth_service(model):
    """pop3s: pop3-serve (pb-login) -> login-handoff => login-broker -> pop3-maildir (pb-deliv),
    the password checked by auth-serve (pb-auth), the only reader of passwd.cdb."""
    import poplib
    for svc in ("auth", "login-pop3"):
        r = subprocess.run(["s6-svwait", "-U", "-t", "30000", model.path("service", svc)],
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
    p = poplib.POP3_SSL("127.0.0.1", model.ports["pop3s"], timeout=30,
                        context=ssl._create_unverified_context())
    try:
        p.user(USER)
        with pytest.raises(poplib.error_proto):
            p.pass_("wrong")
        p.user(USER)
        assert p.pass_("Sekr1t").startswith(b"+OK")
        p.stat()
        sess = wait_for(lambda: session_procs(model, "pop3-maildir"), what="pop3-maildir")
        assert {i[1] for _, i in sess} == {uid("pb-deliv")}, sess
        assert {i[1] for _, i in session_procs(model, "pop3-serve")} == {uid("pb-login")}
        p.quit()
    finally:
        p.close()


def test_imaps_login_goes_through_the_broker_and_the_auth_service(model):
    """imaps: imap-serve (pb-login) -> login-handoff => login-broker -> imap-maildir (pb-deliv),
    the password checked by auth-serve (pb-auth)."""
    import imaplib
    for svc in ("auth", "login-imap"):
        r = subprocess.run(["s6-svwait", "-U", "-t", "30000", model.path("service", svc)],
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
    m = imaplib.IMAP4_SSL("127.0.0.1", model.ports["imaps"], timeout=30,
                          ssl_context=ssl._create_unverified_context())
    try:
        with pytest.raises(imaplib.IMAP4.error):
            m.login(USER, "wrong")
        assert m.login(USER, "Sekr1t")[0] == "OK"
        assert m.select("INBOX")[0] == "OK"
        sess = wait_for(lambda: session_procs(model, "imap-maildir"), what="imap-maildir")
        assert {i[1] for _, i in sess} == {uid("pb-deliv")}, sess
        assert {i[1] for _, i in session_procs(model, "imap-serve")} == {uid("pb-login")}
        m.logout()
    finally:
        try:
            m.shutdown()
        except OSError:
            pass


def test_submission_auth_goes_through_the_auth_service(model):
    """smtp-receive (pb-smtpd, in pb-authc) asks auth-serve (pb-auth) over run/auth/socket."""
    import smtplib
    r = subprocess.run(["s6-svwait", "-U", "-t", "30000", model.path("service", "auth")],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    s = smtplib.SMTP("127.0.0.1", model.ports["submission"], timeout=30)
    try:
        s.ehlo("client.example")
        s.starttls(context=ssl._create_unverified_context())
        s.ehlo("client.example")
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login(USER, "wrong")
        assert e.value.smtp_code == 535
        assert s.login(USER, "Sekr1t")[0] == 235
    finally:
        s.close()
    with open(model.path("log", "auth", "current")) as f:
        log = f.read()
    assert "good %s" % USER in log and "bad %s" % USER in log
