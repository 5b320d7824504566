"""The queue as a postmaster drives it (issues 9 and 10): the root spawner running deliveries
under their own uids, flush by id under a domain's backoff, queue-ctl -d DOMAIN / ALL /
requeue, queue-list's diagnostics and qshape-like summary, queue-cat (postcat -q), the
quota-state record, and the Postfix-like delivery log lines."""
import glob
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time

import pytest

from conftest import BIN, Instance, base_env, envelope, prog, wait_for
from outbound_helpers import SmtpServer
from test_queue import MSG, QueueRun, mess, qlist


@pytest.fixture
def inst(tmp_path):
    """An instance in a directory every uid can traverse (the spawner test runs the queue and
    the deliveries under other uids), removed afterwards."""
    top = tempfile.mkdtemp(prefix="pb-queue-admin-", dir="/tmp")
    os.chmod(top, 0o755)
    root = os.path.join(top, "inst")
    r = subprocess.run([prog("mail-instance"), "create", root, "--hostname", "mx.example.test",
                        "--domain", "example.test"], env=base_env(), capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    i = Instance(root)
    i.top = top
    for u in ("alice", "bob", "carol"):
        i.add_user(u + "@example.test")
    i.control("retry-base", "1")
    i.control("retry-max", "2")
    yield i
    shutil.rmtree(top, ignore_errors=True)


class Run(QueueRun):
    """queue-run (or argv, e.g. queue-spawn ... queue-run) in the foreground, its log in a
    file; stopped with SIGTERM by the fixture."""

    def __init__(self, inst, env=None, argv=None):
        self.inst = inst
        self.logpath = inst.path("queue-run.%d.log" % time.monotonic_ns())
        self.log = open(self.logpath, "wb")
        e = dict(inst.env)
        e.update(env or {})
        self.p = subprocess.Popen(argv or [prog("queue-run")], stdout=self.log,
                                  stderr=subprocess.STDOUT, env=e)


@pytest.fixture
def runs():
    started = []

    def start(inst, env=None, argv=None):
        q = Run(inst, env, argv)
        started.append(q)
        return q
    yield start
    for q in started:
        q.stop()


FAKE_SMTP_SEND = r'''#!/bin/sh
# records its uid and arguments, answers per recipient by name
dom=$1; shift; sender=$1; shift
echo "$(id -u) $dom $sender $*" >> "$FAKE_LOG"
cat > /dev/null
for r in "$@"; do
  case "$r" in
    *temp*) printf 'T\t%s\tmx.%s\t451 4.3.0 try later\n' "$r" "$dom" ;;
    *) printf 'D\t%s\tmx.%s\t250 2.0.0 ok\n' "$r" "$dom" ;;
  esac
done
'''


def in_flight(inst):
    """Files in tmp/ and intake/N/: what an injection writes before its commit."""
    found = []
    for d in [inst.path("queue", "tmp")] + glob.glob(inst.path("queue", "intake", "*")):
        found += os.listdir(d) if os.path.isdir(d) else []
    return found


def fake_remote(inst):
    d = os.path.join(inst.top, "fakebin")
    os.mkdir(d)
    os.chmod(d, 0o755)
    with open(os.path.join(d, "smtp-send"), "w") as f:
        f.write(FAKE_SMTP_SEND)
    os.chmod(os.path.join(d, "smtp-send"), 0o755)
    log = os.path.join(inst.top, "smtp-send.log")
    open(log, "w").close()
    os.chmod(log, 0o666)
    return {"PATH": d + ":" + inst.env["PATH"], "FAKE_LOG": log}, log


def proc_uid(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])


def comm(pid):
    """pid's command name, or "" when it is gone (a delivery may end at any moment)"""
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    st = f.read()
            except OSError:
                continue
            if st[st.rfind(")") + 2:].split()[1] == str(pid):
                out.append(int(d))
    return out


# ---- the spawner (issue 9) ----

QUID, DUID, RUID = 61001, 61002, 61003


def pwd_gid(uid):
    import pwd
    return pwd.getpwuid(uid).pw_gid


@pytest.mark.parametrize("named", [False, True], ids=["uid:gid", "pb-users"])
def test_spawner_runs_queue_run_and_deliveries_under_their_uids(inst, runs, named):
    if os.geteuid() != 0:
        pytest.skip("needs root: queue-spawn changes uids only when started as root")
    if named:  # the service's users, made by mail-instance create run as root
        import pwd
        quid, duid, ruid = (pwd.getpwnam(n).pw_uid for n in ("pb-queue", "pb-deliv", "pb-remote"))
        users = ["-q", "pb-queue", "-l", "pb-deliv", "-r", "pb-remote"]
    else:
        quid, duid, ruid = QUID, DUID, RUID
        users = ["-q", "%d:%d" % (quid, quid), "-l", "%d:%d" % (duid, duid), "-r",
                 "%d:%d" % (ruid, ruid)]
    inst.add_alias("fwd@example.test", "friend@far.test")
    env, log = fake_remote(inst)
    rc, err = inst.inject(MSG, "alice@example.test", "bob@example.test", "fwd@example.test")
    assert rc == 0, err
    # the queue belongs to the queue uid, the mailboxes to the delivery uid
    for d, uid in (("queue", quid), ("mail", duid)):
        gid = uid if not named else pwd_gid(uid)
        for top, dirs, files in os.walk(inst.path(d)):
            for n in dirs + files + [""]:
                os.chown(os.path.join(top, n), uid, gid)
    q = runs(inst, env, [prog("queue-spawn")] + users + [prog("queue-run")])
    q.wait_log(r"^start queued=1 spawner=queue-spawn$")
    [qr] = [c for c in children(q.p.pid) if comm(c) == "queue-run"]
    assert proc_uid(q.p.pid) == 0 and proc_uid(qr) == quid
    q.wait_log(r"^done ")
    [m] = os.listdir(os.path.join(inst.maildir("bob@example.test"), "new"))
    st = os.stat(os.path.join(inst.maildir("bob@example.test"), "new", m))
    assert (st.st_uid, st.st_gid) == (duid, pwd_gid(duid) if named else duid)  # as the delivery uid
    # delivered by a worker that stays, under the delivery uid
    ws = [c for c in children(q.p.pid) if comm(c) == "deliver-maildir"]
    assert ws and all(proc_uid(w) == duid for w in ws)
    with open(log) as f:
        assert f.read() == "%d far.test alice@example.test friend@far.test\n" % ruid
    text = q.text()
    assert re.search(r"^delivery \S+ to=<bob@example.test> orig_to=<bob@example.test> "
                     r"relay=local delay=\d+\.\d\d status=sent \(delivered\)$", text, re.M), text
    assert re.search(r"^delivery \S+ to=<friend@far.test> orig_to=<fwd@example.test> "
                     r"relay=mx.far.test delay=\d+\.\d\d status=sent \(smtp; 250 2.0.0 ok\)$",
                     text, re.M), text
    q.p.send_signal(signal.SIGTERM)
    assert q.p.wait(timeout=30) == 0  # queue-spawn exits with queue-run's code
    assert q.text().rstrip().endswith("stopped")


def test_spawner_kills_a_hung_delivery_for_queue_run(inst, runs):
    # no uids given: the protocol (start, kill request, exit report) without root
    hang = os.path.join(inst.top, "hangbin")
    os.mkdir(hang)
    with open(os.path.join(hang, "deliver-maildir"), "w") as f:
        f.write("#!/bin/sh\nexec sleep 60\n")
    os.chmod(os.path.join(hang, "deliver-maildir"), 0o755)
    inst.control("timeout-local", "1")
    inst.control("retry-base", "300")
    q = runs(inst, {"PATH": hang + ":" + inst.env["PATH"]},
             [prog("queue-spawn"), prog("queue-run")])
    rc, err = inst.inject(MSG, "alice@example.test", "bob@example.test")
    assert rc == 0, err
    q.wait_log(r"^warning \S+: deliver-maildir timed out, killed$", timeout=15)
    q.wait_log(r"^delivery \S+ to=<bob@example.test> .* status=deferred "
               r"\(4.4.1 deliver-maildir timed out\)$")
    wait_for(lambda: os.listdir(inst.path("queue", "state")), what="state file")
    [m] = qlist(inst)
    assert m["recipients"][0]["state"] == "pending-local" and m["recipients"][0]["attempts"] == 1
    assert not [c for c in children(q.p.pid) if comm(c) == "sleep"]


# ---- flush by id under backoff (issue 10) ----

def test_flush_by_id_retries_now_when_the_domain_is_backed_off(inst, runs):
    answers = ["451 4.3.0 not now\r\n", "250 2.1.5 ok\r\n"]
    seen = []

    def rcpt(cmd):
        seen.append(cmd)
        return answers[min(len(seen), len(answers)) - 1]
    srv = SmtpServer(rcpt=rcpt)
    try:
        inst.control("routes", "far.test 127.0.0.1:%d" % srv.port)
        inst.control("retry-base", "600")
        inst.control("retry-max", "600")
        q = runs(inst)
        rc, err = inst.inject(MSG, "alice@example.test", "a@far.test")
        assert rc == 0, err
        q.wait_log(r"^delivery \S+ to=<a@far.test> .* status=deferred \(smtp; 451 4.3.0 not now\)$",
                   timeout=30)
        [qid] = mess(inst)
        wait_for(lambda: os.listdir(inst.path("queue", "state")), what="state file")
        [m] = qlist(inst)
        assert m["recipients"][0]["next"] > time.time() + 300
        # a second message for the backed-off domain waits for the domain
        rc, err = inst.inject(MSG, "alice@example.test", "b@far.test")
        assert rc == 0, err
        q.wait_log(r"^new ", count=2)
        assert len(seen) == 1
        r = inst.run("queue-ctl", "flush", qid)
        assert r.returncode == 0 and r.stderr == b"", r.stderr
        q.wait_log(r"^flush %s requested$" % re.escape(qid))
        q.wait_log(r"^delivery %s to=<a@far.test> .* status=sent " % re.escape(qid), timeout=15)
        q.wait_log(r"^done %s$" % re.escape(qid))
        assert seen == ["RCPT TO:<a@far.test>", "RCPT TO:<a@far.test>"]
        assert len(mess(inst)) == 1  # the other one still waits for its own time
    finally:
        srv.stop()


def test_release_by_id_retries_now_when_the_domain_is_backed_off(inst, runs):
    env, log = fake_remote(inst)
    inst.control("retry-base", "600")
    inst.control("retry-max", "600")
    q = runs(inst, env)
    rc, err = inst.inject(MSG, "alice@example.test", "temp@far.test")
    assert rc == 0, err
    q.wait_log(r"^delivery \S+ to=<temp@far.test> .* status=deferred ")
    [qid] = mess(inst)
    assert inst.run("queue-ctl", "hold", qid).returncode == 0
    assert inst.run("queue-ctl", "release", qid).returncode == 0
    q.wait_log(r"^delivery \S+ to=<temp@far.test> .* status=deferred ", count=2, timeout=15)
    with open(log) as f:
        assert len(f.read().splitlines()) == 2


# ---- queue-ctl -d DOMAIN, ALL, delete and bounce without queue-run ----

def test_queue_ctl_by_domain_and_all(inst):
    for rcpts in (["a@far.test"], ["b@near.test"], ["bob@example.test", "c@FAR.test"]):
        rc, err = inst.inject(MSG, "alice@example.test", *rcpts)
        assert rc == 0, err
    ids = mess(inst)
    r = inst.run("queue-ctl", "-d", "far.test", "delete")
    assert (r.returncode, r.stdout) == (0, b"delete: 2 messages\n"), r.stderr
    assert mess(inst) == [ids[1]]  # at once: queue-run is not running
    r = inst.run("queue-ctl", "hold", "ALL")
    assert (r.returncode, r.stdout) == (0, b"hold: 1 message\n")
    assert os.listdir(inst.path("queue", "hold")) == [ids[1]]
    r = inst.run("queue-ctl", "delete", "-d", "nowhere.test")
    assert (r.returncode, r.stdout) == (0, b"delete: 0 messages\n")
    r = inst.run("queue-ctl", "delete", "ALL")
    assert (r.returncode, r.stdout) == (0, b"delete: 1 message\n")
    assert mess(inst) == [] and os.listdir(inst.path("queue", "hold")) == []
    assert inst.run("queue-ctl", "-d", "far.test", "delete", ids[0]).returncode == 100


def test_bounce_without_queue_run_then_sent_at_start(inst, runs):
    rc, err = inst.inject(MSG, "alice@example.test", "bob@example.test", "x@far.test")
    assert rc == 0, err
    [qid] = mess(inst)
    r = inst.run("queue-ctl", "bounce", qid)
    assert r.returncode == 0
    assert r.stderr == b"queue-ctl: warning: queue-run is not running: the request is applied when it starts\n"
    out = inst.run("queue-list").stdout.decode().splitlines()
    assert out[1:] == ["  bob@example.test: 5.0.0 returned by the postmaster",
                       "  x@far.test: 5.0.0 returned by the postmaster"]
    q = runs(inst)
    q.wait_log(r"^bounce %s to=<alice@example.test> rcpts=2 " % re.escape(qid))
    q.wait_log(r"^done ", count=2)
    assert inst.messages("bob@example.test") == []
    [b] = inst.messages("alice@example.test")
    assert b.count(b"Status: 5.0.0") == 2


# ---- requeue after an alias change ----

def test_requeue_after_an_alias_change(inst, runs):
    inst.add_alias("team@example.test", "carol@example.test")
    inst.control("retry-base", "600")
    inst.control("retry-max", "600")
    tmp = os.path.join(inst.maildir("carol@example.test"), "tmp")
    os.rename(tmp, tmp + ".real")
    os.symlink(tmp + ".real", tmp)  # carol's Maildir refuses: temporary
    q = runs(inst)
    rc, err = inst.inject(MSG, "alice@example.test", "team@example.test", "bob@example.test")
    assert rc == 0, err
    q.wait_log(r"^delivery \S+ to=<carol@example.test> orig_to=<team@example.test> .* status=deferred ")
    q.wait_log(r"^delivery \S+ to=<bob@example.test> .* status=sent ")
    [qid] = mess(inst)
    assert inst.run("mail-alias", "del", "team@example.test").returncode == 0
    inst.add_alias("team@example.test", "alice@example.test", "bob@example.test")
    r = inst.run("queue-ctl", "requeue", qid)
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    q.wait_log(r"^requeue %s rcpts=1$" % re.escape(qid))
    q.wait_log(r"^delivery %s to=<alice@example.test> orig_to=<team@example.test> .* status=sent "
               % re.escape(qid))
    q.wait_log(r"^done %s$" % re.escape(qid))
    assert len(inst.messages("alice@example.test")) == 1
    assert len(inst.messages("bob@example.test")) == 1  # delivered before: not again
    assert os.listdir(tmp + ".real") == [] and os.listdir(
        os.path.join(inst.maildir("carol@example.test"), "new")) == []


def test_requeue_without_queue_run(inst, runs):
    inst.add_alias("team@example.test", "carol@example.test")
    rc, err = inst.inject(MSG, "alice@example.test", "team@example.test")
    assert rc == 0, err
    [qid] = mess(inst)
    # resolved once (the state names carol), then the alias changes while queue-run is down
    with open(inst.path("queue", "state", qid), "w") as f:
        f.write("PBS1 1\nL 1 %d 0 carol@example.test\tx-pillarbox; 4.2.2 over quota\n"
                % (time.time() + 3600))
    assert inst.run("mail-alias", "del", "team@example.test").returncode == 0
    inst.add_alias("team@example.test", "bob@example.test")
    r = inst.run("queue-ctl", "requeue", qid)
    assert r.returncode == 0
    [m] = qlist(inst)
    assert [(x["address"], x["state"], x["attempts"]) for x in m["recipients"]] == \
        [("team@example.test", "new", 0)]
    q = runs(inst)
    q.wait_log(r"^done %s$" % re.escape(qid))
    assert len(inst.messages("bob@example.test")) == 1 and inst.messages("carol@example.test") == []


# ---- queue-list: diagnostics and summary; queue-cat ----

def test_queue_list_diagnostics_and_summary(inst, runs):
    env, log = fake_remote(inst)
    inst.control("retry-base", "600")
    inst.control("retry-max", "600")
    q = runs(inst, env)
    rc, err = inst.inject(MSG, "alice@example.test", "temp@slow.test", "temp2@slow.test",
                          "ok@fast.test")
    assert rc == 0, err
    rc, err = inst.inject(MSG, "", "temp@other-slow.test")
    assert rc == 0, err
    q.wait_log(r"^delivery \S+ to=<temp@other-slow.test> .* status=deferred ")
    q.wait_log(r"^delivery \S+ to=<ok@fast.test> .* status=sent ")
    wait_for(lambda: len(os.listdir(inst.path("queue", "state"))) == 2, what="state files")
    q.stop()
    ids = mess(inst)
    out = inst.run("queue-list").stdout.decode().splitlines()
    assert len(out) == 5, out
    assert re.fullmatch(r"%s \d+s %d <alice@example.test> temp@slow.test:pending-remote/1/next=\+\d+m "
                        r"temp2@slow.test:pending-remote/1/next=\+\d+m ok@fast.test:done"
                        % (re.escape(ids[0]), len(MSG)), out[0]), out[0]
    assert out[1:3] == ["  temp@slow.test: smtp; 451 4.3.0 try later (mx.slow.test)",
                        "  temp2@slow.test: smtp; 451 4.3.0 try later (mx.slow.test)"]
    assert out[3].startswith(ids[1] + " ")
    assert out[4] == "  temp@other-slow.test: smtp; 451 4.3.0 try later (mx.other-slow.test)"
    r = inst.run("queue-list", "-s")
    assert r.returncode == 0
    head = "".join("%6s" % c for c in
                   ["T", "5", "10", "20", "40", "80", "160", "320", "640", "1280", "1280+"])
    w = len("other-slow.test")
    assert r.stdout.decode().splitlines() == [
        " " * w + head,
        "%*s%6d%6d" % (w, "TOTAL", 3, 3) + "%6d" % 0 * 9,
        "%*s%6d%6d" % (w, "slow.test", 2, 2) + "%6d" % 0 * 9,
        "%*s%6d%6d" % (w, "other-slow.test", 1, 1) + "%6d" % 0 * 9]


def test_queue_list_summary_age_buckets(inst):
    d = inst.path("queue", "mess")
    os.makedirs(d, exist_ok=True)
    now = int(time.time())
    env = envelope("alice@example.test", "x@old.test", "y@old.test")
    for i, age in enumerate((60, 7 * 60, 100 * 60, 3 * 86400)):
        with open(os.path.join(d, "%d.%06d.%d" % (now - age, i, 4242)), "wb") as f:
            f.write(b"PBQ1 %d %d %d\n" % (now - age, len(env), len(MSG)) + env + MSG)
    rows = [l.split() for l in inst.run("queue-list", "-s").stdout.decode().splitlines()]
    assert rows[1] == ["TOTAL", "8", "2", "2", "0", "0", "0", "2", "0", "0", "0", "2"]
    assert rows[2] == ["old.test", "8", "2", "2", "0", "0", "0", "2", "0", "0", "0", "2"]


def test_queue_cat_prints_envelope_and_message(inst):
    msg = b"From: alice@example.test\nSubject: cat me\n\nline one\n\nline three\n"
    rc, err = inst.inject(msg, "alice@example.test", "bob@example.test", "x@far.test")
    assert rc == 0, err
    [qid] = mess(inst)
    with open(inst.path("queue", "mess", qid), "rb") as f:
        arrival = f.readline().split()[1].decode()
    r = inst.run("queue-cat", qid)
    assert r.returncode == 0, r.stderr
    env_part = ("*** ENVELOPE RECORDS %s ***\narrival: %s\nsize: %d\nsender: alice@example.test\n"
                "recipient: bob@example.test new\nrecipient: x@far.test new\n"
                % (qid, arrival, len(msg))).encode()
    assert r.stdout == env_part + ("*** MESSAGE CONTENTS %s ***\n" % qid).encode() + msg + \
        b"*** MESSAGE FILE END ***\n"
    assert inst.run("queue-cat", "-e", qid).stdout == env_part
    assert inst.run("queue-cat", "-h", qid).stdout == b"From: alice@example.test\nSubject: cat me\n"
    assert inst.run("queue-cat", "-b", qid).stdout == b"line one\n\nline three\n"
    # after an attempt, the state: the target and its last diagnostic
    with open(inst.path("queue", "state", qid), "w") as f:
        f.write("PBS1 2\nD 1 0 0 bob@example.test\t\n"
                "R 2 0 1 x@far.test\tR=mx.far.test smtp; 451 4.3.0 try later\n")
    assert inst.run("queue-cat", "-e", qid).stdout.decode().splitlines()[-2:] == [
        "recipient: bob@example.test done attempts=1",
        "recipient: x@far.test pending-remote attempts=2 (smtp; 451 4.3.0 try later)"]
    assert inst.run("queue-cat", "1.000000.1").returncode == 100
    assert inst.run("queue-cat", "../etc/passwd").returncode == 100
    assert inst.run("queue-cat").returncode == 100


# ---- the quota-state record (issue 10) ----

def test_quota_state_record_follows_deliveries(inst, runs):
    inst.run("mail-user", "quota", "bob@example.test", "3000", check=True)
    q = runs(inst)
    for i in range(2):
        rc, err = inst.inject(MSG, "alice@example.test", "bob@example.test")
        assert rc == 0, err
    q.wait_log(r"^done ", count=2)
    rec = inst.path("run", "quota", "bob@example.test")
    st = os.stat(rec)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert stat.S_IMODE(os.stat(inst.path("run", "quota")).st_mode) == 0o2750
    used = sum(os.path.getsize(os.path.join(inst.maildir("bob@example.test"), "new", n))
               for n in os.listdir(os.path.join(inst.maildir("bob@example.test"), "new")))
    with open(rec) as f:
        line = f.read()
    m = re.fullmatch(r"PBQS1 (\d+) (\d+) (\d+) (\d+) (\d+)\n", line)
    assert m and m.groups()[:4] == (str(used), "2", "3000", "0"), line
    assert abs(int(m.group(5)) - time.time()) < 60
    # one more that does not fit: refused (temporary, the queue keeps it) and recorded
    inst.control("retry-base", "600")
    inst.control("retry-max", "600")
    rc, err = inst.inject(MSG + b"x" * 3000, "alice@example.test", "bob@example.test")
    assert rc == 0, err
    q.wait_log(r"^delivery \S+ to=<bob@example.test> .* status=deferred \(over quota: Maildir ")
    with open(rec) as f:
        assert f.read().split()[1:5] == [str(used), "2", "3000", "0"]
    assert len(mess(inst)) == 1
    # no record for an account without a quota
    assert not os.path.exists(inst.path("run", "quota", "carol@example.test"))


# ---- delivery log lines (issue 10) ----

def test_delivery_log_lines_name_the_original_recipient(inst, runs):
    inst.add_alias("team@example.test", "bob@example.test", "carol@example.test")
    inst.add_alias("fwd@example.test", "friend@far.test")
    env, log = fake_remote(inst)
    q = runs(inst, env)
    rc, err = inst.inject(MSG, "alice@example.test", "team@example.test", "fwd@example.test",
                          "nobody@example.test")
    assert rc == 0, err
    q.wait_log(r"^done ", count=2)
    [qid] = [l.split()[1] for l in q.text().splitlines() if l.startswith("new ")][:1]
    lines = sorted(l for l in q.text().splitlines() if l.startswith("delivery %s " % qid))
    pat = [r"to=<bob@example.test> orig_to=<team@example.test> relay=local delay=(\S+) "
           r"status=sent \(delivered\)",
           r"to=<carol@example.test> orig_to=<team@example.test> relay=local delay=(\S+) "
           r"status=sent \(delivered\)",
           r"to=<friend@far.test> orig_to=<fwd@example.test> relay=mx.far.test delay=(\S+) "
           r"status=sent \(smtp; 250 2.0.0 ok\)",
           r"to=<nobody@example.test> orig_to=<nobody@example.test> relay=none delay=(\S+) "
           r"status=bounced \(5.1.1 no such user\)"]
    assert len(lines) == 4, lines
    for line, p in zip(sorted(lines, key=lambda l: l.split()[2]), pat):
        m = re.fullmatch(r"delivery %s %s" % (re.escape(qid), p), line)
        assert m, (line, p)
        assert re.fullmatch(r"\d+\.\d\d", m.group(1)) and float(m.group(1)) < 30


# ---- the queue id before the message (QUEUE_IDFD, for smtp-receive's Received:) ----

def test_queue_idfd_tells_the_id_before_the_message_is_read(inst):
    r_id, w_id = os.pipe()
    r_env, w_env = os.pipe()
    p = subprocess.Popen([prog("queue-inject")], stdin=subprocess.PIPE, stdout=r_env,
                         stderr=subprocess.PIPE, pass_fds=(w_id,),
                         env=dict(inst.env, QUEUE_IDFD=str(w_id)))
    os.close(w_id)
    os.close(r_env)
    try:
        first = b""
        while not first.endswith(b"\n"):  # nothing sent yet: the id comes first
            chunk = os.read(r_id, 100)
            assert chunk, "no id before the message"
            first += chunk
        assert re.fullmatch(rb"\d+\.\d{6}\.\d+\n", first)
        assert mess(inst) == [] and in_flight(inst) == []
        p.stdin.write(MSG)
        p.stdin.close()
        os.write(w_env, envelope("alice@example.test", "bob@example.test"))
        os.close(w_env)
        w_env = -1
        assert p.wait(timeout=30) == 0, p.stderr.read()
        assert os.read(r_id, 100) == b""  # nothing more, and closed at exit
    finally:
        os.close(r_id)
        if w_env >= 0:
            os.close(w_env)
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stderr.close()
    assert mess(inst) == [first[:-1].decode()]
    # a refused message leaves nothing, though its id was told
    r_id, w_id = os.pipe()
    inst.control("databytes", "10")
    r = subprocess.run([prog("queue-inject")], input=MSG, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, pass_fds=(w_id,), timeout=30,
                       env=dict(inst.env, QUEUE_IDFD=str(w_id)))
    os.close(w_id)
    told = os.read(r_id, 100)
    os.close(r_id)
    assert r.returncode == 31 and re.fullmatch(rb"\d+\.\d{6}\.\d+\n", told)
    assert mess(inst) == [first[:-1].decode()] and in_flight(inst) == []


def test_bounce_for_root_at_the_host_name_stays_local(inst, runs):
    # cron's mail from root@HOSTNAME (control/me, not a local domain), or a bare "root", bounces
    # to root at the default domain, never out to the Internet
    q = runs(inst)
    for sender in ("root@mx.example.test", "root"):
        rc, err = inst.inject(MSG, sender, "nobody@example.test")
        assert rc == 0, err
    q.wait_log(r"^bounce \S+ to=<root@example.test> rcpts=1 ", count=2)
    q.wait_log(r"^done ", count=4)
    assert not re.search(r"to=<root@mx.example.test>", q.text())
