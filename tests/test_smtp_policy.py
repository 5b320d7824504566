"""smtp-receive's defences and submission policy (issue 10), each a session that pairs every
command with the reply it must get: NUL bytes, unauthorised pipelining, per-address connection
cap, junk commands, AUTH attempts counted before the check, AUTH on port 25, the From: of an
authenticated user, the Received: and log lines, and injection through the socket."""
import os
import socket
import subprocess
import threading
import time

import pytest

from conftest import prog, stop_procs, wait_for, free_port
from smtp_session import Live, data, expect, replies, script, send


@pytest.fixture
def inst(instance):
    instance.add_user("user@example.test")
    instance.add_user("other@example.test")
    return instance


def queue_files(inst):
    found = set()
    for d, _, files in os.walk(inst.path("queue")):
        for f in files:
            p = os.path.join(d, f)
            if os.path.isfile(p) and not os.path.islink(p):
                found.add(p)
    return found


@pytest.fixture
def sink(tmp_path):
    """A qmail-queue stand-in that keeps what it gets: (command, path of the kept message)."""
    p = tmp_path / "sink"
    out = tmp_path / "sunk"
    p.write_text("""#!/bin/sh
cat > %s.msg; cat <&1 > %s.env; echo SINK1 >&3
""" % (out, out))
    p.chmod(0o755)
    return str(p), str(out)


@pytest.fixture
def fake_auth(tmp_path):
    """auth-check stand-in: user@example.test / secret; slow enough for guesses to overlap."""
    p = tmp_path / "fake-auth"
    p.write_text("""#!/usr/bin/python3
import os, sys, time
d = b""
while True:
    c = os.read(3, 600)
    if not c:
        break
    d += c
f = d.split(b"\\0")
time.sleep(float(os.environ.get("FAKE_AUTH_DELAY", "0")))
with open(os.environ.get("FAKE_AUTH_LOG", "/dev/null"), "a") as l:
    l.write("check\\n")
sys.exit(0 if f[0].lower() == b"user@example.test" and f[1] == b"secret" else 1)
""")
    p.chmod(0o755)
    return str(p)


def b64(s):
    import base64
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


GOOD = "AUTH PLAIN " + b64("\0user@example.test\0secret")
BAD = "AUTH PLAIN " + b64("\0user@example.test\0wrong")


def auth_env(fake_auth, **kw):
    e = {"SMTPAUTH_PLAINTEXT": "1", "AUTH_CHECK": fake_auth, "TCPREMOTEIP": "127.0.0.1"}
    e.update(kw)
    return e


# ---- NUL bytes: refused like bare CR and LF, nothing queued ----

NUL_SMUGGLE = (b"Subject: first\r\n\r\nhello\r\n\0.\r\nMAIL FROM:<evil@b.example>\r\n"
               b"RCPT TO:<other@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n")


def test_nul_smuggling_payload_is_refused_and_queues_nothing(inst):
    before = queue_files(inst)
    r = script(inst, expect(None, 220), expect("EHLO c", 250),
               expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<user@example.test>", 250),
               expect("DATA", 354), data(NUL_SMUGGLE, 550, "5.6.0"),
               expect("QUIT", 221))
    assert queue_files(inst) == before
    assert b"result=550-nul" in r.stderr


def test_nul_smuggling_reaches_no_downstream_sink(inst, sink):
    """Relayed mail (the downstream hop) with a NUL: the injector is never given an envelope."""
    cmd, out = sink
    script(inst, expect(None, 220), expect("EHLO c", 250),
           expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<x@elsewhere.example>", 250),
           expect("DATA", 354), data(NUL_SMUGGLE, 550, "5.6.0"), expect("QUIT", 221),
           env={"QUEUE_INJECT": cmd, "RELAYCLIENT": ""})
    assert not os.path.exists(out + ".env") or open(out + ".env", "rb").read() == b""


def test_nul_in_bdat_is_refused(inst, sink):
    cmd, out = sink
    chunk = b"Subject: x\r\n\r\na\0b\r\n"
    script(inst, expect(None, 220), expect("EHLO c", 250),
           expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<user@example.test>", 250),
           data(b"BDAT %d LAST\r\n" % len(chunk) + chunk, 550, "5.6.0"), expect("QUIT", 221),
           env={"QUEUE_INJECT": cmd})
    assert not os.path.exists(out + ".env") or open(out + ".env", "rb").read() == b""


# ---- unauthorised pipelining (Postfix's smtpd_forbid_unauth_pipelining) ----

def test_early_talker_is_refused_and_disconnected(inst):
    before = queue_files(inst)
    early = (b"EHLO evil\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<user@example.test>\r\nDATA\r\n"
             b"Subject: early\r\n\r\nx\r\n.\r\n")
    with Live(inst, early=early) as s:
        s.expect(None, 554, "5.5.0")
        assert s.closed()
    assert queue_files(inst) == before
    assert b"pipelining violation" in s.stderr


def test_input_after_data_before_354_is_refused(inst):
    before = queue_files(inst)
    with Live(inst) as s:
        s.expect(None, 220)
        s.expect("EHLO c", 250)
        s.expect("MAIL FROM:<a@b.example>", 250)
        s.expect("RCPT TO:<user@example.test>", 250)
        s.expect(b"DATA\r\nSubject: eager\r\n\r\nbody\r\n.", 554, "5.5.0")
        assert s.closed()
    assert queue_files(inst) == before


def test_refused_data_never_runs_the_body_as_commands(inst):
    """A refused DATA (no valid recipient) with the body pipelined behind it: the body would be
    read as commands (a smuggled transaction); the session ends instead."""
    before = queue_files(inst)
    with Live(inst) as s:
        s.expect(None, 220)
        s.expect("EHLO c", 250)
        s.expect("MAIL FROM:<a@b.example>", 250)
        s.expect("RCPT TO:<nobody@example.test>", 550)
        s.expect(b"DATA\r\nMAIL FROM:<evil@b.example>\r\nRCPT TO:<other@example.test>\r\nDATA",
                 554, "5.5.0")
        assert s.closed()
    assert queue_files(inst) == before


def test_a_client_that_waits_is_served(inst):
    """The control case: the same transaction, waiting for each reply, is queued."""
    before = queue_files(inst)
    with Live(inst) as s:
        s.expect(None, 220)
        s.expect("EHLO c", 250)
        # pipelining where RFC 2920 allows it (MAIL and RCPT in one group)
        s.send(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<user@example.test>\r\n")
        s.expect(None, 250)
        s.expect(None, 250)
        s.expect("DATA", 354)
        s.expect(b"Subject: calm\r\n\r\nbody\r\n.", 250, "2.0.0 Ok: queued")
        s.expect("QUIT", 221)
    assert len(queue_files(inst) - before) >= 1


# ---- junk commands ----

def test_twenty_thousand_noops_do_not_all_get_250(inst):
    r = inst.run("smtp-receive", input=b"EHLO c\r\n" + b"NOOP\r\n" * 20000,
                 env={"TCPREMOTEIP": "192.0.2.7"})
    c = [x for x, _ in replies(r.stdout)]
    assert c[:2] == [220, 250]
    assert c[2:] == [250] * 100 + [421]
    assert replies(r.stdout)[-1][1][0].startswith(b"4.7.0")


def test_junk_count_starts_again_after_a_message(inst, sink):
    cmd, _ = sink
    inst.control("smtp-junkmax", "3")
    msg = [expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<user@example.test>", 250),
           expect("DATA", 354), data(b"Subject: x\r\n\r\nx\r\n.\r\n", 250)]
    script(inst, expect(None, 220), expect("EHLO c", 250),
           expect("NOOP", 250), expect("RSET", 250), expect("NOOP", 250), *msg,
           expect("NOOP", 250), expect("VRFY x", 252), expect("NOOP", 250), expect("NOOP", 421),
           env={"QUEUE_INJECT": cmd})


# ---- the per-address connection cap ----

def greeting(sock):
    buf = b""
    sock.settimeout(20)
    while not buf.endswith(b"\r\n"):
        c = sock.recv(4096)
        if not c:
            break
        buf += c
    return int(buf[:3]) if buf[:3].isdigit() else None, buf


def test_sixty_idle_connections_from_one_address_do_not_lock_out_another(inst):
    """Through tcpserver (40 slots): one address holding connections gets 10 (control/smtp-peermax
    default) and then 421 4.7.0; another address is still served."""
    port = free_port()
    srv = subprocess.Popen(["tcpserver", "-R", "-H", "-c", "40", "-b", "100", "0.0.0.0", str(port),
                            prog("smtp-receive")], env=inst.env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    socks = []
    try:
        def up():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(up, timeout=10, what="tcpserver")
        codes = []
        for _ in range(60):
            s = socket.create_connection(("127.0.0.1", port), timeout=20)
            socks.append(s)
            code, text = greeting(s)
            codes.append(code)
            if code == 421:
                assert b"421 4.7.0" in text
        assert codes.count(220) == 10 and codes.count(421) == 50, codes
        other = socket.socket()
        other.bind(("127.0.0.2", 0))
        other.connect(("127.0.0.1", port))
        socks.append(other)
        code, _ = greeting(other)
        assert code == 220
    finally:
        for s in socks:
            s.close()
        stop_procs([srv])
        srv.stderr.close()


def test_peer_cap_counts_ipv6_by_prefix(inst):
    """Two addresses of one /64 share the cap; an address of another /64 does not."""
    inst.control("smtp-peermax", "1")
    env1 = {"TCPREMOTEIP": "2001:db8:1:2::1"}
    with Live(inst, env=env1) as a:
        a.expect(None, 220)
        with Live(inst, env={"TCPREMOTEIP": "2001:db8:1:2:ffff::9"}) as b:
            b.expect(None, 421, "4.7.0")
        with Live(inst, env={"TCPREMOTEIP": "2001:db8:1:3::1"}) as c:
            c.expect(None, 220)
            c.expect("QUIT", 221)
        a.expect("QUIT", 221)
    # released at exit: the address is served again
    with Live(inst, env={"TCPREMOTEIP": "2001:db8:1:2::5"}) as d:
        d.expect(None, 220)
        d.expect("QUIT", 221)


# ---- AUTH: attempts counted before the check ----

def test_thirty_parallel_guesses_count_as_thirty(inst, fake_auth, tmp_path):
    """30 sessions from one address each try one bad password at the same time: more than
    control/authfail-limit (10) failures block, so 11 of them reach the password check, the rest
    get 454 4.7.0 unchecked, and the address is blocked afterwards even for the right password."""
    inst.control("smtp-authdelay", "0")
    inst.control("smtp-peermax", "100")  # the connection cap alone would stop 20 of them
    log = tmp_path / "checks"
    env = dict(inst.env, **auth_env(fake_auth, TCPREMOTEIP="127.0.0.9", FAKE_AUTH_DELAY="1",
                                    FAKE_AUTH_LOG=str(log)))
    procs = [subprocess.Popen([prog("smtp-receive")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
             for _ in range(30)]
    outs = [None] * 30

    def talk(i):
        outs[i] = procs[i].communicate(("EHLO c\r\n%s\r\nQUIT\r\n" % BAD).encode(), timeout=60)[0]
    ts = [threading.Thread(target=talk, args=(i,)) for i in range(30)]
    try:
        for t in ts:
            t.start()
        for t in ts:
            t.join(90)
    finally:
        stop_procs(procs)
    assert all(o is not None for o in outs)
    got = [replies(o)[2][0] if len(replies(o)) > 2 else replies(o) for o in outs]
    assert got.count(535) == 11 and got.count(454) == 19, [x for x in got if x not in (454, 535)]
    assert log.read_text().count("check") == 11
    r = script(inst, expect(None, 220), expect("EHLO c", 250), expect(GOOD, 454, "4.7.0"),
               expect("QUIT", 221), env=auth_env(fake_auth, TCPREMOTEIP="127.0.0.9"))
    assert b"235" not in r.stdout


def test_a_good_login_does_not_count_against_the_address(inst, fake_auth):
    inst.control("smtp-authdelay", "0")
    for _ in range(15):
        script(inst, expect(None, 220), expect("EHLO c", 250), expect(GOOD, 235),
               expect("QUIT", 221), env=auth_env(fake_auth, TCPREMOTEIP="127.0.0.10"))


# ---- AUTH on port 25 ----

@pytest.mark.parametrize("env", [{"SMTP_SERVICE": "smtpd"}, {"TCPLOCALPORT": "25"}],
                         ids=["service", "port"])
def test_no_auth_on_port_25_unless_configured(inst, fake_auth, env):
    e = auth_env(fake_auth, **env)
    r = script(inst, expect(None, 220), expect("EHLO c", 250), expect(GOOD, 503, "5.5.1"),
               expect("QUIT", 221), env=e)
    assert b"AUTH" not in r.stdout.split(b"\r\n503")[0]
    e["SMTP_OFFER_AUTH"] = "1"
    r = script(inst, expect(None, 220), expect("EHLO c", 250), expect(GOOD, 235),
               expect("QUIT", 221), env=e)
    assert b"250-AUTH PLAIN LOGIN" in r.stdout


# ---- submission: the envelope and the From: must belong to the user ----

def submit(inst, fake_auth, sink, sender, message, code, text=None, mailcode=250):
    cmd, _ = sink
    steps = [expect(None, 220), expect("EHLO c", 250), expect(GOOD, 235),
             expect("MAIL FROM:<%s>" % sender, mailcode)]
    if mailcode == 250:
        steps += [expect("RCPT TO:<x@elsewhere.example>", 250), expect("DATA", 354),
                  data(message + b"\r\nbody\r\n.\r\n", code, text)]
    return script(inst, *steps, expect("QUIT", 221),
                  env=auth_env(fake_auth, SMTPAUTH="1", QUEUE_INJECT=cmd))


def test_forged_from_on_submission_is_refused(inst, fake_auth, sink):
    before = queue_files(inst)
    r = submit(inst, fake_auth, sink, "user@example.test",
               b"From: The Boss <boss@elsewhere.example>\r\nSubject: pay\r\n", 550, "5.7.1")
    assert b"result=550-from-not-owned" in r.stderr
    assert queue_files(inst) == before


@pytest.mark.parametrize("frm,code", [
    (b"From: user@example.test", 250),
    (b"From: \"Me\" <USER@Example.Test>", 250),
    (b"From : user@example.test", 250),            # obsolete syntax, same field
    (b"From: user+tag@example.test", 250),
    (b"From: me@example.test", 250),                # an alias of the user
    (b"From: other@example.test", 550),              # another account
    (b"From: user@example.test, boss@elsewhere.example", 550),
    (b"From: user@example.test\r\nFrom: boss@elsewhere.example", 550),
    (b"From: boss@elsewhere.example", 550),
], ids=["own", "display-name", "wsp-colon", "tag", "alias", "other", "list", "two-fields",
        "forged"])
def test_from_header_must_be_owned(inst, fake_auth, sink, frm, code):
    inst.add_alias("me@example.test", "user@example.test")
    submit(inst, fake_auth, sink, "user@example.test", frm + b"\r\nSubject: x\r\n", code)


def test_allow_list_gives_extra_addresses(inst, fake_auth, sink):
    inst.control("sender-allow", "user@example.test boss@elsewhere.example\n"
                                 "user@example.test @shared.example\n"
                                 "other@example.test ceo@elsewhere.example\n")
    submit(inst, fake_auth, sink, "boss@elsewhere.example",
           b"From: boss@elsewhere.example\r\n", 250)
    submit(inst, fake_auth, sink, "any@shared.example", b"From: any@shared.example\r\n", 250)
    submit(inst, fake_auth, sink, "ceo@elsewhere.example", b"", 0, mailcode=553)


def test_null_sender_needs_an_owned_from(inst, fake_auth, sink):
    submit(inst, fake_auth, sink, "", b"From: user@example.test\r\nSubject: receipt\r\n", 250)
    submit(inst, fake_auth, sink, "", b"Subject: no from\r\n", 550, "5.7.1")
    submit(inst, fake_auth, sink, "", b"From: boss@elsewhere.example\r\n", 550, "5.7.1")


def test_forged_envelope_sender_is_refused(inst, fake_auth, sink):
    submit(inst, fake_auth, sink, "boss@elsewhere.example", b"", 0, mailcode=553)


# ---- the Received: line and the log line ----

def test_log_line_names_recipients_and_user(inst, fake_auth, sink):
    cmd, out = sink
    r = script(inst, expect(None, 220), expect("EHLO c", 250), expect(GOOD, 235),
               expect("MAIL FROM:<user@example.test>", 250),
               expect("RCPT TO:<x@elsewhere.example>", 250),
               expect("RCPT TO:<other@example.test>", 250), expect("DATA", 354),
               data(b"From: user@example.test\r\n\r\nx\r\n.\r\n", 250, "2.0.0 Ok: queued as SINK1"),
               expect("QUIT", 221), env=auth_env(fake_auth, QUEUE_INJECT=cmd))
    assert (b"message ip=127.0.0.1 from=<user@example.test> rcpts=2 "
            b"to=<x@elsewhere.example>,<other@example.test> ") in r.stderr
    assert b" tls=- user=user@example.test result=250 id=SINK1" in r.stderr


# ---- injection through the socket, with the session facts ----

@pytest.fixture
def inject_socket(inst):
    sock = inst.path("queue", "inject.sock")
    p = subprocess.Popen(["s6-ipcserver", "-a", "0777", sock, prog("queue-inject-ipc")],
                         env=inst.env, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: os.path.exists(sock), timeout=10, what="the injection socket")
        yield sock
    finally:
        stop_procs([p])
        p.stderr.close()


def queued_messages(inst, before):
    return [open(p, "rb").read() for p in sorted(queue_files(inst) - before) if "/mess/" in p]


def test_smtp_receive_injects_through_the_socket_with_its_facts(inst, inject_socket):
    before = queue_files(inst)
    r = script(inst, expect(None, 220), expect("EHLO client.example", 250),
               expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<user@example.test>", 250),
               expect("DATA", 354), data(b"Subject: via socket\r\n\r\nx\r\n.\r\n", 250,
                                         "2.0.0 Ok: queued as "),
               expect("QUIT", 221), env={"QUEUE_INJECT": "socket:" + inject_socket})
    msgs = queued_messages(inst, before)
    assert len(msgs) == 1, r.stderr
    m = msgs[0]
    assert b"Received: from client.example ([192.0.2.7])" in m
    # a trusted peer (our own uid): no local-injection trace line
    assert b"local injection" not in m


def test_socket_is_the_default_when_it_answers(inst, inject_socket, tmp_path):
    """No QUEUE_INJECT: the socket is used (queue-inject is not run by smtp-receive: a
    QUEUE_INJECT-less PATH without queue-inject still queues)."""
    before = queue_files(inst)
    env = {"PATH": "/usr/bin:/bin"}
    r = subprocess.run([prog("smtp-receive")], input=b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n"
                       b"RCPT TO:<user@example.test>\r\nDATA\r\nSubject: d\r\n\r\nx\r\n.\r\n"
                       b"QUIT\r\n", env=dict(inst.env, TCPREMOTEIP="192.0.2.7", **env),
                       capture_output=True, timeout=60)
    assert [c for c, _ in replies(r.stdout)] == [220, 250, 250, 250, 354, 250, 221], r.stderr
    assert len(queued_messages(inst, before)) == 1


def test_untrusted_facts_are_ignored(inst):
    """queue-inject-ipc's server: facts from a uid it does not trust are dropped and the
    local-injection trace line names the real uid."""
    before = queue_files(inst)
    facts = b"service=smtpd\nip=203.0.113.5\nuser=user@example.test\n"
    env = b"Fa@b.example\0Tuser@example.test\0\0"
    msg = b"Subject: x\n\nbody\n"
    r = inst.run("queue-inject-ipc", input=b"S%d:%s," % (len(facts), facts) +
                 b"%d:%s,0:,%d:%s," % (len(msg), msg, len(env), env),
                 env={"IPCREMOTEEUID": "54321", "IPCREMOTEEGID": "54321"})
    assert r.returncode == 0, r.stderr
    early, final = r.stdout.split(b"\n", 1)
    assert early.startswith(b"I") and final == b"0 " + early[1:] + b"\n"  # the id, told early
    assert b"ignoring session facts" in r.stderr
    m = queued_messages(inst, before)[0]
    assert b"(pillarbox local injection, uid 54321, gid 54321)" in m


def test_server_commits_itself_with_queue_injects_limits(inst, tmp_path):
    """Without arguments the server commits in-process: a queue-inject earlier in PATH is not
    run; a message over 64 KB (spilled) is queued whole; control/databytes refuses (31) after
    the client sent everything, and leaves nothing behind."""
    hook = tmp_path / "bin"
    hook.mkdir()
    (hook / "queue-inject").write_text("#!/bin/sh\nexit 81\n")
    (hook / "queue-inject").chmod(0o755)
    env = b"Fa@b.example\0Tuser@example.test\0\0"
    msg = b"Subject: big\n\n" + b"0123456789abcde\n" * 8192  # 128 KB: spilled
    chunks = b"".join(b"%d:%s," % (len(msg[i:i + 65536]), msg[i:i + 65536])
                      for i in range(0, len(msg), 65536))
    before = queue_files(inst)
    r = inst.run("queue-inject-ipc", input=chunks + b"0:,%d:%s," % (len(env), env),
                 env={"IPCREMOTEEUID": "54321", "IPCREMOTEEGID": "7",
                      "PATH": "%s:%s" % (hook, inst.env["PATH"])})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"0 ") and len(r.stdout) > 4, r.stdout
    m = queued_messages(inst, before)
    assert len(m) == 1 and m[0].endswith(msg), r.stderr
    assert b"(pillarbox local injection, uid 54321, gid 7)" in m[0]
    assert not [p for p in queue_files(inst) - before if "/queue/tmp/" in p or "/queue/intake/" in p]
    with open(inst.path("control", "databytes"), "w") as f:
        f.write("1000\n")
    before = queue_files(inst)
    r = inst.run("queue-inject-ipc", input=chunks + b"0:,%d:%s," % (len(env), env),
                 env={"IPCREMOTEEUID": "54321"})
    assert r.returncode == 0 and r.stdout.startswith(b"31 "), (r.stdout, r.stderr)
    assert queue_files(inst) == before
    # a client that goes away before the envelope commits nothing
    os.unlink(inst.path("control", "databytes"))
    r = inst.run("queue-inject-ipc", input=b"5:hello,0:,", env={"IPCREMOTEEUID": "54321"})
    assert r.returncode == 100 and queue_files(inst) == before


def _ipc_inject(sock, payload):
    with socket.socket(socket.AF_UNIX) as c:
        c.settimeout(30)
        c.connect(sock)
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            b = c.recv(4096)
            if not b:
                return out
            out += b


def test_pool_serves_many_clients_with_few_workers(inst):
    """-l: queue-inject-ipc listens itself with -n workers that stay: it says it is ready (-1),
    takes more clients than workers one after the other, names each client's uid from the
    kernel, replaces a worker whose client broke off, and its workers go with it on SIGTERM."""
    sock = inst.path("queue", "pool.sock")
    p = subprocess.Popen([prog("queue-inject-ipc"), "-1", "-m", "0700", "-n", "2", "-l", sock],
                         env=inst.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"\n"
        assert os.stat(sock).st_mode & 0o777 == 0o700
        kids = "/proc/%d/task/%d/children" % (p.pid, p.pid)
        workers = set(int(x) for x in open(kids).read().split())
        assert len(workers) == 2
        before = queue_files(inst)
        env = b"Fa@b.example\0Tuser@example.test\0\0"
        for i in range(5):
            msg = b"Subject: pool %d\n\nx\n" % i
            out = _ipc_inject(sock, b"%d:%s,0:,%d:%s," % (len(msg), msg, len(env), env))
            assert out.startswith(b"0 ") and len(out) > 4, out
        # a client that goes away before its envelope: nothing queued, its worker replaced
        assert _ipc_inject(sock, b"5:hello,") == b""
        msgs = queued_messages(inst, before)
        assert len(msgs) == 5
        assert all(b"(pillarbox local injection, uid %d, gid %d)" % (os.getuid(), os.getgid())
                   in m for m in msgs)
        msg = b"Subject: after\n\nx\n"
        out = _ipc_inject(sock, b"%d:%s,0:,%d:%s," % (len(msg), msg, len(env), env))
        assert out.startswith(b"0 "), out
        # the replacement of the broken-off client's worker may still be on its way
        now = wait_for(lambda: (lambda s: len(s) == 2 and s != workers and s)(
            set(int(x) for x in open(kids).read().split())), timeout=10, what="a new worker")
    finally:
        p.terminate()
        p.wait(timeout=10)
        p.stdout.close()
        p.stderr.close()
    for w in workers | now:
        wait_for(lambda: not os.path.exists("/proc/%d" % w) or
                 open("/proc/%d/stat" % w).read().split()[2] == "Z", timeout=10, what="worker gone")


def test_pool_workers_go_with_a_killed_parent(inst):
    """queue-inject-ipc -l killed outright (SIGKILL): its workers do not keep serving."""
    sock = inst.path("queue", "pool.sock")
    p = subprocess.Popen([prog("queue-inject-ipc"), "-1", "-n", "3", "-l", sock],
                         env=inst.env, stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"\n"
        kids = "/proc/%d/task/%d/children" % (p.pid, p.pid)
        workers = [int(x) for x in open(kids).read().split()]
        assert len(workers) == 3
    finally:
        p.kill()
        p.wait(timeout=10)
        p.stdout.close()

    def gone():
        for w in workers:
            try:
                if open("/proc/%d/stat" % w).read().rsplit(")", 1)[1].split()[0] != "Z":
                    return False
            except OSError:
                pass
        return True
    wait_for(gone, timeout=10, what="the workers to exit")


def test_trusted_facts_reach_the_chain(inst, tmp_path):
    """From a trusted uid the facts are exported to a chain given as arguments (INJECT_*)."""
    hook = tmp_path / "bin"
    hook.mkdir()
    (hook / "queue-inject").write_text("#!/bin/sh\necho ID9 >&3\nenv | grep ^INJECT_ | grep -v ^INJECT_TRUSTED | sort > %s\n"
                                       "cat >/dev/null\ncat <&1 >/dev/null\n" % (tmp_path / "facts"))
    (hook / "queue-inject").chmod(0o755)
    facts = b"service=submission\nip=203.0.113.5\nuser=user@example.test\ntls=TLSv1.2 X\nrelay=1\n"
    env = b"Fa@b.example\0Tuser@example.test\0\0"
    r = inst.run("queue-inject-ipc", str(hook / "queue-inject"),
                 input=b"S%d:%s," % (len(facts), facts) + b"1:x,0:,%d:%s," % (len(env), env),
                 env={"IPCREMOTEEUID": "54321", "INJECT_TRUSTED_UIDS": "1,54321"})
    assert r.stdout == b"IID9\n0 ID9\n", r.stderr
    assert (tmp_path / "facts").read_text() == (
        "INJECT_AUTHUSER=user@example.test\nINJECT_RELAY=1\nINJECT_REMOTEIP=203.0.113.5\n"
        "INJECT_SERVICE=submission\nINJECT_TLS=TLSv1.2 X\n")


# ---- sendmail -t: header names with white space before the colon ----

def test_sendmail_t_reads_to_and_bcc_with_space_before_colon(inst, sink):
    cmd, out = sink
    r = inst.run("sendmail", "-t", input=b"To : user@example.test\nBcc\t: other@example.test\n"
                 b"Subject: s\n\nbody\n", env={"QUEUE_INJECT": cmd})
    assert r.returncode == 0, r.stderr
    assert open(out + ".env", "rb").read() == \
        b"F" + open(out + ".env", "rb").read()[1:].split(b"\0")[0] + \
        b"\0Tuser@example.test\0Tother@example.test\0\0"
    m = open(out + ".msg", "rb").read()
    assert b"Bcc" not in m and b"other@example.test" not in m
    assert b"To : user@example.test\n" in m


def test_received_tls_clause_and_log(inst, sink):
    """Implicit TLS (tls-serve sets SSL_PROTOCOL / SSL_CIPHER): Received: says
    '(using TLSv1.2 with cipher ...)' as other servers write it, and the log line names both."""
    cmd, out = sink
    env = {"SSL_PROTOCOL": "TLSv1.2", "SSL_CIPHER": "ECDHE-RSA-AES128-GCM-SHA256",
           "QUEUE_INJECT": cmd}
    with Live(inst, env=env) as s:
        s.expect(None, 220)
        s.expect("EHLO c", 250)
        s.expect("MAIL FROM:<a@b.example>", 250)
        s.expect("RCPT TO:<user@example.test>", 250)
        s.expect("DATA", 354)
        s.expect(b"Subject: t\r\n\r\nx\r\n.", 250)
        s.expect("QUIT", 221)
    m = open(out + ".msg", "rb").read()
    assert b"with ESMTPS\n\t(using TLSv1.2 with cipher ECDHE-RSA-AES128-GCM-SHA256)\n\tfor " in m
    assert b"TLSv1.2?" not in m
    assert b" tls=TLSv1.2/ECDHE-RSA-AES128-GCM-SHA256 user=- result=250 id=SINK1" in s.stderr


def test_sendmail_without_the_socket_leaves_the_queue_to_its_owner(inst):
    """No injection service: a caller that may write the queue (its owner, or root) runs
    queue-inject itself, and the new file belongs to the queue's owner whoever called."""
    before = queue_files(inst)
    r = inst.run("sendmail", "user@example.test", input=b"Subject: cron\n\nx\n")
    assert r.returncode == 0, r.stderr
    new = [p for p in queue_files(inst) - before if "/mess/" in p]
    assert len(new) == 1
    assert os.stat(new[0]).st_uid == os.stat(inst.path("queue")).st_uid


# ---- over-quota recipients (the quota-state record deliver-maildir keeps, lib/quotastate) ----

def quota_record(inst, address, used, limit):
    d = inst.path("run", "quota")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, address), "w") as f:
        f.write("PBQS1 %d 1 %d 0 %d\n" % (used, limit, int(time.time())))


@pytest.mark.parametrize("used,size,rcpt,end", [
    (10500, None, (452, "4.2.2"), None),           # over now: 452 at RCPT, try later
    (100, 20000, (552, "5.2.2"), None),            # SIZE= alone over the quota: 552 at RCPT
    (100, 500, (250, None), (250, None)),          # fits
    (100, None, (250, None), (552, "5.2.2")),      # no SIZE=: the real size at end of data
], ids=["full", "size-too-big", "fits", "too-big-at-end"])
def test_over_quota_recipient(inst, sink, used, size, rcpt, end):
    cmd, out = sink
    inst.add_user("full@example.test", "secret", "--quota", "10000")
    quota_record(inst, "full@example.test", used, 10000)
    body = b"Subject: q\r\n\r\n" + (b"x" * 12000 if end and end[0] == 552 else b"small") + b"\r\n.\r\n"
    steps = [expect(None, 220), expect("EHLO c", 250),
             expect("MAIL FROM:<a@b.example>" + (" SIZE=%d" % size if size else ""), 250),
             expect("RCPT TO:<full@example.test>", *rcpt)]
    if end:
        steps += [expect("DATA", 354), data(body, *end)]
    script(inst, *steps, expect("QUIT", 221), env={"QUEUE_INJECT": cmd})


def test_quota_spares_a_list_and_other_recipients(inst, sink):
    """A full mailbox refuses only itself: the other recipients of the message are accepted,
    and a list with a full member is not refused."""
    cmd, out = sink
    inst.add_user("full@example.test", "secret", "--quota", "10000")
    inst.add_alias("team@example.test", "full@example.test", "user@example.test")
    quota_record(inst, "full@example.test", 10500, 10000)
    script(inst, expect(None, 220), expect("EHLO c", 250), expect("MAIL FROM:<a@b.example>", 250),
           expect("RCPT TO:<full@example.test>", 452, "4.2.2"),
           expect("RCPT TO:<user@example.test>", 250), expect("RCPT TO:<team@example.test>", 250),
           expect("DATA", 354), data(b"Subject: q\r\n\r\nx\r\n.\r\n", 250), expect("QUIT", 221),
           env={"QUEUE_INJECT": cmd})


def test_received_names_the_queue_id(inst, inject_socket):
    """The queue tells the id before it reads the message, so our Received: carries it (the
    id of the 250 reply), directly and through the injection socket."""
    import re
    for env in ({}, {"QUEUE_INJECT": "socket:" + inject_socket}):
        before = queue_files(inst)
        r = script(inst, expect(None, 220), expect("EHLO c", 250),
                   expect("MAIL FROM:<a@b.example>", 250), expect("RCPT TO:<user@example.test>", 250),
                   expect("DATA", 354), data(b"Subject: id\r\n\r\nx\r\n.\r\n", 250, "2.0.0 Ok: queued as "),
                   expect("QUIT", 221), env=env)
        qid = re.search(rb"queued as (\S+)", r.stdout).group(1)
        [m] = queued_messages(inst, before)
        assert b" (pillarbox) with ESMTP id %s\n\tfor <user@example.test>; " % qid in m, m[:300]
