"""auth-check (the checkpassword interface) and SMTP submission with TLS and AUTH, end to end:
tcpserver -> tls-serve [-S] -> smtp-receive -> auth-check, driven by real clients (Python's
smtplib with a verifying context, swaks, curl, openssl s_client)."""
import base64
import os
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from conftest import prog, wait_for
from tls_helpers import Server, client_context, readline, s_client

HOST = "mx.example.test"
USER = "demo@example.test"
PW = "s3cret-pw"


def b64(s):
    return base64.b64encode(s if isinstance(s, bytes) else s.encode()).decode()


# ---- auth-check alone ----

@pytest.fixture
def accounts(instance):
    instance.add_user(USER, PW)
    instance.add_user("other@example.test", "other-pw")
    instance.add_alias("alias@example.test", USER)
    instance.control("smtp-authdelay", "0")
    return instance


def auth_check(inst, data, argv=None, env=None):
    """Runs auth-check with data on fd 3; returns (rc, stdout, seconds)."""
    r, w = os.pipe()
    argv = argv if argv is not None else ["sh", "-c", 'echo "USER=$USER HOME=$HOME"']
    e = dict(inst.env)
    e.update(env or {})
    t0 = time.monotonic()

    def child():  # the pipe's read end becomes fd 3 of auth-check
        if r != 3:
            os.dup2(r, 3)
    p = subprocess.Popen([prog("auth-check")] + argv, pass_fds=(3, r), preexec_fn=child, env=e,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(r)
    try:
        os.write(w, data)
    except BrokenPipeError:
        pass
    os.close(w)
    out, err = p.communicate(timeout=30)
    return p.returncode, out, time.monotonic() - t0


def test_auth_check_good_password_execs_with_user_and_home(accounts):
    rc, out, _ = auth_check(accounts, USER.encode() + b"\0" + PW.encode() + b"\0")
    assert rc == 0
    assert out == ("USER=%s HOME=%s\n" % (USER, accounts.maildir(USER))).encode()


def test_auth_check_user_is_case_insensitive(accounts):
    rc, out, _ = auth_check(accounts, b"Demo@EXAMPLE.test\0" + PW.encode() + b"\x00123\x00")
    assert rc == 0 and out.startswith(b"USER=demo@example.test ")


@pytest.mark.parametrize("data", [USER.encode() + b"\0wrong\0", b"nobody@example.test\0" +
                                  PW.encode() + b"\0", USER.encode() + b"\0\0",
                                  b"other@example.test\0" + PW.encode() + b"\0"])
def test_auth_check_bad_credentials_exit_1_and_run_nothing(accounts, data):
    rc, out, _ = auth_check(accounts, data)
    assert rc == 1 and out == b""


def test_auth_check_unknown_user_costs_like_a_wrong_password(accounts):
    def t(data):
        best = 1e9
        for _ in range(3):
            rc, _, dt = auth_check(accounts, data)
            assert rc == 1
            best = min(best, dt)
        return best
    wrong = t(USER.encode() + b"\0wrong\0")
    unknown = t(b"nobody@example.test\0wrong\0")
    # both run one crypt_r of the same kind; allow for a noisy machine
    assert unknown > wrong * 0.5 and unknown < wrong * 2 + 0.05, (wrong, unknown)


@pytest.mark.parametrize("data", [b"x" * 513, USER.encode() + b"\0" + b"p" * 600 + b"\0",
                                  b"no-nul-at-all", USER.encode() + b"\0pw-without-nul", b"",
                                  b"\0pw\0"])
def test_auth_check_misuse_exit_2(accounts, data):
    rc, out, _ = auth_check(accounts, data)
    assert rc == 2 and out == b""


def test_auth_check_512_bytes_is_still_accepted(accounts):
    data = USER.encode() + b"\0" + PW.encode() + b"\0"
    data += b"t" * (511 - len(data)) + b"\0"
    assert len(data) == 512
    rc, _, _ = auth_check(accounts, data)
    assert rc == 0


def test_auth_check_usage_and_missing_fd3(accounts):
    rc, _, _ = auth_check(accounts, USER.encode() + b"\0" + PW.encode() + b"\0", argv=[])
    assert rc == 2
    r = subprocess.run([prog("auth-check"), "true"], env=accounts.env, capture_output=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 2


def test_auth_check_unreadable_database_is_temporary(accounts):
    os.rename(accounts.path("control", "users.cdb"), accounts.path("control", "users.cdb.x"))
    os.mkdir(accounts.path("control", "users.cdb"))
    rc, _, _ = auth_check(accounts, USER.encode() + b"\0" + PW.encode() + b"\0")
    assert rc == 111


# ---- SMTP submission through the real chain ----

class Submission:
    """submission (587-style: tls-serve -S, SMTPAUTH) and smtps (465-style: implicit TLS,
    SMTPAUTH) servers of one instance."""

    def __init__(self, inst, env=None):
        e = {"SMTPAUTH": "1"}
        e.update(env or {})
        self.inst = inst
        self.cafile = inst.path("tls", "cert.pem")
        self.sub = Server(inst, [prog("tls-serve"), "-S", prog("smtp-receive")], env=e)
        try:
            self.smtps = Server(inst, [prog("tls-serve"), prog("smtp-receive")], env=e)
        except BaseException:
            self.sub.stop()
            raise

    def stop(self):
        self.sub.stop()
        self.smtps.stop()


@pytest.fixture
def sub(accounts):
    s = Submission(accounts)
    try:
        yield s
    finally:
        s.stop()


class SMTP_SSL_Named(smtplib.SMTP_SSL):
    """SMTP_SSL that checks the certificate against HOST while connecting to 127.0.0.1."""

    def _get_socket(self, host, port, timeout):
        sock = socket.create_connection((host, port), timeout)
        return self.context.wrap_socket(sock, server_hostname=HOST)


def queued(inst):
    n = 0
    for d, _, files in os.walk(inst.path("queue")):
        n += len(files)
    return n


MSG = "From: demo@example.test\r\nTo: x@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


def test_smtplib_smtps_verified_login_and_relay(sub):
    before = queued(sub.inst)
    with SMTP_SSL_Named("127.0.0.1", sub.smtps.port, context=client_context(sub.cafile),
                        timeout=30) as s:
        code, caps = s.ehlo("client.example")
        assert code == 250 and b"AUTH" in caps and b"STARTTLS" not in caps
        s.login(USER, PW)
        refused = s.sendmail(USER, ["x@example.org"], MSG)
        assert refused == {}
    assert queued(sub.inst) > before


def test_smtplib_starttls_verified_login_and_relay(sub):
    s = smtplib.SMTP("127.0.0.1", sub.sub.port, timeout=30)
    try:
        s._host = HOST  # verify the certificate against the instance's name
        code, caps = s.ehlo("client.example")
        assert b"STARTTLS" in caps and b"AUTH" not in caps  # no AUTH before TLS
        s.starttls(context=client_context(sub.cafile))
        code, caps = s.ehlo("client.example")
        assert b"STARTTLS" not in caps and b"AUTH PLAIN LOGIN" in caps.replace(b"=", b" ")
        s.login(USER, PW)
        assert s.sendmail(USER, ["x@example.org"], MSG) == {}
    finally:
        s.close()


@pytest.mark.parametrize("mode,auth", [("--tls", "PLAIN"), ("--tls", "LOGIN"),
                                       ("--tlsc", "PLAIN")])
def test_swaks(sub, mode, auth):
    port = sub.sub.port if mode == "--tls" else sub.smtps.port
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % port, mode, "--auth", auth,
                        "--auth-user", USER, "--auth-password", PW, "--from", USER,
                        "--to", "x@example.org", "--timeout", "20"],
                       capture_output=True, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert b"235 2.7.0" in out and b"250 2.0.0" in out


@pytest.mark.parametrize("scheme", ["smtp", "smtps"])
def test_curl_ssl_reqd(sub, tmp_path, scheme):
    port = sub.sub.port if scheme == "smtp" else sub.smtps.port
    msg = tmp_path / "msg"
    msg.write_text(MSG)
    r = subprocess.run(["curl", "-sS", "--ssl-reqd", "--cacert", sub.cafile, "--resolve",
                        "%s:%d:127.0.0.1" % (HOST, port), "%s://%s:%d" % (scheme, HOST, port),
                        "--mail-from", USER, "--mail-rcpt", "x@example.org", "--upload-file",
                        str(msg), "--user", "%s:%s" % (USER, PW), "--max-time", "30"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_curl_wrong_password_fails(sub, tmp_path):
    msg = tmp_path / "msg"
    msg.write_text(MSG)
    port = sub.smtps.port
    r = subprocess.run(["curl", "-sS", "--ssl-reqd", "--cacert", sub.cafile, "--resolve",
                        "%s:%d:127.0.0.1" % (HOST, port), "smtps://%s:%d" % (HOST, port),
                        "--mail-from", USER, "--mail-rcpt", "x@example.org", "--upload-file",
                        str(msg), "--user", "%s:wrong" % USER, "--max-time", "30"],
                       capture_output=True, timeout=60)
    assert r.returncode != 0


def test_openssl_s_client_starttls_smtp(sub):
    rc, out = s_client(sub.sub.port, "-starttls", "smtp", "-crlf", "-ign_eof", "-CAfile",
                       sub.cafile, "-verify_return_error", "-verify_hostname", HOST,
                       input=b"EHLO client.example\nQUIT\n", servername=HOST)
    assert b"Verify return code: 0 (ok)" in out, out
    assert b"Protocol  : TLSv1.2" in out or b"TLSv1.2" in out
    assert b"250-mx.example.test greets client.example" in out
    assert b"250-AUTH PLAIN LOGIN" in out and b"221 2.0.0" in out


# ---- raw sessions ----

def read_reply(sock):
    lines = []
    while True:
        ln = readline(sock)
        assert ln, "connection closed; got %r" % lines
        lines.append(ln)
        if ln[3:4] == b" ":
            return int(ln[:3]), b"".join(lines)


def cmd(sock, line):
    sock.sendall(line.encode() + b"\r\n" if isinstance(line, str) else line + b"\r\n")
    return read_reply(sock)


def smtps_session(sub):
    s = client_context(sub.cafile).wrap_socket(sub.smtps.connect(30), server_hostname=HOST)
    assert read_reply(s)[0] == 220
    assert cmd(s, "EHLO client.example")[0] == 250
    return s


def starttls_session(sub, pipelined=b""):
    raw = sub.sub.connect(30)
    assert read_reply(raw)[0] == 220
    code, ehlo = cmd(raw, "EHLO client.example")
    assert code == 250 and b"STARTTLS" in ehlo
    raw.sendall(b"STARTTLS\r\n" + pipelined)
    code, text = read_reply(raw)
    assert code == 220 and b"2.0.0" in text
    return client_context(sub.cafile).wrap_socket(raw, server_hostname=HOST)


def test_starttls_injection_is_never_answered(sub):
    s = starttls_session(sub, pipelined=b"EHLO injected\r\n")
    s.settimeout(1.0)
    with pytest.raises(socket.timeout):
        s.recv(100)  # the pipelined EHLO got no answer inside TLS
    s.settimeout(30)
    code, _ = cmd(s, "MAIL FROM:<%s>" % USER)  # the session forgot the old EHLO
    assert code == 503
    code, ehlo = cmd(s, "EHLO again")
    assert code == 250 and b"STARTTLS" not in ehlo and b"AUTH" in ehlo
    assert cmd(s, "STARTTLS")[0] == 554
    s.close()


def test_submission_requires_tls_then_auth(sub):
    raw = sub.sub.connect(30)
    read_reply(raw)
    code, ehlo = cmd(raw, "EHLO client.example")
    assert b"AUTH" not in ehlo
    assert cmd(raw, "AUTH PLAIN " + b64("\0%s\0%s" % (USER, PW))) == (
        530, b"530 5.7.0 must issue a STARTTLS command first\r\n")
    code, text = cmd(raw, "MAIL FROM:<%s>" % USER)
    assert code == 530 and b"5.7.0" in text
    assert cmd(raw, "STARTTLS foo")[0] == 501
    raw.close()
    s = starttls_session(sub)
    assert cmd(s, "EHLO client.example")[0] == 250
    code, text = cmd(s, "MAIL FROM:<%s>" % USER)
    assert code == 530 and b"5.7.0" in text  # TLS alone is not enough: AUTH first
    s.close()


def test_auth_replies(sub):
    s = smtps_session(sub)
    assert cmd(s, "AUTH PLAIN !!notbase64")[0] == 501
    code, text = cmd(s, "AUTH PLAIN")
    assert code == 334
    code, text = cmd(s, "*")
    assert code == 501 and b"5.7.0" in text
    code, text = cmd(s, "AUTH PLAIN")
    code, text = cmd(s, "A" * 3000)
    assert code == 500 and b"5.5.6" in text
    assert cmd(s, "AUTH CRAM-MD5")[0] == 504
    code, text = cmd(s, "AUTH PLAIN " + b64("other@example.test\0%s\0%s" % (USER, PW)))
    assert code == 535 and b"5.7.8" in text  # authzid of someone else
    code, text = cmd(s, "AUTH LOGIN")
    assert (code, text) == (334, b"334 VXNlcm5hbWU6\r\n")
    code, text = cmd(s, b64(USER))
    assert (code, text) == (334, b"334 UGFzc3dvcmQ6\r\n")
    code, text = cmd(s, b64(PW))
    assert code == 235 and b"2.7.0" in text
    assert cmd(s, "AUTH PLAIN " + b64("\0%s\0%s" % (USER, PW)))[0] == 503  # twice
    assert cmd(s, "QUIT")[0] == 221
    s.close()


def test_auth_inside_transaction_is_503(accounts):
    # a plain MX-style chain (no SMTPAUTH): MAIL is allowed without AUTH
    with Server(accounts, [prog("tls-serve"), prog("smtp-receive")]) as srv:
        s = client_context(accounts.path("tls", "cert.pem")).wrap_socket(
            srv.connect(30), server_hostname=HOST)
        read_reply(s)
        cmd(s, "EHLO client.example")
        assert cmd(s, "MAIL FROM:<a@example.org>")[0] == 250
        assert cmd(s, "AUTH PLAIN " + b64("\0%s\0%s" % (USER, PW)))[0] == 503
        # and without AUTH, relaying is refused
        code, text = cmd(s, "RCPT TO:<x@example.org>")
        assert code == 554 and b"5.7.1" in text
        s.close()


def test_auth_temporary_failure_is_454(accounts, tmp_path):
    broken = tmp_path / "broken-auth-check"
    broken.write_text("#!/bin/sh\nexit 111\n")
    broken.chmod(0o755)
    s = Submission(accounts, env={"AUTH_CHECK": str(broken)})
    try:
        c = smtps_session(s)
        code, text = cmd(c, "AUTH PLAIN " + b64("\0%s\0%s" % (USER, PW)))
        assert code == 454 and b"4.7.0" in text
        c.close()
    finally:
        s.stop()


def test_relay_and_sender_policy_after_auth(sub):
    s = smtps_session(sub)
    assert cmd(s, "MAIL FROM:<%s>" % USER)[0] == 530  # no AUTH yet
    assert cmd(s, "AUTH PLAIN " + b64("\0%s\0%s" % (USER, PW)))[0] == 235
    code, text = cmd(s, "MAIL FROM:<other@example.test>")
    assert code == 553 and b"5.7.1" in text  # somebody else's address
    code, text = cmd(s, "MAIL FROM:<someone@example.org>")
    assert code == 553
    assert cmd(s, "MAIL FROM:<alias@example.test>")[0] == 250  # an alias of the user
    assert cmd(s, "RCPT TO:<x@example.org>")[0] == 250  # relaying
    assert cmd(s, "DATA")[0] == 354
    s.sendall(MSG.encode() + b".\r\n")
    code, text = read_reply(s)
    assert code == 250
    s.close()


def test_three_failures_close_the_connection(sub):
    s = smtps_session(sub)
    for i in range(2):
        assert cmd(s, "AUTH PLAIN " + b64("\0%s\0wrong%d" % (USER, i)))[0] == 535
    code, text = cmd(s, "AUTH PLAIN " + b64("\0%s\0wrong" % USER))
    assert code in (535, 421)
    s.settimeout(10)
    rest = b""
    try:
        while True:
            c = s.recv(1000)
            if not c:
                break
            rest += c
    except (ssl.SSLError, ConnectionResetError):
        pass
    if code == 535:
        assert rest.startswith(b"421")
    s.close()


def test_brute_force_from_one_address_is_blocked(sub):
    failures = 0
    while failures < 11:  # more than 10 in a minute; 2 per connection (the 3rd closes it)
        s = smtps_session(sub)
        for _ in range(min(2, 11 - failures)):
            code, _ = cmd(s, "AUTH PLAIN " + b64("\0%s\0guess%d" % (USER, failures)))
            assert code == 535
            failures += 1
        s.close()
    # now even the right password is refused, for a while
    s = smtps_session(sub)
    code, text = cmd(s, "AUTH PLAIN " + b64("\0%s\0%s" % (USER, PW)))
    assert code == 454 and b"4.7.0" in text
    s.close()
    assert os.path.getsize(sub.inst.path("authfail", "table")) <= 4096 * 32


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as two users")
def test_key_unreadable_from_smtp_receive(accounts):
    """The service layout: tls-serve (root, reads the key) forks its engine, then runs
    smtp-receive as another user, who cannot read tls/."""
    # let the other user reach the instance (pytest's temporary directories are 0700)
    saved = []
    d = accounts.root
    while d != "/":
        saved.append((d, os.stat(d).st_mode & 0o7777))
        d = os.path.dirname(d)
    try:
        for d, mode in saved:
            os.chmod(d, mode | 0o011)
        key_check_as_other_user(accounts)
    finally:
        for d, mode in saved:
            os.chmod(d, mode)


def key_check_as_other_user(accounts):
    with Server(accounts, [prog("tls-serve"), "-S", "-u", "65534", "-g", "65534",
                           prog("smtp-receive")], env={"SMTPAUTH": "1"}) as srv:
        raw = srv.connect(30)
        assert read_reply(raw)[0] == 220

        def receivers():
            out = []
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open("/proc/%s/cmdline" % pid, "rb") as f:
                        argv0 = f.read().split(b"\0")[0]
                    with open("/proc/%s/status" % pid) as f:
                        st = f.read()
                except OSError:
                    continue
                if argv0 == prog("smtp-receive").encode():
                    uid = [l for l in st.splitlines() if l.startswith("Uid:")][0].split()[1]
                    out.append((int(pid), int(uid)))
            return out
        found = wait_for(receivers, timeout=10, what="the smtp-receive process")
        assert all(uid == 65534 for _, uid in found)
        r = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                            "cat", accounts.path("tls", "key.pem")], capture_output=True,
                           timeout=10)
        assert r.returncode != 0 and b"BEGIN" not in r.stdout
        # and TLS still works, with the engine holding the key
        code, _ = cmd(raw, "EHLO client.example")
        raw.sendall(b"STARTTLS\r\n")
        assert read_reply(raw)[0] == 220
        s = client_context(accounts.path("tls", "cert.pem")).wrap_socket(raw, server_hostname=HOST)
        assert cmd(s, "EHLO again")[0] == 250
        s.close()


# ---- the service templates ----

def start_template(inst, name, tmp_path, env_files=None):
    """Copies services/NAME as make-run does (tokens filled in, a free loopback port, plus any
    env/ files given) and starts its run script; returns (Popen, port)."""
    import shutil
    from conftest import ROOT, BIN, free_port
    from tls_helpers import listening
    d = tmp_path / name
    shutil.copytree(os.path.join(ROOT, "services", name), d)
    for f in ("run", "log/run"):
        p = d / f
        p.write_text(p.read_text().replace("@MAILROOT@", inst.root).replace("@BINDIR@", BIN))
        p.chmod(0o755)
    port = free_port()
    (d / "env" / "PORT").write_text("%d\n" % port)
    (d / "env" / "IP").write_text("127.0.0.1\n")
    # the instance is in a 0700 tmp_path: no service user could reach it, so by default
    # nothing is dropped (empty env/SERVICE_USER and env/TLS_USER, everything as root)
    files = {"SERVICE_USER": "", "TLS_USER": ""}
    files.update(env_files or {})
    for k, v in files.items():
        (d / "env" / k).write_text(v + "\n" if v else "")
    log = open(tmp_path / (name + ".log"), "wb")
    p = subprocess.Popen(["sh", "./run"], cwd=str(d), stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True, env=inst.env)
    log.close()
    try:
        wait_for(lambda: p.poll() is not None or listening(port), timeout=10,
                 what=name + " to listen")
        assert p.poll() is None, (tmp_path / (name + ".log")).read_text()
    except BaseException:
        stop_template(p)
        raise
    return p, port


def stop_template(p):
    import signal
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)


def test_submission_template_starttls_auth(accounts, tmp_path):
    eng = start_engine_template(accounts, tmp_path)  # STARTTLS goes through it
    p, port = start_template(accounts, "submission", tmp_path)
    try:
        s = smtplib.SMTP("127.0.0.1", port, timeout=30)
        try:
            s._host = HOST
            code, caps = s.ehlo("client.example")
            assert b"STARTTLS" in caps
            code, text = s.mail(USER)
            assert code == 530  # TLS first
            s.rset()
            s.starttls(context=client_context(accounts.path("tls", "cert.pem")))
            s.ehlo("client.example")
            s.login(USER, PW)
            assert s.sendmail(USER, ["x@example.org"], MSG) == {}
        finally:
            s.close()
    finally:
        stop_template(p)
        stop_template(eng)


def start_engine_template(inst, tmp_path, env_files=None):
    """Copies services/tls-engine (as start_template) and starts it; returns its Popen once it
    says it listens (notification fd 3). smtps hands every connection to it."""
    import shutil
    from conftest import ROOT
    d = tmp_path / "tls-engine"
    shutil.copytree(os.path.join(ROOT, "services", "tls-engine"), d)
    for k, v in (env_files or {}).items():
        (d / "env" / k).write_text(v + "\n" if v else "")
    r, w = os.pipe()
    log = open(tmp_path / "tls-engine.log", "wb")
    p = subprocess.Popen(["sh", "./run"], cwd=str(d), stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True, env=inst.env,
                         pass_fds=(3, w), preexec_fn=lambda: os.dup2(w, 3))
    log.close()
    os.close(w)
    try:
        import select
        ready, _, _ = select.select([r], [], [], 20)
        assert ready and os.read(r, 1) == b"\n", (tmp_path / "tls-engine.log").read_text()
    except BaseException:
        stop_template(p)
        raise
    finally:
        os.close(r)
    return p


def test_smtps_template_implicit_tls_auth(accounts, tmp_path):
    eng = start_engine_template(accounts, tmp_path)
    p, port = start_template(accounts, "smtps", tmp_path)
    try:
        with SMTP_SSL_Named("127.0.0.1", port, timeout=30,
                            context=client_context(accounts.path("tls", "cert.pem"))) as s:
            s.ehlo("client.example")
            code, text = s.mail(USER)
            assert code == 530  # AUTH first
            s.rset()
            s.login(USER, PW)
            assert s.sendmail(USER, ["x@example.org"], MSG) == {}
    finally:
        stop_template(p)
        stop_template(eng)


def _tls_engines(ppid):
    """(pid, effective uid) of every engine forked by the tls-engine service ppid."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                stat = f.read()
            with open("/proc/%s/status" % pid) as f:
                status = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if comm == "tls-engine" and int(fields[1]) == ppid:
            uid = next(l for l in status.splitlines() if l.startswith("Uid:")).split()[2]
            out.append((int(pid), int(uid)))
    return out


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another uid needs root")
@pytest.mark.parametrize("tlsuser", [None, "nobody"])
def test_smtps_template_tls_engine_drops_to_tlsuser(accounts, tmp_path, tlsuser):
    """Run as root, smtps's TLS engine (forked by the tls-engine service) runs as the engine
    service's env/TLS_USER (pb-tls by default, or the user it names): the process parsing the
    peer's TLS records is never root, and not smtps's program either."""
    import pwd
    eng = start_engine_template(accounts, tmp_path, {"TLS_USER": tlsuser} if tlsuser else None)
    p, port = start_template(accounts, "smtps", tmp_path)
    try:
        with SMTP_SSL_Named("127.0.0.1", port, timeout=30,
                            context=client_context(accounts.path("tls", "cert.pem"))) as s:
            s.ehlo("client.example")
            engines = wait_for(lambda: _tls_engines(eng.pid), timeout=10, what="the engine")
            want = pwd.getpwnam(tlsuser or "pb-tls").pw_uid
            assert {u for _, u in engines} == {want}, engines
    finally:
        stop_template(p)
        stop_template(eng)
