"""`make run`: services/make-run creates a demo instance, runs s6-svscan in the foreground, and
stops everything on Ctrl-C. The test uses a temporary instance directory (PILLARBOX_VAR) and
shifted ports (PILLARBOX_PORT_OFFSET) so that it never touches ./var or the real demo ports."""
import os
import random
import re
import select
import signal
import smtplib
import socket
import ssl
import subprocess
import time

from conftest import ROOT, base_env, prog, wait_for


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def listening(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def procs_under(path):
    """Processes whose command line mentions path (our instance)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if path.encode() in cmd:
            found.append((int(pid), cmd))
    return found


def read_until(p, marker, timeout):
    """p's output until marker is in it (None: until end of file), within timeout seconds.
    Bounded: a leftover process (s6-svscan, a service) may hold the pipe open and say nothing."""
    out = b""
    deadline = time.monotonic() + timeout
    while marker is None or marker not in out:
        left = deadline - time.monotonic()
        assert left > 0, (marker, out)
        if not select.select([p.stdout], [], [], left)[0]:
            continue
        c = p.stdout.read1(4096)
        if not c:
            assert marker is None, out
            break
        out += c
    return out


def pick_offset():
    for _ in range(50):
        off = random.randrange(20000, 40000, 7)
        if all(port_free(p + off) for p in (2525, 5587, 4465, 1110, 1995, 1143, 1993)):
            return off
    raise AssertionError("no free port range")


def test_make_run_end_to_end(shared_tmp):
    var = os.path.join(shared_tmp, "var")
    off = pick_offset()
    env = base_env(PILLARBOX_VAR=var, PILLARBOX_PORT_OFFSET=str(off))
    p = subprocess.Popen(["sh", os.path.join(ROOT, "services", "make-run")], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True)
    try:
        out = read_until(p, b"Ctrl-C", 60)
        text = out.decode()
        pw = re.search(r"password: (\S+)", text).group(1)
        assert open(os.path.join(var, "demo-password")).read().strip() == pw
        port = 2525 + off
        assert "port %d" % port in text and "swaks --server 127.0.0.1:%d" % port in text
        wait_for(lambda: listening(port), timeout=30, what="SMTP on %d" % port)
        # smtp-receive injects through the inject service: under load it may come up later
        # than smtpd (then a message gets 451)
        wait_for(lambda: os.path.exists(os.path.join(var, "queue", "inject.sock")), timeout=30,
                 what="the injection socket")
        # and STARTTLS goes through the tls-engine service, which may come up later still
        # (then STARTTLS gets 454, as it should)
        wait_for(lambda: os.path.exists(os.path.join(var, "run", "tls", "engine")), timeout=30,
                 what="the TLS engine's socket")

        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.ehlo("client.example")
            s.sendmail("someone@elsewhere.example", ["demo@example.test"],
                       b"From: someone@elsewhere.example\r\nSubject: make run\r\n\r\nhello demo\r\n")
        # port 25's service offers STARTTLS (tls-serve -S) with the instance's certificate
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.ehlo("client.example")
            assert s.has_extn("starttls")
            s.starttls(context=ssl._create_unverified_context())
            s.ehlo("client.example")
            assert not s.has_extn("starttls")
            s.sendmail("someone@elsewhere.example", ["demo@example.test"],
                       b"Subject: over tls\r\n\r\nhello again\r\n")
        new = os.path.join(var, "mail", "example.test", "demo", "new")

        def delivered():
            return [n for n in os.listdir(new)] if os.path.isdir(new) else []
        # the inject service: sendmail through the local injection socket
        # readiness through notification-fd: s6-ipcserver -1 says when it listens
        r = subprocess.run(["s6-svwait", "-U", "-t", "30000", os.path.join(var, "service", "inject")],
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        r = subprocess.run([prog("sendmail"), "demo@example.test"],
                           input=b"Subject: via the socket\n\nhello socket\n",
                           env=dict(env, MAILROOT=var, QUEUE_INJECT="queue-inject-ipc -c"),
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        names = wait_for(lambda: len(delivered()) >= 3 and delivered(), timeout=60,
                         what="delivery to the demo Maildir")
        got = b"".join(open(os.path.join(new, n), "rb").read() for n in names)
        assert b"hello demo" in got and b"hello again" in got and b"hello socket" in got
        assert b"with ESMTPS" in got
        # the printed way to read it over IMAPS (services imaps + login-imap + auth) works
        r = subprocess.run(["s6-svwait", "-U", "-t", "30000",
                            os.path.join(var, "service", "login-imap")],
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        cmds = [l.strip() for l in text.splitlines() if l.strip().startswith("curl -k 'imaps://")]
        assert len(cmds) == 2 and ":%d/INBOX" % (1993 + off) in cmds[0], text
        r = subprocess.run(["sh", "-c", cmds[0]], capture_output=True, timeout=60)
        assert r.returncode == 0 and b"Subject: " in r.stdout and b"hello" in r.stdout, r
        r = subprocess.run(["sh", "-c", cmds[1]], capture_output=True, timeout=60)
        assert r.returncode == 0 and r.stdout.count(b"ENVELOPE") == 3, r
        # IMAP with STARTTLS on 1143: no login before TLS
        wait_for(lambda: listening(1143 + off), timeout=30, what="IMAP on %d" % (1143 + off))
        with socket.create_connection(("127.0.0.1", 1143 + off), timeout=30) as s:
            greeting = s.makefile("rb").readline()
            assert greeting.startswith(b"* OK [CAPABILITY ") and b" STARTTLS " in greeting
            assert b"LOGINDISABLED" in greeting, greeting
        assert os.path.exists(os.path.join(var, "log", "smtpd", "current"))
    finally:
        # Ctrl-C: SIGINT to the foreground process group
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)
        try:
            rc = p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            raise AssertionError("make-run did not stop on SIGINT")
        # nothing of the instance keeps running: supervisors, servers, loggers are gone
        try:
            wait_for(lambda: not procs_under(var), timeout=20, what="services to stop")
        finally:
            for pid, _ in procs_under(var):
                os.kill(pid, signal.SIGKILL)
            p.stdout.close()
    assert rc == 0
    assert not listening(2525 + off)
    with open(os.path.join(var, "log", "smtpd", "current"), "rb") as f:
        assert b"smtp-receive: info: session ip=127.0.0.1" in f.read()


def test_make_run_keeps_an_existing_instance(shared_tmp):
    """A second start reuses ./var: the same password, no new instance."""
    var = os.path.join(shared_tmp, "var")
    off = pick_offset()
    env = base_env(PILLARBOX_VAR=var, PILLARBOX_PORT_OFFSET=str(off))
    pws = []
    for _ in range(2):
        p = subprocess.Popen(["sh", os.path.join(ROOT, "services", "make-run")], cwd=ROOT,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
        try:
            out = read_until(p, b"Ctrl-C", 60)
            pws.append(re.search(rb"password: (\S+)", out).group(1))
            wait_for(lambda: listening(2525 + off), timeout=30, what="SMTP")
        finally:
            os.killpg(p.pid, signal.SIGINT)
            try:
                rc = p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                rc = "hung"
            rest = read_until(p, None, 20)
            p.stdout.close()
        assert rc == 0 and b"pillarbox: stopped" in rest, (rc, rest)
        wait_for(lambda: not procs_under(var), timeout=20, what="services to stop")
    assert pws[0] == pws[1]
