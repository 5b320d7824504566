"""The login broker: pop3-serve (pre-login uid) runs login-handoff, which passes the client's
descriptors and the credentials to login-broker (delivery uid, behind s6-ipcserver on
MAILROOT/run/login/pop3); the broker asks the auth service and execs pop3-maildir on them.
Real clients (poplib), real programs, each under its own uid when run as root."""
import os
import poplib
import socket
import subprocess
import threading

import pytest

from authsvc_helpers import (AUTHC_GID, DELIV_UID, LOGIN_GID, LOGIN_UID, LOGINC_GID,
                             OUTSIDER_GID, OUTSIDER_UID, ROOT_MODE, AuthService, LoginBroker,
                             as_uid, as_uid_groups)
from conftest import free_port, prog, stop_procs, wait_for

USER = "demo@example.test"
PW = "s3cret-pw"


def put(inst, n):
    d = inst.maildir(USER)
    for i in range(1, n + 1):
        with open(os.path.join(d, "new", "1700000000.M%dP1Q1.mx.example.test" % i), "wb") as f:
            f.write(b"From: a@example.org\nSubject: message %d\n\nbody %d\n" % (i, i))


class Pop3Stack:
    def __init__(self, inst, hashes=2, broker_argv=None, queue_timeout=10):
        self.inst = inst
        self.auth = AuthService(inst, "-n", str(hashes), "-q", str(queue_timeout))
        self.broker = None
        self.tcp = None
        try:
            self.broker = LoginBroker(inst, "pop3", broker_argv or [prog("pop3-maildir")])
            self.port = free_port()
            e = dict(inst.env, POP3_ALLOW_PLAINTEXT_AUTH="1", POP3_FAIL_DELAY="0")
            self.errlog = open(inst.path("pop3-serve.log"), "w")
            self.tcp = subprocess.Popen(
                ["tcpserver", "-R", "-H", "-l", "localhost", "-c", "100", "127.0.0.1",
                 str(self.port)] +
                as_uid_groups(LOGIN_UID, LOGIN_GID, [LOGINC_GID],
                              [prog("pop3-serve"), prog("login-handoff"), "pop3"]),
                env=e, stdout=subprocess.DEVNULL, stderr=self.errlog)
            wait_for(self._listening, timeout=10, what="tcpserver")
        except BaseException:
            self.stop()
            raise

    def _listening(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def client(self):
        return poplib.POP3("127.0.0.1", self.port, timeout=30)

    def stop(self):
        if self.tcp:
            stop_procs([self.tcp])
            self.errlog.close()
        if self.broker:
            self.broker.stop()
        self.auth.stop()


@pytest.fixture
def stack(instance):
    instance.add_user(USER, PW)
    instance.add_user("other@example.test", "other-pw")
    put(instance, 3)
    s = Pop3Stack(instance)
    try:
        yield s
    finally:
        s.stop()


def ppid_of(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def procs_named(name, roots):
    """(pid, uid) of the processes called name that descend from one of the pids in roots (this
    test's tcpserver and broker: other tests on the machine may run the same programs)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % pid) as f:
                comm = f.read().strip()
            with open("/proc/%s/status" % pid) as f:
                uid = int(next(l for l in f if l.startswith("Uid:")).split()[2])
        except (OSError, StopIteration):
            continue
        if comm != name:
            continue
        p = int(pid)
        for _ in range(64):
            p = ppid_of(p)
            if p in roots or p <= 1:
                break
        if p in roots:
            out.append((int(pid), uid))
    return out


def test_pop3_login_through_the_broker(stack):
    p = stack.client()
    try:
        p.user(USER)
        assert p.pass_(PW).startswith(b"+OK 3 messages")
        assert p.stat()[0] == 3
        resp, lines, _ = p.retr(2)
        assert b"Subject: message 2" in lines
        if ROOT_MODE:
            # the session runs as the delivery uid, the pre-login side as the login uid
            roots = {stack.tcp.pid, stack.broker.proc.pid}
            sess = wait_for(lambda: procs_named("pop3-maildir", roots), what="pop3-maildir")
            assert {u for _, u in sess} == {DELIV_UID}, sess
            # the front waits as login-wait, named pop3-serve once it runs (PR_SET_NAME): polled
            pre = wait_for(lambda: procs_named("pop3-serve", roots), what="the front")
            assert {u for _, u in pre} == {LOGIN_UID}, pre
        assert p.quit().startswith(b"+OK")
    finally:
        p.close()
    st = stack.auth.stats()
    assert st["good"] == 1 and st["hashes"] == 1, st


def test_pop3_bad_password_then_good_on_one_connection(stack):
    p = stack.client()
    try:
        p.user(USER)
        with pytest.raises(poplib.error_proto) as e:
            p.pass_("wrong")
        assert e.value.args[0] == b"-ERR [AUTH] invalid user name or password"
        p.user(USER)
        assert p.pass_(PW).startswith(b"+OK 3 messages")
        p.quit()
    finally:
        p.close()


def test_pop3_repeated_login_is_served_from_the_cache(stack):
    for _ in range(3):
        p = stack.client()
        try:
            p.user(USER)
            assert p.pass_(PW).startswith(b"+OK")
            p.quit()
        finally:
            p.close()
    st = stack.auth.stats()
    assert st["hashes"] == 1 and st["cache_hits"] == 2, st


def test_pop3_auth_service_down_is_temporary(stack):
    stack.auth.proc.kill()
    stack.auth.proc.wait()
    p = stack.client()
    try:
        p.user(USER)
        with pytest.raises(poplib.error_proto) as e:
            p.pass_(PW)
        assert e.value.args[0].startswith(b"-ERR [SYS/TEMP]")
    finally:
        p.close()


def test_pop3_pipelined_commands_cross_the_broker(stack):
    """Commands pipelined behind PASS reach the session (POP3_INPUT crosses the broker)."""
    s = socket.create_connection(("127.0.0.1", stack.port), timeout=30)
    try:
        f = s.makefile("rb")
        assert f.readline().startswith(b"+OK")
        s.sendall(("USER %s\r\nPASS %s\r\nSTAT\r\nQUIT\r\n" % (USER, PW)).encode())
        assert f.readline().startswith(b"+OK")
        assert f.readline().startswith(b"+OK 3 messages")
        assert f.readline().startswith(b"+OK 3 ")
        assert f.readline().startswith(b"+OK")
    finally:
        s.close()


def test_parallel_pop3_logins_through_the_broker(instance):
    """16 clients log in at once (different accounts): all sessions work, hashing stays within
    the service's bound (the queue deadline is 25 s here, under pop3-serve's 30: a loaded test
    machine must not turn a slow login into a refusal)."""
    users = ["p%d@example.test" % i for i in range(16)]
    for u in users:
        instance.add_user(u, "pw-" + u)
    instance.control("pop3-peermax", "100")  # the per-address cap (10) alone would refuse 6
    stack = Pop3Stack(instance, queue_timeout=25)
    results = [None] * 16

    def one(i):
        p = stack.client()
        try:
            p.user(users[i])
            results[i] = p.pass_("pw-" + users[i])[:3]
            p.quit()
        except poplib.error_proto as e:
            results[i] = e.args[0]
        finally:
            p.close()
    try:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        st = stack.auth.stats()
        assert results == [b"+OK"] * 16, (results, st, stack.auth.loglines()[-5:])
        assert st["hashes"] == 16 and st["max_running"] <= 2, st
    finally:
        stack.stop()


def test_broker_believes_only_the_listed_variables(instance, tmp_path):
    """A hand-made hand-over (as a compromised pre-login process could send) carrying
    LD_PRELOAD and MAILROOT: the session gets neither; USER and HOME come from the service."""
    instance.add_user(USER, PW)
    out = tmp_path / "env.out"
    open(str(out), "w").close()
    os.chmod(str(out), 0o666)
    auth = AuthService(instance)
    broker = None
    try:
        broker = LoginBroker(instance, "envtest",
                             ["/bin/sh", "-c", "env > %s; echo done >&3" % out])
        r, w = os.pipe()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(broker.sock)
        creds = USER.encode() + b"\0" + PW.encode() + b"\0"
        env = (b"NOTIFY=POP3_NOTIFYFD\0TCPREMOTEIP=192.0.2.7\0LD_PRELOAD=/tmp/evil.so\0"
               b"MAILROOT=/tmp/elsewhere\0USER=root\0")
        body = len(creds).to_bytes(2, "big") + creds + env
        msg = b"PBL1" + len(body).to_bytes(4, "big") + body
        socket.send_fds(s, [msg], [0, 1, w])
        os.close(w)
        assert os.read(r, 100) == b"done\n"
        assert s.recv(10) == b""  # the session ended: EOF, no status octet
        s.close()
        got = dict(l.split("=", 1) for l in out.read_text().splitlines() if "=" in l)
        assert got["USER"] == USER and got["HOME"] == instance.maildir(USER)
        assert got["TCPREMOTEIP"] == "192.0.2.7" and got["POP3_NOTIFYFD"] == "3"
        assert "LD_PRELOAD" not in got
        assert got["MAILROOT"] == instance.root
    finally:
        if broker:
            broker.stop()
        auth.stop()


def test_broker_answers_bad_credentials_with_status_1(instance):
    instance.add_user(USER, PW)
    auth = AuthService(instance)
    broker = None
    try:
        broker = LoginBroker(instance, "pop3", [prog("pop3-maildir")])
        rc = handoff(instance, USER, "wrong")
        assert rc == 1
        auth.proc.kill()
        auth.proc.wait()
        assert handoff(instance, USER, PW) == 111
    finally:
        if broker:
            broker.stop()
        auth.stop()


def handoff(inst, user, pw, name="pop3", wrap=None):
    r, w = os.pipe()
    cmd = [prog("login-handoff"), name]
    if wrap:
        cmd = wrap(cmd)
    cmd = ["sh", "-c", 'fd=$1; shift; exec "$@" 3</dev/fd/$fd', "sh", str(r)] + cmd
    p = subprocess.Popen(cmd, pass_fds=(r,), env=inst.env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    os.close(r)
    os.write(w, user.encode() + b"\0" + pw.encode() + b"\0")
    os.close(w)
    p.communicate(timeout=60)
    return p.returncode


def test_handoff_without_broker_is_111_and_misuse_is_2(instance):
    instance.add_user(USER, PW)
    assert handoff(instance, USER, PW) == 111
    r = subprocess.run([prog("login-handoff")], env=instance.env, capture_output=True,
                       timeout=30)
    assert r.returncode == 2


@pytest.mark.skipif(not ROOT_MODE, reason="other uids exist only for root (one uid otherwise)")
def test_only_the_login_group_may_reach_the_broker(stack):
    probe = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
             "try:\n s.connect(sys.argv[1]); print('connected')\n"
             "except PermissionError: print('refused')\n")
    out = subprocess.run(as_uid(OUTSIDER_UID, OUTSIDER_GID,
                                ["/usr/bin/python3", "-c", probe, stack.broker.sock]),
                         capture_output=True, timeout=30)
    assert out.stdout == b"refused\n", out
    # and the pre-login uid can reach the broker but not the auth service
    out = subprocess.run(as_uid_groups(LOGIN_UID, LOGIN_GID, [LOGINC_GID],
                                       ["/usr/bin/python3", "-c", probe, stack.auth.sock]),
                         capture_output=True, timeout=30)
    assert out.stdout == b"refused\n", out
    assert AUTHC_GID != LOGINC_GID


def test_broker_trouble_after_the_hand_over_is_111_not_eof(instance):
    """A session program that cannot be run is trouble (111) for login-handoff, never the
    EOF that means "the session ran"."""
    instance.add_user(USER, PW)
    auth = AuthService(instance)
    broker = None
    try:
        broker = LoginBroker(instance, "pop3", ["/nonexistent/session-program"])
        assert handoff(instance, USER, PW) == 111
        assert handoff(instance, USER, "wrong") == 1
    finally:
        if broker:
            broker.stop()
        auth.stop()


def test_the_session_is_waited_for_by_login_wait(stack):
    """Once the session runs, pop3-serve and login-handoff exec login-wait (a few pages instead
    of a whole program each), keeping their pids and names; the front still logs the logout
    with the session's exit code."""
    p = stack.client()
    try:
        p.user(USER)
        assert p.pass_(PW).startswith(b"+OK 3 messages")
        # tcpserver's children: this client's front, and for a while perhaps the one of the
        # stack's readiness probe (a connection closed at once), which is not this session's
        front = wait_for(lambda: (lambda k: len(k) == 1 and k)([int(x) for x in subprocess.run(
            ["pgrep", "-P", str(stack.tcp.pid)], capture_output=True).stdout.split()]),
            what="the front alone")
        handoff = wait_for(lambda: [int(x) for x in subprocess.run(
            ["pgrep", "-P", str(front[0])], capture_output=True).stdout.split()],
            what="login-handoff")
        assert len(handoff) == 1, handoff
        for pid, name in ((front[0], "pop3-serve"), (handoff[0], "login-handoff")):
            wait_for(lambda: os.path.basename(os.readlink("/proc/%d/exe" % pid)) == "login-wait",
                     what="%s exec'ing login-wait" % name)
            with open("/proc/%d/comm" % pid) as f:
                assert f.read().strip() == name
        assert p.quit().startswith(b"+OK")
    finally:
        p.close()
    wait_for(lambda: b"pop3-serve: info: logout demo@example.test from 127.0.0.1 status 0\n"
             in open(stack.inst.path("pop3-serve.log"), "rb").read(), what="the logout line")


def test_login_wait_exit_codes_and_slot(tmp_path):
    lw = prog("login-wait")
    for data, code in ((b"\x01", 1), (b"\x6f", 111), (b"", 0)):
        r = subprocess.run([lw, "-f", "0"], input=data, capture_output=True, timeout=10)
        assert r.returncode == code, (data, r)
    assert subprocess.run([lw, "-f", "9"], capture_output=True, timeout=10).returncode == 111
    for bad in ([], ["-f"], ["-f", "x"], ["-p", "0", "p"], ["-p", "1", "-x", "s", "p"]):
        r = subprocess.run([lw] + bad, capture_output=True, timeout=10)
        assert r.returncode == 100 and b"usage" in r.stderr, (bad, r)
    # -p: the waiter is the child's parent (exec keeps children); the slot file goes
    script = ("import os, sys\npid = os.fork()\nif pid == 0:\n"
              "    if sys.argv[2] == 'kill': os.kill(os.getpid(), 9)\n"
              "    os._exit(int(sys.argv[2]))\n"
              "os.execv(sys.argv[1], ['front', '-p', str(pid), '-u', sys.argv[3], 'x: logout '])\n")
    for how, code, said in (("0", 0, b"0"), ("7", 7, b"7"), ("kill", 111, b"killed")):
        slot = tmp_path / "slot"
        slot.write_bytes(b"")
        r = subprocess.run(["/usr/bin/python3", "-c", script, lw, how, str(slot)],
                           capture_output=True, timeout=10)
        assert r.returncode == code and r.stderr == b"x: logout " + said + b"\n", (how, r)
        assert not slot.exists()
    # -f with a prefix (login-handoff under a pool worker): the broker's answer is no session
    # (no line, the slot stays: the front holds it); its end is the logout (line, slot gone)
    for data, code, said in ((b"\x01", 1, b""), (b"", 0, b"x: logout 0\n")):
        slot = tmp_path / "slot"
        slot.write_bytes(b"")
        r = subprocess.run([lw, "-f", "0", "-u", str(slot), "x: logout "], input=data,
                           capture_output=True, timeout=10)
        assert r.returncode == code and r.stderr == said, (data, r)
        assert slot.exists() == (code != 0)
