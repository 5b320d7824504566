"""Real clients against smtp-receive under tcpserver on loopback, with queue-run delivering:
Python's smtplib, swaks and curl each send a message that lands in the right Maildir; a
pipelined session and BDAT chunks work; sendmail injects directly and through the local
injection socket (s6-ipcserver running queue-inject-ipc)."""
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import time

import pytest

from conftest import base_env, free_port, prog, stop_procs, wait_for


class Server:
    def __init__(self, inst, extra_env=None):
        self.inst = inst
        self.port = free_port()
        env = dict(inst.env)
        env.update(extra_env or {})
        self.procs = []
        with open(inst.path("smtpd.log"), "ab") as log:
            self.procs.append(subprocess.Popen(
                ["tcpserver", "-R", "-H", "-l", "mx.example.test", "127.0.0.1", str(self.port),
                 prog("smtp-receive")], env=env, stdout=subprocess.DEVNULL, stderr=log))
        with open(inst.path("queue-run.log"), "ab") as log:
            self.procs.append(subprocess.Popen([prog("queue-run")], env=env, stdout=log,
                                               stderr=subprocess.STDOUT))
        wait_for(self.up, timeout=10, what="tcpserver on %d" % self.port)

    def up(self):
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self):
        stop_procs(self.procs)


@pytest.fixture
def srv(instance):
    instance.add_user("user@example.test")
    instance.add_user("other@example.test")
    s = Server(instance)
    try:
        yield s
    finally:
        s.stop()


def delivered(inst, addr, n=1, timeout=30):
    return wait_for(lambda: len(inst.messages(addr)) >= n and inst.messages(addr), timeout=timeout,
                    what="%d message(s) in the Maildir of %s" % (n, addr))


def test_smtplib(srv):
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as s:
        code, caps = s.ehlo("client.example")
        assert code == 250 and s.has_extn("pipelining") and s.has_extn("chunking")
        s.sendmail("a@b.example", ["user@example.test"],
                   b"From: a@b.example\r\nSubject: smtplib\r\n\r\nvia smtplib\r\n.leading dot\r\n")
    m = delivered(srv.inst, "user@example.test")[0]
    assert b"via smtplib\n.leading dot\n" in m
    assert b"Received: from client.example" in m
    assert srv.inst.messages("other@example.test") == []


def test_smtplib_refusals(srv):
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as s:
        s.ehlo("client.example")
        with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
            s.sendmail("a@b.example", ["nobody@example.test"], b"Subject: x\r\n\r\nx\r\n")
        assert e.value.recipients["nobody@example.test"][0] == 550
        with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
            s.sendmail("a@b.example", ["x@elsewhere.example"], b"Subject: x\r\n\r\nx\r\n")
        assert e.value.recipients["x@elsewhere.example"][0] == 554


@pytest.mark.skipif(not shutil.which("swaks"), reason="swaks not installed")
def test_swaks(srv):
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % srv.port, "--from", "a@b.example",
                        "--to", "other@example.test", "--header", "Subject: via swaks",
                        "--body", "hello from swaks"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    m = delivered(srv.inst, "other@example.test")[0]
    assert b"Subject: via swaks" in m and b"hello from swaks" in m


@pytest.mark.skipif(not shutil.which("swaks"), reason="swaks not installed")
def test_swaks_pipelining_and_bdat(srv):
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % srv.port, "--from", "a@b.example",
                        "--to", "user@example.test", "--pipeline", "--body", "pipelined"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    delivered(srv.inst, "user@example.test")


def test_curl(srv, tmp_path):
    f = tmp_path / "mail.txt"
    f.write_bytes(b"From: a@b.example\r\nTo: user@example.test\r\nSubject: via curl\r\n\r\n"
                  b"hello from curl\r\n")
    r = subprocess.run(["curl", "-sS", "smtp://127.0.0.1:%d" % srv.port, "--mail-from",
                        "a@b.example", "--mail-rcpt", "user@example.test", "--upload-file",
                        str(f)], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    m = delivered(srv.inst, "user@example.test")[0]
    assert b"hello from curl" in m and b"\r\n" not in m


def _read_replies(sock, n, timeout=30):
    """Reads until n complete replies (their final "CODE " lines) have arrived."""
    buf = b""
    sock.settimeout(timeout)
    while len(_codes(buf)) < n or not buf.endswith(b"\r\n"):
        c = sock.recv(65536)
        assert c, buf
        buf += c
    return buf


def _codes(buf):
    return [int(l[:3]) for l in buf.split(b"\r\n") if len(l) >= 4 and l[3:4] == b" "]


def test_pipelined_session_many_messages(srv):
    n = 20
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        _read_replies(s, 1)
        s.sendall(b"EHLO c\r\n")
        _read_replies(s, 1)
        # RFC 2920: MAIL, RCPT, DATA in one write; the body after 354
        for i in range(n):
            s.sendall(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<user@example.test>\r\nDATA\r\n")
            buf = b""
            while not buf.endswith(b"\r\n") or len(_codes(buf)) < 3:
                c = s.recv(4096)
                assert c, buf
                buf += c
            assert _codes(buf) == [250, 250, 354], buf
            s.sendall(b"Subject: %d\r\n\r\nbody %d\r\n.\r\n" % (i, i))
            buf = b""
            while not buf.endswith(b"\r\n"):
                c = s.recv(4096)
                assert c, buf
                buf += c
            assert _codes(buf) == [250], buf
        s.sendall(b"QUIT\r\n")
    delivered(srv.inst, "user@example.test", n, timeout=60)


def test_bdat_over_tcp(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        _read_replies(s, 1)
        s.sendall(b"EHLO c\r\n")
        _read_replies(s, 1)
        body = b"Subject: bdat\r\n\r\nchunked\r\nbody\r\n"
        s.sendall(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<user@example.test>\r\n"
                  b"BDAT 10\r\n" + body[:10] + b"BDAT %d LAST\r\n" % (len(body) - 10) + body[10:])
        buf = b""
        while len(_codes(buf)) < 4:
            c = s.recv(4096)
            assert c
            buf += c
        assert _codes(buf) == [250, 250, 250, 250]
        s.sendall(b"QUIT\r\n")
    m = delivered(srv.inst, "user@example.test")[0]
    assert m.endswith(b"Subject: bdat\n\nchunked\nbody\n")


# ---- sendmail ----

def test_sendmail_direct(srv):
    r = srv.inst.run("sendmail", "-f", "script@example.test", "user@example.test",
                     input=b"Subject: from cron\n\nline one\n.\nnot sent\n")
    assert r.returncode == 0, r.stderr
    m = delivered(srv.inst, "user@example.test")[0]
    assert b"line one\n" in m and b"not sent" not in m
    assert b"Message-ID: <" in m and b"From: script@example.test" in m


def test_sendmail_bare_user_is_at_the_first_local_domain(srv):
    r = srv.inst.run("sendmail", "user", input=b"Subject: cron\n\nbare\n")
    assert r.returncode == 0, r.stderr
    assert b"bare" in delivered(srv.inst, "user@example.test")[0]


def test_sendmail_t_i_and_bcc(srv):
    r = srv.inst.run("sendmail", "-t", "-i", "-F", "Cron Daemon",
                     input=b"To: User <user@example.test>\nBcc: other@example.test\n"
                           b"Subject: t\n\n.\nkept\n")
    assert r.returncode == 0, r.stderr
    a = delivered(srv.inst, "user@example.test")[0]
    b = delivered(srv.inst, "other@example.test")[0]
    for m in (a, b):
        assert b"\n.\nkept\n" in m and b"Bcc:" not in m and b"\"Cron Daemon\"" in m


def test_sendmail_long_lines_and_crlf(srv):
    """A 300 KB line (longer than sendmail's 64 KB read piece) passes whole; CRLF becomes LF;
    a dot line inside the long line's continuation does not end the message."""
    long = b"x" * 300000
    r = srv.inst.run("sendmail", "user@example.test",
                     input=b"Subject: long\r\n\r\n" + long + b"\r\n.not the end\r\n" +
                           b"y" * 65535 + b".\n" + b"last\r\n.\r\nnot sent\r\n")
    assert r.returncode == 0, r.stderr
    m = delivered(srv.inst, "user@example.test")[0]
    assert b"\n\n" + long + b"\n.not the end\n" + b"y" * 65535 + b".\nlast\n" in m
    assert b"\r" not in m and b"not sent" not in m


def test_sendmail_errors(srv):
    r = srv.inst.run("sendmail", input=b"Subject: x\n\nx\n")
    assert r.returncode == 100 and b"no recipients" in r.stderr
    r = srv.inst.run("sendmail", "<bad", input=b"Subject: x\n\nx\n")
    assert r.returncode == 100
    r = srv.inst.run("sendmail", "-Z")
    assert r.returncode == 100


def test_sendmail_bp_lists_the_queue(srv):
    r = srv.inst.run("sendmail", "-bp")
    q = srv.inst.run("queue-list")
    assert r.returncode == q.returncode == 0
    assert r.stdout == q.stdout


def test_sendmail_bs(srv):
    r = srv.inst.run("sendmail", "-bs", input=b"HELO local\r\nMAIL FROM:<me@example.test>\r\n"
                     b"RCPT TO:<x@elsewhere.example>\r\nQUIT\r\n")
    codes = _codes(r.stdout)
    assert codes == [220, 250, 250, 250, 221]  # a local user may relay


def test_sendmail_through_the_injection_socket(srv, tmp_path):
    sock = srv.inst.path("queue", "inject.sock")
    env = dict(srv.inst.env)
    ipc = subprocess.Popen(["s6-ipcserver", "-a", "0777", sock, prog("queue-inject-ipc")],
                           env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(sock), timeout=10, what="the injection socket")
        r = srv.inst.run("sendmail", "user@example.test", input=b"Subject: ipc\n\nover the socket\n",
                         env={"QUEUE_INJECT": "queue-inject-ipc -c"})
        assert r.returncode == 0, r.stderr
        m = delivered(srv.inst, "user@example.test")[0]
        assert b"over the socket" in m
    finally:
        ipc.terminate()
        ipc.wait(timeout=10)


def queue_files(inst):
    found = set()
    for d, _, files in os.walk(inst.path("queue")):
        for f in files:
            found.add(os.path.join(d, f))
    return found


@pytest.mark.parametrize("data", [b"5:hello,0:,", b"5:hello,0:,99:Fa@b\0", b"x", b"",
                                  b"99999999999:", b"5:hello!"])
def test_injection_socket_protocol_errors_commit_nothing(instance, data):
    """queue-inject-ipc's server side: a client that breaks off before the envelope, or breaks
    the framing, gets nothing queued."""
    before = queue_files(instance)
    r = instance.run("queue-inject-ipc", input=data)
    assert r.returncode == 100
    assert queue_files(instance) == before


def test_injection_socket_protocol_ok(instance):
    instance.add_user("user@example.test")
    before = queue_files(instance)
    env = b"Fa@b.example\0Tuser@example.test\0\0"
    r = instance.run("queue-inject-ipc", input=b"9:Subject: ,3:x\n\n,0:,%d:%s," % (len(env), env))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"0 ") and len(r.stdout.strip()) > 2
    assert len(queue_files(instance) - before) >= 1


SMUGGLE = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r", b"\r.\n"]


def test_smuggling_over_tcp_delivers_nothing(srv):
    """Each end-of-data smuggling form, followed by a hidden second transaction to
    other@example.test, over a real connection with queue-run delivering. A marker message sent
    afterwards is delivered (so the queue was drained) and nothing else ever arrives."""
    for eod in SMUGGLE:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
            _read_replies(s, 1)
            s.sendall(b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<user@example.test>\r\n"
                      b"DATA\r\n")
            assert _codes(_read_replies(s, 4))[1:] == [250, 250, 354]
            s.sendall(b"Subject: first\r\n\r\nfirst" + eod +
                      b"MAIL FROM:<evil@b.example>\r\nRCPT TO:<other@example.test>\r\nDATA\r\n"
                      b"Subject: smuggled\r\n\r\nsmuggled\r\n.\r\n")
            assert _codes(_read_replies(s, 1)) == [550]
            s.sendall(b"QUIT\r\n")
            assert _codes(_read_replies(s, 1)) == [221]
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as s:
        s.sendmail("a@b.example", ["user@example.test"], b"Subject: marker\r\n\r\nmarker\r\n")
    delivered(srv.inst, "user@example.test")
    # the queue is empty: nothing is waiting anywhere to be delivered later
    wait_for(lambda: srv.inst.run("queue-list").stdout.strip() == b"", timeout=30,
             what="an empty queue")
    got = srv.inst.messages("user@example.test")
    assert len(got) == 1 and b"marker" in got[0]
    assert srv.inst.messages("other@example.test") == []


def queued_messages(inst, before):
    out = []
    for p in sorted(queue_files(inst) - before):
        if not os.path.isfile(p) or os.path.islink(p):
            continue   # queue/trigger is a fifo
        with open(p, "rb") as f:
            out.append(f.read())
    return out


def test_injection_socket_trace_line_names_the_uid(instance):
    """The server side writes a Received: line with the uid and gid s6-ipcserver found for the
    peer (IPCREMOTEEUID / IPCREMOTEEGID), before the client's first byte."""
    instance.add_user("user@example.test")
    before = queue_files(instance)
    env = b"Fa@b.example\0Tuser@example.test\0\0"
    r = instance.run("queue-inject-ipc",
                     input=b"23:Received: forged uid 0\n,11:Subject: x\n,0:,%d:%s," % (len(env), env),
                     env={"IPCREMOTEEUID": "4242", "IPCREMOTEEGID": "77"})
    assert r.returncode == 0 and r.stdout.startswith(b"0 "), r.stderr
    blob = b"".join(queued_messages(instance, before))
    m = re.search(rb"Received: by mx\.example\.test \(pillarbox local injection, uid (\d+), gid "
                  rb"(\d+)\);\n\t\w{3}, \d+ \w{3} \d{4} [\d:]{8} \+0000\nReceived: forged uid 0\n",
                  blob)
    assert m, blob
    assert m.group(1, 2) == (b"4242", b"77")


def test_injection_socket_trace_without_ipcserver(instance):
    instance.add_user("user@example.test")
    before = queue_files(instance)
    env = b"Fa@b.example\0Tuser@example.test\0\0"
    e = dict(instance.env)
    e.pop("IPCREMOTEEUID", None)
    e.pop("IPCREMOTEEGID", None)
    r = subprocess.run([prog("queue-inject-ipc")], input=b"2:x\n,0:,%d:%s," % (len(env), env),
                       env=e, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert b"(pillarbox local injection, uid unknown, gid unknown)" in \
        b"".join(queued_messages(instance, before))


def test_injection_through_the_socket_records_the_real_uid(instance):
    instance.add_user("user@example.test")
    sock = instance.path("queue", "inject.sock")
    ipc = subprocess.Popen(["s6-ipcserver", "-a", "0777", sock, prog("queue-inject-ipc")],
                           env=dict(instance.env), stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(sock), timeout=10, what="the injection socket")
        before = queue_files(instance)
        r = instance.run("sendmail", "user@example.test", input=b"Subject: ipc\n\nhi\n",
                         env={"QUEUE_INJECT": "queue-inject-ipc -c"})
        assert r.returncode == 0, r.stderr
        blob = b"".join(queued_messages(instance, before))
        assert b"(pillarbox local injection, uid %d, gid %d)" % (os.getuid(), os.getgid()) in blob
    finally:
        ipc.terminate()
        ipc.wait(timeout=10)
