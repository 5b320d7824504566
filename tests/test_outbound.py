"""Outbound end to end: pillarbox to pillarbox over STARTTLS, and (when queue-run is built)
delivery through the queue: MX delivery, bounces with the remote diagnostic, retries, null MX,
the queue lifetime, TLS policy deferrals."""
import email
import email.policy
import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import Instance, base_env, prog, wait_for, free_port
from outbound_helpers import Dnsmasq, SmtpServer


def make_instance(path, hostname, domain):
    r = subprocess.run([prog("mail-instance"), "create", str(path), "--hostname", hostname,
                        "--domain", domain], env=base_env(), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return Instance(path)


def listening(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Receiver:
    """A pillarbox instance receiving SMTP on a loopback port the way services/smtpd does,
    with STARTTLS through tls-serve -S: tcpserver -> tls-serve -S -> smtp-receive."""

    def __init__(self, inst):
        self.inst = inst
        self.port = free_port()
        env = dict(inst.env)
        self.p = subprocess.Popen(["tcpserver", "-R", "-H", "127.0.0.1", str(self.port),
                                   prog("tls-serve"), "-S", prog("smtp-receive")],
                                  env=env, cwd=inst.root, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
        try:
            wait_for(lambda: listening(self.port) or self.p.poll() is not None, timeout=10,
                     what="tcpserver to listen")
            assert self.p.poll() is None, self.p.stderr.read()
        except BaseException:
            self.stop()
            raise

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=10)
        self.log = self.p.stderr.read().decode(errors="replace") if self.p.stderr else ""
        if self.p.stderr:
            self.p.stderr.close()


def queued_with(inst, marker):
    d = inst.path("queue", "mess")
    out = []
    for n in os.listdir(d) if os.path.isdir(d) else []:
        with open(os.path.join(d, n), "rb") as f:
            b = f.read()
        if marker in b:
            out.append(b)
    return out


class QueueRun:
    """queue-run of an instance, in the foreground as under s6; stopped by the test."""

    def __init__(self, inst, env=None):
        e = dict(inst.env)
        if env:
            e.update(env)
        self.log_path = inst.path("queue-run.log")
        self.logf = open(self.log_path, "wb")
        self.p = subprocess.Popen([prog("queue-run")], env=e, cwd=inst.root, stdout=self.logf,
                                  stderr=subprocess.STDOUT)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=10)
        self.logf.close()


def test_pillarbox_to_pillarbox_over_starttls(tmp_path):
    a = make_instance(tmp_path / "a", "mx.a.test", "a.test")
    b = make_instance(tmp_path / "b", "mx.b.test", "b.test")
    b.add_user("bob@b.test")
    rcv = Receiver(b)
    try:
        a.control("routes", "b.test 127.0.0.1:%d" % rcv.port)
        a.control("tls-policy", "b.test encrypt")  # must not go in clear
        msg = b"From: alice@a.test\nTo: bob@b.test\nSubject: over TLS P2P-MARK\n\nhello bob\n.\n"
        r = a.run("smtp-send", "b.test", "alice@a.test", "bob@b.test", "nobody@b.test",
                  input=msg, env={"PILLARBOX_SMTP_TIMEOUT": "10"})
        assert r.returncode == 0, r.stderr
        lines = [l.split("\t") for l in r.stdout.decode().splitlines()]
        assert lines[0][0] == "D" and lines[0][3].startswith("250"), lines
        assert lines[1][0] == "P" and lines[1][3].startswith("550"), lines
        assert b"TLS" in r.stderr
        q = wait_for(lambda: queued_with(b, b"P2P-MARK"), timeout=10, what="message in B's queue")
        assert len(q) == 1
        assert b"ESMTPS" in q[0]  # B's Received: line says it came over TLS
        assert b"\nhello bob\n.\n" in q[0]  # dot-stuffing undone, LF line ends again
        qr = QueueRun(b)
        try:
            got = wait_for(lambda: b.messages("bob@b.test"), timeout=30,
                           what="delivery into bob's Maildir")
            assert b"P2P-MARK" in got[0] and b"hello bob" in got[0]
        finally:
            qr.stop()
    finally:
        rcv.stop()


# ---- through queue-run (the queue engineer's remote side) ----

@pytest.fixture
def mx(tmp_path):
    """A dnsmasq with MX records for the test domains, all pointing at 127.0.0.x."""
    d = Dnsmasq("--mx-host=remote.test,mx.remote.test,10",
                "--host-record=mx.remote.test,127.0.0.2",
                "--mx-host=nullmx.test,.,0",
                "--mx-host=backup.test,down.backup.test,10",
                "--mx-host=backup.test,mx.remote.test,20",
                "--host-record=down.backup.test,127.0.0.3",
                "--host-record=implicit.test,127.0.0.2")
    try:
        yield d
    finally:
        d.stop()


def start_qr(inst, dns, port, extra=None):
    env = dict(dns.env, PILLARBOX_SMTP_PORT=str(port), PILLARBOX_SMTP_TIMEOUT="5")
    if extra:
        env.update(extra)
    return QueueRun(inst, env)


def bounces(inst, to):
    return [email.message_from_bytes(m, policy=email.policy.default) for m in inst.messages(to)]


def report_fields(msg):
    """The per-recipient blocks of a multipart/report, as dicts (lower-cased names)."""
    assert msg.get_content_type() == "multipart/report"
    parts = list(msg.iter_parts())
    ds = [p for p in parts if p.get_content_type() == "message/delivery-status"]
    assert ds
    text = ds[0].get_payload()
    if isinstance(text, list):  # the email package may parse the blocks as messages
        blocks = [dict((k.lower(), str(v)) for k, v in m.items()) for m in text]
    else:
        blocks = []
        for block in str(text).strip().split("\n\n"):
            d = {}
            for line in block.splitlines():
                if ":" in line:
                    k, v = line.split(":", 1)
                    d[k.strip().lower()] = v.strip()
            blocks.append(d)
    return [b for b in blocks if "final-recipient" in b or "original-recipient" in b], parts


def test_queue_delivers_through_mx_and_bounces_5xx(instance, mx):
    port = free_port()
    srv = SmtpServer(host="127.0.0.2", port=port,
                     rcpt=lambda c: "550 5.1.1 no such user\r\n" if "ghost@" in c
                     else "250 2.1.5 ok\r\n")
    instance.add_user("alice@example.test")
    qr = start_qr(instance, mx, port)
    try:
        rc, err = instance.inject(b"From: alice@example.test\nSubject: MX-MARK\n\nhi\n",
                                  "alice@example.test", "bob@remote.test", "ghost@remote.test")
        assert rc == 0, err
        wait_for(lambda: any(s["data"] for s in srv.sessions), timeout=30, what="MX delivery")
        assert b"MX-MARK" in [s for s in srv.sessions if s["data"]][0]["data"][0]
        got = wait_for(lambda: bounces(instance, "alice@example.test"), timeout=30,
                       what="the bounce")
        blocks, parts = report_fields(got[0])
        assert len(blocks) == 1
        assert "ghost@remote.test" in blocks[0].get("final-recipient", "")
        assert "550 5.1.1" in blocks[0].get("diagnostic-code", "")
        assert blocks[0].get("diagnostic-code", "").lower().startswith("smtp;")
        assert "mx.remote.test" in blocks[0].get("remote-mta", "")
        assert any(p.get_content_type() == "text/rfc822-headers" for p in parts)
        assert "MX-MARK" in str(got[0])
    finally:
        qr.stop()
        srv.stop()


def test_queue_null_mx_bounces_at_once(instance, mx):
    port = free_port()
    instance.add_user("alice@example.test")
    qr = start_qr(instance, mx, port)
    try:
        rc, err = instance.inject(b"Subject: NULL-MARK\n\nx\n", "alice@example.test",
                                  "x@nullmx.test")
        assert rc == 0, err
        got = wait_for(lambda: bounces(instance, "alice@example.test"), timeout=30,
                       what="the null-MX bounce")
        blocks, _ = report_fields(got[0])
        assert "x@nullmx.test" in blocks[0].get("final-recipient", "")
        assert "null MX" in str(got[0])
    finally:
        qr.stop()


def test_queue_null_sender_never_bounces(instance, mx):
    """A failed message with the null sender is never returned to its (null) sender; at most
    a single report goes to the postmaster (a double bounce, as qmail does), and that report
    never loops."""
    port = free_port()
    instance.add_user("alice@example.test")
    instance.add_user("carol@example.test")
    qr = start_qr(instance, mx, port)
    try:
        rc, err = instance.inject(b"Subject: NOBOUNCE\n\nx\n", "", "x@nullmx.test")
        assert rc == 0, err
        wait_for(lambda: "x@nullmx.test" in qr.log(), timeout=30, what="the failure logged")
        wait_for(lambda: not os.listdir(instance.path("queue", "mess")), timeout=30,
                 what="the queue to empty")
        log = qr.log()
        bounces_made = [l for l in log.splitlines() if l.startswith("bounce ")]
        assert len(bounces_made) <= 1, log
        assert all("to=<postmaster@" in l for l in bounces_made), log
        # whoever the postmaster alias points at got the report, and nothing else was sent
        got = [email.message_from_bytes(m) for a in ("alice@example.test", "carol@example.test")
               for m in instance.messages(a)]
        assert len(got) == len(bounces_made)
        for m in got:
            assert m["To"] == "<postmaster@example.test>"
    finally:
        qr.stop()


def test_queue_encrypt_policy_defers_and_sends_nothing(instance, mx):
    port = free_port()
    srv = SmtpServer(host="127.0.0.2", port=port)
    instance.control("tls-policy", "remote.test encrypt")
    qr = start_qr(instance, mx, port)
    try:
        rc, err = instance.inject(b"Subject: ENC-MARK\n\nsecret\n", "alice@example.test",
                                  "bob@remote.test")
        assert rc == 0, err
        wait_for(lambda: srv.sessions, timeout=30, what="a connection")
        wait_for(lambda: "STARTTLS" in qr.log(), timeout=30, what="the deferral logged")
        assert not any(b"MAIL" in s["raw"] or b"secret" in s["raw"] for s in srv.sessions)
    finally:
        qr.stop()
        srv.stop()


def test_queue_4xx_retried_then_delivered(instance, mx):
    port = free_port()
    tries = []

    def rcpt(cmd):
        tries.append(cmd)
        return "451 4.7.1 greylisted\r\n" if len(tries) < 3 else "250 2.1.5 ok\r\n"
    srv = SmtpServer(host="127.0.0.2", port=port, rcpt=rcpt)
    instance.control("retry-base", "1")
    instance.control("retry-max", "2")
    qr = start_qr(instance, mx, port)
    try:
        rc, err = instance.inject(b"Subject: RETRY-MARK\n\nx\n", "alice@example.test",
                                  "bob@remote.test")
        assert rc == 0, err
        wait_for(lambda: any(s["data"] for s in srv.sessions), timeout=40,
                 what="delivery after two deferrals")
        assert len(tries) == 3
        assert len([s for s in srv.sessions if s["data"]]) == 1
        log = qr.log()
        assert log.count("defer") >= 2 and "greylisted" in log
        assert not instance.messages("alice@example.test")  # no bounce, no warning
    finally:
        qr.stop()
        srv.stop()


def test_queue_lifetime_reached_bounces_with_last_error(instance, mx):
    port = free_port()
    srv = SmtpServer(host="127.0.0.2", port=port, rcpt=lambda c: "452 4.2.2 mailbox full\r\n")
    instance.add_user("alice@example.test")
    instance.control("retry-base", "1")
    instance.control("retry-max", "1")
    instance.control("queue-lifetime", "3")
    qr = start_qr(instance, mx, port)
    try:
        rc, err = instance.inject(b"From: alice@example.test\nSubject: LIFE-MARK\n\nx\n",
                                  "alice@example.test", "bob@remote.test")
        assert rc == 0, err
        got = wait_for(lambda: bounces(instance, "alice@example.test"), timeout=40,
                       what="the expiry bounce")
        blocks, _ = report_fields(got[0])
        assert "bob@remote.test" in blocks[0].get("final-recipient", "")
        assert blocks[0].get("status", "")[1:] == ".4.7"  # delivery time expired (4.4.7/5.4.7)
        assert "expired" in blocks[0].get("diagnostic-code", "")
        assert "452 4.2.2 mailbox full" in str(got[0])
        assert len(srv.sessions) >= 2
        assert not any(s["data"] for s in srv.sessions)
    finally:
        qr.stop()
        srv.stop()


def test_queue_verify_policy_defers_on_untrusted_certificate(instance, mx, tmp_path):
    import ssl
    from outbound_helpers import make_ca
    (tmp_path / "ca").mkdir()
    certs = make_ca(tmp_path / "ca", "mx.remote.test")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs["self.pem"], certs["self.key"])
    port = free_port()
    srv = SmtpServer(host="127.0.0.2", port=port, starttls=ctx)
    instance.control("tls-policy", "remote.test verify")
    qr = start_qr(instance, mx, port, {"PILLARBOX_CA_FILE": certs["ca.pem"]})
    try:
        rc, err = instance.inject(b"Subject: VERIFY-MARK\n\nsecret\n", "alice@example.test",
                                  "bob@remote.test")
        assert rc == 0, err
        wait_for(lambda: "certificate" in qr.log() and " status=deferred " in qr.log(), timeout=30,
                 what="the deferral logged")
        assert "not trusted" in qr.log()
        assert not any(s["tls_commands"] for s in srv.sessions)
        assert not any(b"MAIL" in s["raw"] for s in srv.sessions)
    finally:
        qr.stop()
        srv.stop()


def test_queue_second_mx_and_implicit_mx(instance, mx):
    port = free_port()
    srv = SmtpServer(host="127.0.0.2", port=port)  # nothing listens on 127.0.0.3
    qr = start_qr(instance, mx, port)
    try:
        for dom in ("backup.test", "implicit.test"):
            rc, err = instance.inject(("Subject: TWO-MARK %s\n\nx\n" % dom).encode(),
                                      "alice@example.test", "bob@" + dom)
            assert rc == 0, err
        wait_for(lambda: len([s for s in srv.sessions if s["data"]]) == 2, timeout=30,
                 what="both messages delivered")
        rcpts = sorted(c for s in srv.sessions for c in s["commands"] if c.startswith("RCPT"))
        assert rcpts == ["RCPT TO:<bob@backup.test>", "RCPT TO:<bob@implicit.test>"]
        log = qr.log()
        assert "down.backup.test[127.0.0.3]" in log  # smtp-send's warning about the first MX
    finally:
        qr.stop()
        srv.stop()


def test_queue_many_domains_at_once(instance, tmp_path):
    """30 messages to 30 domains, routed to one server: every one delivered, queue-run alive.
    (Many domains in flight at once is the normal case for outbound mail.)"""
    srv = SmtpServer()
    instance.control("routes", "* 127.0.0.1:%d" % srv.port)
    qr = QueueRun(instance, {"PILLARBOX_SMTP_TIMEOUT": "5"})
    try:
        for i in range(30):
            rc, err = instance.inject(("Subject: MANY %d\n\nx\n" % i).encode(),
                                      "alice@example.test", "u%d@dom%d.test" % (i, i))
            assert rc == 0, err
        wait_for(lambda: len([s for s in srv.sessions if s["data"]]) == 30 or
                 qr.p.poll() is not None, timeout=60, what="30 deliveries")
        assert qr.p.poll() is None, "queue-run died (status %s)" % qr.p.returncode
        assert len([s for s in srv.sessions if s["data"]]) == 30
    finally:
        qr.stop()
        srv.stop()
