"""The auth service (auth-serve) and its client (auth-check): passwords are checked by one
long-running process, the only reader of control/passwd.cdb, with bounded hashing and a
verified-credential cache. Driven with the real programs: auth-check (checkpassword on fd 3),
smtp-receive's SMTP AUTH, and the service's own statistics and log."""
import base64
import os
import signal
import subprocess
import threading

import pytest

from authsvc_helpers import (AUTHC_GID, OUTSIDER_GID, OUTSIDER_UID, ROOT_MODE, SVC_UID,
                             AuthService, as_uid)
from conftest import BIN, proc_children, prog

USER = "demo@example.test"
PW = "s3cret-pw"


@pytest.fixture
def accounts(instance):
    instance.add_user(USER, PW)
    instance.add_user("other@example.test", "other-pw")
    instance.control("smtp-authdelay", "0")
    return instance


@pytest.fixture
def svc(accounts):
    s = AuthService(accounts, "-n", "2", "-t", "300")
    try:
        yield s
    finally:
        s.stop()


def auth_check(inst, user, pw, argv=None, wrap=None):
    """Runs auth-check with user\\0pw\\0 on fd 3; returns (rc, stdout, stderr)."""
    r, w = os.pipe()
    argv = argv if argv is not None else ["sh", "-c", 'echo "USER=$USER HOME=$HOME"']
    cmd = [prog("auth-check")] + argv
    if wrap:
        cmd = wrap(cmd)
    # the shell puts the pipe on fd 3 in the child alone (no fd 3 juggling in the parent:
    # tests run many of these from threads at once)
    cmd = ["sh", "-c", 'fd=$1; shift; exec "$@" 3</dev/fd/$fd', "sh", str(r)] + cmd
    p = subprocess.Popen(cmd, pass_fds=(r,), env=inst.env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(r)
    try:
        os.write(w, user.encode() + b"\0" + pw.encode() + b"\0")
    except BrokenPipeError:
        pass
    os.close(w)
    out, err = p.communicate(timeout=60)
    return p.returncode, out, err


def smtp_auth(inst, user, pw):
    """One SMTP AUTH PLAIN through smtp-receive (piped, loopback, plaintext allowed): the code."""
    e = dict(inst.env, SMTPAUTH="1", SMTPAUTH_PLAINTEXT="1", TCPREMOTEIP="127.0.0.1")
    tok = base64.b64encode(("\0%s\0%s" % (user, pw)).encode()).decode()
    p = subprocess.run([prog("smtp-receive")], env=e, timeout=60, capture_output=True,
                       input=("EHLO client.example\r\nAUTH PLAIN %s\r\nQUIT\r\n" % tok).encode())
    lines = p.stdout.decode().split("\r\n")
    auth = [l for l in lines if l[:3] in ("235", "535", "454")]
    assert len(auth) == 1, p.stdout
    return int(auth[0][:3]), auth[0]


def test_good_and_bad_passwords_through_the_service(svc):
    rc, out, err = auth_check(svc.inst, USER, PW)
    assert rc == 0, err
    assert out == ("USER=%s HOME=%s\n" % (USER, svc.inst.maildir(USER))).encode()
    assert auth_check(svc.inst, "Demo@EXAMPLE.test", PW)[0] == 0
    assert auth_check(svc.inst, USER, "wrong")[0] == 1
    assert auth_check(svc.inst, "nobody@example.test", PW)[0] == 1
    assert auth_check(svc.inst, "other@example.test", PW)[0] == 1
    st = svc.stats()
    # the service answered all five (auth-check did not fall back to its direct mode)
    assert st["good"] == 2 and st["bad"] == 3, st


def test_smtp_auth_through_the_service(svc):
    assert smtp_auth(svc.inst, USER, PW)[0] == 235
    assert smtp_auth(svc.inst, USER, "wrong")[0] == 535
    st = svc.stats()
    assert st["good"] == 1 and st["bad"] == 1, st


def test_repeated_login_within_the_ttl_runs_no_hash(svc):
    assert auth_check(svc.inst, USER, PW)[0] == 0
    first = svc.stats()
    assert first["hashes"] == 1 and first["cache_hits"] == 0
    for _ in range(3):
        assert auth_check(svc.inst, USER, PW)[0] == 0
    assert smtp_auth(svc.inst, USER, PW)[0] == 235
    st = svc.stats()
    assert st["hashes"] == 1 and st["cache_hits"] == 4, st
    assert len(svc.hash_lines()) == 1
    assert sum(1 for l in svc.loglines() if l.endswith("good %s cached" % USER)) == 4


def test_a_wrong_password_is_never_cached(svc):
    assert auth_check(svc.inst, USER, PW)[0] == 0
    for _ in range(2):
        assert auth_check(svc.inst, USER, "wrong")[0] == 1
    st = svc.stats()
    assert st["hashes"] == 3 and st["cache_hits"] == 0, st


def test_password_change_invalidates_the_cache_at_once(svc):
    assert auth_check(svc.inst, USER, PW)[0] == 0
    assert auth_check(svc.inst, USER, PW)[0] == 0
    assert svc.stats()["cache_hits"] == 1
    r = svc.inst.run("mail-user", "passwd", USER, input=b"n3w-pw\n")
    assert r.returncode == 0, r.stderr
    # at once: no wait for the TTL, the old password is refused, the new one accepted
    assert auth_check(svc.inst, USER, PW)[0] == 1
    assert auth_check(svc.inst, USER, "n3w-pw")[0] == 0
    assert smtp_auth(svc.inst, USER, PW)[0] == 535
    st = svc.stats()
    assert st["cache_hits"] == 1 and st["hashes"] == 4, st


def test_ttl_zero_turns_the_cache_off(accounts):
    s = AuthService(accounts, "-t", "0")
    try:
        for _ in range(2):
            assert auth_check(accounts, USER, PW)[0] == 0
        st = s.stats()
        assert st["hashes"] == 2 and st["cache_hits"] == 0, st
    finally:
        s.stop()


def test_login_storm_stays_within_the_hashing_bound(accounts):
    """32 parallel logins (different passwords, so the cache cannot help) never run more than
    N=2 hashes at once; each hash is logged with the number running. On a loaded machine a
    login may wait past the queue deadline (20 s): it is then answered "busy" (111) and
    counted, never left unanswered or answered wrongly."""
    for i in range(8):
        accounts.add_user("u%d@example.test" % i, "pw%d" % i)
    s = AuthService(accounts, "-n", "2", "-q", "20")
    try:
        results = [None] * 32
        errs = {}

        def one(i):
            u = "u%d@example.test" % (i % 8)
            pw = "pw%d" % (i % 8) if i < 8 else "wrong%d" % i
            results[i], _, errs[i] = auth_check(accounts, u, pw, argv=["true"])
        threads = [threading.Thread(target=one, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        expected = [0] * 8 + [1] * 24
        st = s.stats()
        assert all(r in (e, 111) for r, e in zip(results, expected)), (results, errs, st)
        busy = results.count(111)
        assert st["busy"] == busy and busy < 16, (st, results)
        assert st["hashes"] == 32 - busy and st["max_hashes"] == 2, st
        assert st["max_running"] == 2, st  # the bound was reached, and never passed
        assert st["max_queued"] > 2, st     # the rest waited in the queue
        running = [int(l.rsplit("running=", 1)[1]) for l in s.hash_lines()]
        assert len(running) == 32 - busy and max(running) == 2, (running, st, s.loglines()[-5:])
    finally:
        s.stop()


def test_queue_deadline_answers_busy_as_temporary(accounts):
    """With one slot and a 1 s queue deadline, logins queued behind a hash that does not end get
    111. The hash is held by stopping its child (SIGSTOP), so the queue outlasts the deadline on
    a machine of any speed (storms of logins did not, on a fast quiet one)."""
    s = AuthService(accounts, "-n", "1", "-q", "1")
    try:
        results = []
        lock = threading.Lock()
        errs = []

        def one(i):
            rc, _, err = auth_check(accounts, USER, "wrong%d" % i, argv=["true"])
            with lock:
                results.append(rc)
                if rc == 111:
                    errs.append(err)

        def stop_a_hash():
            """A login whose hash child is caught and stopped: (thread, child), or None when
            the hash ended before it was seen."""
            t = threading.Thread(target=one, args=(len(results) + 1000,))
            t.start()
            while t.is_alive():
                kids = proc_children(s.proc.pid)
                if kids:
                    kid = next(iter(kids))
                    try:
                        os.kill(kid, signal.SIGSTOP)
                        return t, kid
                    except ProcessLookupError:
                        pass
            t.join()
            return None

        held = None
        for _ in range(200):  # each try is one hash: bounded
            held = stop_a_hash()
            if held:
                break
        assert held, "never caught a hash child"
        t, kid = held
        try:
            queued = [threading.Thread(target=one, args=(i,)) for i in range(5)]
            for q in queued:
                q.start()
            for q in queued:  # answered at the deadline (1 s), while the slot stays taken
                q.join(30)
            assert not any(q.is_alive() for q in queued)
        finally:
            os.kill(kid, signal.SIGCONT)
        t.join(30)
        st = s.stats()
        assert results.count(111) == 5, (results, errs[:3])
        assert sorted(set(results)) == [1, 111], results
        assert st["busy"] == results.count(111) and st["max_running"] == 1, (st, errs[:3])
    finally:
        s.stop()


def test_unreadable_password_database_is_111_and_smtp_454(accounts):
    """Issue 10: when the service cannot read passwd.cdb the answer is trouble (111; SMTP 454
    4.7.0), never bad credentials (1; 535)."""
    s = AuthService(accounts)
    try:
        if ROOT_MODE:
            os.chown(accounts.path("control", "passwd.cdb"), 0, 0)  # no longer the service's
        os.chmod(accounts.path("control", "passwd.cdb"), 0)
        rc, _, err = auth_check(accounts, USER, PW)
        assert rc == 111, err
        assert auth_check(accounts, "nobody@example.test", PW)[0] == 111
        code, line = smtp_auth(accounts, USER, PW)
        assert code == 454 and "4.7.0" in line, line
        assert any("passwd.cdb" in l and "permission denied" in l for l in s.loglines())
    finally:
        s.stop()


def test_direct_mode_unreadable_password_database_is_111(accounts):
    """Without a service socket, auth-check runs auth-serve -i with its own rights: an uid that
    may not read passwd.cdb gets 111, not 1."""
    assert not os.path.exists(accounts.path("run", "auth", "socket"))
    if ROOT_MODE:
        from authsvc_helpers import open_path_to
        open_path_to(accounts.path("control", "x"))
        wrap = lambda cmd: as_uid(OUTSIDER_UID, OUTSIDER_GID, cmd)  # noqa: E731
    else:
        os.chmod(accounts.path("control", "passwd.cdb"), 0)
        wrap = None
    rc, _, err = auth_check(accounts, USER, PW, wrap=wrap)
    assert rc == 111, err


def test_service_not_running_is_111(accounts):
    s = AuthService(accounts)
    s.proc.kill()  # the socket file stays behind, nobody listens
    s.proc.wait()
    s.log.close()
    assert os.path.exists(s.sock)
    rc, _, err = auth_check(accounts, USER, PW)
    assert rc == 111 and b"auth service" in err, err


@pytest.mark.skipif(not ROOT_MODE, reason="other uids exist only for root (one uid otherwise)")
def test_only_the_client_group_may_connect(svc):
    """A uid outside the clients' group cannot reach the socket (so cannot guess passwords
    through it); one in the group can."""
    probe = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
             "try:\n s.connect(sys.argv[1]); print('connected')\n"
             "except PermissionError: print('refused')\n")
    out = subprocess.run(as_uid(OUTSIDER_UID, OUTSIDER_GID,
                                ["/usr/bin/python3", "-c", probe, svc.sock]),
                         capture_output=True, timeout=30)
    assert out.stdout == b"refused\n", out
    rc, _, err = auth_check(svc.inst, USER, PW,
                            wrap=lambda c: as_uid(OUTSIDER_UID, OUTSIDER_GID, c))
    assert rc == 111, err
    out = subprocess.run(as_uid(OUTSIDER_UID, AUTHC_GID, ["/usr/bin/python3", "-c", probe, svc.sock]),
                         capture_output=True, timeout=30)
    assert out.stdout == b"connected\n", out
    rc, _, _ = auth_check(svc.inst, USER, PW, wrap=lambda c: as_uid(OUTSIDER_UID, AUTHC_GID, c))
    assert rc == 0


@pytest.mark.skipif(not ROOT_MODE, reason="the service's own uid exists only for root")
def test_the_service_runs_under_its_own_uid(svc):
    with open("/proc/%d/status" % svc.proc.pid) as f:
        uids = next(l for l in f if l.startswith("Uid:")).split()[1:]
    assert {int(u) for u in uids} == {SVC_UID} and SVC_UID != 0


def test_passwd_cdb_reader_only_in_auth_serve():
    """Issue 11: the reader of passwd.cdb (lib/authdb: lookup_account) is linked into the auth
    service alone."""
    progs = sorted(os.listdir(BIN))
    assert "auth-serve" in progs and "auth-check" in progs
    have = []
    for p in progs:
        out = subprocess.run(["nm", os.path.join(BIN, p)], capture_output=True, timeout=30)
        assert out.returncode == 0, out.stderr
        syms = {l.split()[-1] for l in out.stdout.decode().splitlines() if l.strip()}
        if syms & {"lookup_account", "authdb_ready"}:
            have.append(p)
    assert have == ["auth-serve"]


def test_protocol_misuse_is_answered_temporary(svc):
    assert svc.request(b"X")[:1] == b"T"
    assert svc.request(b"C" + b"u" * 400)[:1] == b"T"  # user longer than 320 octets
    assert svc.request(b"Cuser\0pw\0trailing")[:1] == b"T"
    assert svc.request(b"C\0pw\0")[:1] == b"T"
    assert svc.request(b"C" + USER.encode() + b"\0" + PW.encode() + b"\0")[:1] == b"K"
