"""The durable queue: queue-inject, queue-run, queue-list, queue-ctl, driven like a postmaster
would (`printf ... | queue-inject 1<envelope`, queue-run in the foreground, queue-list | grep).

Every queue-run a test starts is stopped by the `qrun` fixture (SIGTERM, then SIGKILL)."""
import email
import email.policy
import json
import glob
import os
import shutil
import re
import signal
import stat
import subprocess
import time

import pytest

from conftest import BIN, base_env, envelope, make_instance, prog, wait_for


# ---- helpers ----

class QueueRun:
    """queue-run in the foreground, its log (stdout) in a file."""

    def __init__(self, inst, env=None):
        self.inst = inst
        self.logpath = inst.path("queue-run.%d.log" % time.monotonic_ns())
        self.log = open(self.logpath, "wb")
        e = dict(inst.env)
        if env:
            e.update(env)
        self.p = subprocess.Popen([prog("queue-run")], stdout=self.log, stderr=subprocess.STDOUT,
                                  env=e)

    def text(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_log(self, pattern, timeout=10, count=1):
        def seen():
            return len(re.findall(pattern, self.text(), re.M)) >= count
        try:
            wait_for(seen, timeout=timeout, what="log line %r" % pattern)
        except AssertionError:
            raise AssertionError("no %r in queue-run's log:\n%s" % (pattern, self.text()))

    def stop(self, timeout=30):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=10)
        self.log.close()
        return self.p.returncode


@pytest.fixture
def qrun():
    runs = []

    def start(inst, env=None):
        r = QueueRun(inst, env)
        runs.append(r)
        return r
    yield start
    for r in runs:
        r.stop()


def inject_raw(inst, message, env_bytes, extra_env=None, timeout=30):
    """queue-inject with arbitrary envelope bytes on fd 1; returns (rc, stderr)."""
    r_env, w_env = os.pipe()
    e = dict(inst.env)
    if extra_env:
        e.update(extra_env)
    p = subprocess.Popen([prog("queue-inject")], stdin=subprocess.PIPE, stdout=r_env,
                         stderr=subprocess.PIPE, env=e)
    os.close(r_env)
    try:
        p.stdin.write(message)
        p.stdin.close()
    except BrokenPipeError:
        pass
    try:
        os.write(w_env, env_bytes)
    except BrokenPipeError:
        pass
    os.close(w_env)
    err = p.stderr.read()
    return p.wait(timeout=timeout), err


def mess(inst):
    d = inst.path("queue", "mess")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def tmpfiles(inst):
    """Files being written or left behind: in tmp/ (spills) and intake/N/ (message files)."""
    found = []
    for d in [inst.path("queue", "tmp")] + glob.glob(inst.path("queue", "intake", "*")):
        if os.path.isdir(d):
            found += os.listdir(d)
    return sorted(found)


def qlist(inst, *args):
    r = inst.run("queue-list", "-j", *args)
    assert r.returncode == 0, r.stderr
    return [json.loads(l) for l in r.stdout.decode().splitlines()]


MSG = b"From: alice@example.test\nTo: bob@example.test\nSubject: queue test\n\nhello, bob\n"


@pytest.fixture
def users(instance):
    instance.add_user("alice@example.test")
    instance.add_user("bob@example.test")
    instance.add_user("carol@example.test")
    instance.control("retry-base", "1")
    instance.control("retry-max", "2")
    return instance


# ---- queue-inject ----

def test_inject_writes_one_complete_file(instance):
    rc, err = instance.inject(MSG, "alice@example.test", "bob@example.test", "x@remote.test")
    assert rc == 0, err
    ids = mess(instance)
    assert len(ids) == 1 and re.fullmatch(r"\d+\.\d{6}\.\d+(\.\d+)?", ids[0])
    assert tmpfiles(instance) == []
    with open(instance.path("queue", "mess", ids[0]), "rb") as f:
        data = f.read()
    line, rest = data.split(b"\n", 1)
    magic, arrival, envlen, msglen = line.split(b" ")
    assert magic == b"PBQ1" and abs(int(arrival) - time.time()) < 60
    env = envelope("alice@example.test", "bob@example.test", "x@remote.test")
    assert int(envlen) == len(env) and rest[:len(env)] == env
    assert int(msglen) == len(MSG) and rest[len(env):] == MSG
    assert stat.S_ISFIFO(os.stat(instance.path("queue", "trigger")).st_mode)


def inode_flags(path):
    """ext4's inode flags of path (FS_IOC_GETFLAGS), or None where the file system has none."""
    import array
    import fcntl
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        a = array.array("i", [0])
        fcntl.ioctl(fd, 0x80086601, a, True)
        return a[0]
    except OSError:
        return None
    finally:
        os.close(fd)


def test_mailroot_and_intake_are_tops_of_hierarchies(instance):
    # ext4's +T (FS_TOPDIR_FL): mail-instance sets it on MAILROOT (queue/, mail/ placed apart
    # from the parent's group), queue_init on queue/intake/ (intake/N/ spread over groups);
    # doc/queue.md, "Layout"
    rc, err = instance.inject(MSG, "alice@example.test", "bob@example.test")
    assert rc == 0, err
    root, intake = inode_flags(instance.path()), inode_flags(instance.path("queue", "intake"))
    if root is None or intake is None:
        pytest.skip("no inode flags on this file system (not ext4)")
    TOPDIR = 0x00020000
    assert root & TOPDIR
    assert intake & TOPDIR


def test_inject_reports_the_id_on_queue_idfd(instance):
    envpath = instance.path("env.bin")
    with open(envpath, "wb") as f:
        f.write(envelope("a@example.test", "bob@example.test"))
    r, w = os.pipe()
    try:
        with open(envpath, "rb") as ef:
            p = subprocess.run([prog("queue-inject")], input=MSG, stdout=ef,
                               stderr=subprocess.PIPE, pass_fds=(w,), timeout=30,
                               env=dict(instance.env, QUEUE_IDFD=str(w)))
        os.close(w)
        w = -1
        qid = os.read(r, 200).decode()
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert p.returncode == 0, p.stderr
    assert qid.endswith("\n") and [qid[:-1]] == mess(instance)


def test_inject_large_message_spills_and_round_trips(users, qrun):
    big = MSG + (b"0123456789abcdef" * 63 + b"\n") * 300  # ~300 KB, past the 64 KB in memory
    rc, err = users.inject(big, "alice@example.test", "bob@example.test")
    assert rc == 0, err
    assert tmpfiles(users) == []
    q = qrun(users)
    q.wait_log(r"^done ")
    got = users.messages("bob@example.test")
    assert len(got) == 1
    assert got[0].endswith(big)
    head = got[0][:-len(big)]
    assert b"Return-Path: <alice@example.test>" in head
    assert b"Delivered-To: bob@example.test" in head


# Bad input: each with its exit code, and nothing committed (nothing in mess/, nothing in tmp/).
BAD_ENVELOPES = [
    ("no F record", b"Tbob@example.test\0\0", 91),
    ("no T record", b"Falice@example.test\0\0", 91),
    ("empty envelope", b"", 91),
    ("truncated after a record", b"Falice@example.test\0Tbob@example.test\0", 91),
    ("truncated inside a record", b"Falice@example.test\0Tbob@exa", 91),
    ("NUL inside an address", b"Falice@example.test\0Tbob\0@example.test\0\0", 91),
    ("CR inside an address", b"Falice@example.test\0Tbob\r@example.test\0\0", 91),
    ("LF inside an address", b"Falice@example.test\0Tbob@example.test\nRCPT\0\0", 91),
    ("LF inside the sender", b"Fali\nce@example.test\0Tbob@example.test\0\0", 91),
    ("empty recipient", b"Falice@example.test\0T\0\0", 91),
    ("junk after the end", b"Falice@example.test\0Tbob@example.test\0\0junk", 91),
    ("address over the limit", b"Falice@example.test\0T" + b"b" * 300 + b"@example.test\0\0", 11),
    ("sender over the limit", b"F" + b"a" * 300 + b"@example.test\0Tbob@example.test\0\0", 11),
]


@pytest.mark.parametrize("what,env,code", BAD_ENVELOPES, ids=[b[0] for b in BAD_ENVELOPES])
def test_inject_refuses_bad_envelopes(instance, what, env, code):
    rc, err = inject_raw(instance, MSG, env)
    assert rc == code, (what, err)
    assert err.startswith(b"queue-inject: fatal: ")
    assert mess(instance) == [] and tmpfiles(instance) == []


def test_inject_refuses_too_many_recipients(instance):
    instance.control("queue-rcptmax", "5")
    rc, err = instance.inject(MSG, "a@example.test", *["r%d@example.test" % i for i in range(6)])
    assert rc == 31, err
    assert b"too many recipients" in err
    rc, err = instance.inject(MSG, "a@example.test", *["r%d@example.test" % i for i in range(5)])
    assert rc == 0, err
    assert len(mess(instance)) == 1


def test_inject_refuses_a_message_over_databytes(instance):
    instance.control("databytes", "100000")
    rc, err = instance.inject(b"x" * 100001, "a@example.test", "bob@example.test")
    assert rc == 31 and b"databytes" in err, err
    assert mess(instance) == [] and tmpfiles(instance) == []
    rc, err = instance.inject(b"x" * 100000, "a@example.test", "bob@example.test")
    assert rc == 0, err


def test_inject_address_limit_is_settable(instance):
    instance.control("queue-addrmax", "20")
    rc, err = instance.inject(MSG, "a@example.test", "twentyone.chars@e.tt")
    assert rc == 0, err
    rc, err = instance.inject(MSG, "a@example.test", "twentyone.chars@ex.tt")
    assert rc == 11, err


@pytest.mark.parametrize("name,value", [("databytes", "12x"), ("queue-rcptmax", "lots"),
                                        ("queue-addrmax", "-1")])
def test_inject_junk_control_file_is_a_temporary_error(instance, name, value):
    instance.control(name, value)
    rc, err = instance.inject(MSG, "a@example.test", "bob@example.test")
    assert rc == 55, err
    assert ("control/" + name).encode() in err
    assert mess(instance) == []


def test_inject_times_out_on_a_silent_envelope(instance):
    instance.control("queue-timeout", "1")
    r_env, w_env = os.pipe()
    p = subprocess.Popen([prog("queue-inject")], stdin=subprocess.PIPE, stdout=r_env,
                         stderr=subprocess.PIPE, env=instance.env)
    os.close(r_env)
    try:
        p.stdin.write(MSG)
        p.stdin.close()
        assert p.wait(timeout=20) == 52
    finally:
        os.close(w_env)
        if p.poll() is None:
            p.kill()
            p.wait()
    assert mess(instance) == [] and tmpfiles(instance) == []


def test_inject_on_a_full_filesystem_is_temporary_and_invisible(instance):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    q = instance.path("queue")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", q],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount tmpfs: %r" % r.stderr)
    try:
        rc, err = instance.inject(MSG, "a@example.test", "bob@example.test")
        assert rc == 0, err  # small: fits
        n0 = mess(instance)
        for size in (40_000, 300_000):  # in memory (one write) and spilled
            rc, err = instance.inject(b"y" * size * 2, "a@example.test", "bob@example.test")
            if rc == 0:
                continue
            assert rc in (53, 62), err  # temporary, qmail-queue's write error
        # fill it up, then one more must fail temporarily
        codes = []
        for i in range(20):
            rc, err = instance.inject(b"z" * 60_000, "a@example.test", "bob@example.test")
            codes.append(rc)
        assert 53 in codes, codes
        assert all(c in (0, 53) for c in codes), codes
        # nothing half-written is visible: every file in mess/ is complete
        for qid in mess(instance):
            with open(os.path.join(q, "mess", qid), "rb") as f:
                data = f.read()
            line, rest = data.split(b"\n", 1)
            _, _, envlen, msglen = line.split(b" ")
            assert len(rest) == int(envlen) + int(msglen)
        assert tmpfiles(instance) == []
        assert set(n0) <= set(mess(instance))
    finally:
        subprocess.run(["umount", "-l", q], capture_output=True)


def test_inject_ids_are_unique_under_concurrency(instance):
    procs = []
    for i in range(40):
        r_env, w_env = os.pipe()
        p = subprocess.Popen([prog("queue-inject")], stdin=subprocess.PIPE, stdout=r_env,
                             stderr=subprocess.PIPE, env=instance.env)
        os.close(r_env)
        procs.append((p, w_env, i))
    for p, w, i in procs:
        p.stdin.write(b"Subject: %d\n\nm\n" % i)
        p.stdin.close()
        os.write(w, envelope("a@example.test", "bob@example.test"))
        os.close(w)
    for p, w, i in procs:
        assert p.wait(timeout=30) == 0, p.stderr.read()
        p.stderr.close()
    ids = mess(instance)
    assert len(ids) == 40 and len(set(ids)) == 40


# ---- queue-run: local delivery, aliases, bounces ----

def test_delivery_into_the_right_maildirs(users, qrun):
    users.add_alias("team@example.test", "bob@example.test", "carol@example.test")
    users.add_alias("@example.test", "carol@example.test")
    q = qrun(users)
    rc, err = users.inject(MSG, "alice@example.test", "bob+news@example.test", "team@example.test",
                           "whoever@example.test")
    assert rc == 0, err
    q.wait_log(r"^done ")
    bob = users.messages("bob@example.test")
    carol = users.messages("carol@example.test")
    assert len(bob) == 1  # +tag and the list: one copy
    assert len(carol) == 1  # the list and the catch-all: one copy
    for m in bob + carol:
        assert m.endswith(MSG)
        assert m.startswith(b"Return-Path: <alice@example.test>\n")
    assert b"Delivered-To: bob@example.test\n" in bob[0]
    assert mess(users) == [] and os.listdir(users.path("queue", "state")) == []
    log = q.text()
    assert re.search(r"^new \S+ from=<alice@example.test> rcpts=3 size=%d$" % len(MSG), log, re.M)
    assert len(re.findall(r"^delivery \S+ to=<\S+> orig_to=<\S+> relay=local delay=\d+\.\d\d status=sent \(delivered\)$", log, re.M)) == 2


def test_unknown_recipient_bounces_rfc3464(users, qrun):
    q = qrun(users)
    rc, err = users.inject(MSG, "alice@example.test", "nobody@example.test", "bob@example.test")
    assert rc == 0, err
    q.wait_log(r"^done ", count=2)  # the message and its bounce
    assert len(users.messages("bob@example.test")) == 1
    got = users.messages("alice@example.test")
    assert len(got) == 1
    raw = got[0].split(b"\n", 2)[2]  # past Return-Path and Delivered-To
    assert got[0].startswith(b"Return-Path: <>\n")
    m = email.message_from_bytes(raw, policy=email.policy.default)
    assert m.get_content_type() == "multipart/report"
    assert m.get_param("report-type") == "delivery-status"
    assert "MAILER-DAEMON@mx.example.test" in m["From"]
    assert "alice@example.test" in m["To"]
    parts = list(m.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status",
                                                     "text/rfc822-headers"]
    ds = parts[1]
    blocks = [b for b in ds.get_payload()]
    assert "mx.example.test" in blocks[0]["Reporting-MTA"]
    rcpt = blocks[1]
    assert rcpt["Final-Recipient"].lower().endswith("nobody@example.test")
    assert rcpt["Action"].strip() == "failed"
    assert rcpt["Status"].strip() == "5.1.1"
    assert "no such user" in rcpt["Diagnostic-Code"]
    assert len(blocks) == 2  # bob was delivered: not in the report
    hdrs = parts[2].get_content()
    assert "Subject: queue test" in (hdrs if isinstance(hdrs, str) else hdrs.decode())
    assert re.search(r"^bounce \S+ to=<alice@example.test> rcpts=1 id=\S+$", q.text(), re.M)


def test_null_sender_failure_is_not_bounced_to_the_sender(users, qrun):
    # mail-user add made postmaster@example.test -> alice (RFC 5321); this test wants none
    users.run("mail-alias", "del", "postmaster@example.test", check=True)
    q = qrun(users)
    rc, err = users.inject(MSG, "", "nobody@example.test")
    assert rc == 0, err
    # the failure goes to the postmaster, who does not exist here: dropped, with a log line
    q.wait_log(r"^bounce \S+ dropped: null sender", timeout=15)
    q.wait_log(r"^done ", count=2)
    assert users.messages("alice@example.test") == []
    wait_for(lambda: mess(users) == [], what="empty queue")


def test_failed_bounce_goes_to_the_postmaster(users, qrun):
    users.add_user("postmaster@example.test")
    q = qrun(users)
    rc, err = users.inject(MSG, "", "nobody@example.test")
    assert rc == 0, err
    q.wait_log(r"^bounce \S+ to=<postmaster@example.test>")
    wait_for(lambda: users.messages("postmaster@example.test"), what="double bounce")
    pm = users.messages("postmaster@example.test")[0]
    assert b"nobody@example.test" in pm
    wait_for(lambda: mess(users) == [], what="empty queue")


def test_permanent_failure_of_a_bounce_to_a_lost_sender_reaches_postmaster(users, qrun):
    users.add_user("postmaster@example.test")
    q = qrun(users)
    rc, err = users.inject(MSG, "ghost@example.test", "nobody@example.test")
    assert rc == 0, err
    # message -> bounce to ghost (unknown) -> bounce of the bounce to postmaster
    q.wait_log(r"^done ", count=3)
    assert len(users.messages("postmaster@example.test")) == 1
    assert mess(users) == []


# ---- retries, lifetime, faults during delivery ----

def break_maildir(inst, address):
    """deliver-maildir refuses a tmp/ that is a symbolic link: a temporary failure (111)."""
    tmp = os.path.join(inst.maildir(address), "tmp")
    os.rename(tmp, tmp + ".real")
    os.symlink(tmp + ".real", tmp)
    return lambda: (os.unlink(tmp), os.rename(tmp + ".real", tmp))


def test_temporary_failure_stays_queued_then_delivers(users, qrun):
    users.control("retry-base", "60")
    users.control("retry-max", "60")
    fix = break_maildir(users, "bob@example.test")
    q = qrun(users)
    rc, err = users.inject(MSG, "alice@example.test", "bob@example.test", "carol@example.test")
    assert rc == 0, err
    q.wait_log(r"^delivery \S+ to=<bob@example.test> .* status=deferred ")
    q.wait_log(r"^delivery \S+ to=<carol@example.test> .* status=sent ")
    wait_for(lambda: os.listdir(users.path("queue", "state")), what="state file")
    [m] = qlist(users)
    st = {r["address"]: r for r in m["recipients"]}
    assert st["bob@example.test"]["state"] == "pending-local"
    assert st["bob@example.test"]["attempts"] == 1
    assert st["bob@example.test"]["next"] > time.time() + 30
    assert st["carol@example.test"]["state"] == "done"
    text = users.run("queue-list").stdout.decode()
    assert re.search(r"bob@example.test:pending-local/1/next=\+\d+[sm]", text), text
    fix()
    r = users.run("queue-ctl", "flush", m["id"])
    assert r.returncode == 0, r.stderr
    q.wait_log(r"^done ")
    assert len(users.messages("bob@example.test")) == 1
    assert len(users.messages("carol@example.test")) == 1  # not delivered twice


def test_full_disk_during_delivery_leaves_the_message_queued(users, qrun):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    md = users.maildir("bob@example.test")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", md],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount tmpfs")
    try:
        for sub in ("tmp", "new", "cur"):
            os.mkdir(os.path.join(md, sub))
        q = qrun(users)
        big = MSG + b"x" * 200_000
        rc, err = users.inject(big, "alice@example.test", "bob@example.test")
        assert rc == 0, err
        q.wait_log(r"^delivery \S+ to=<bob@example.test> .* status=deferred ")
        assert len(mess(users)) == 1
        assert os.listdir(os.path.join(md, "new")) == []
        assert os.listdir(os.path.join(md, "tmp")) == []
        assert "done" not in q.text()
    finally:
        q.stop()
        subprocess.run(["umount", "-l", md], capture_output=True)
    [m] = qlist(users)
    assert m["recipients"][0]["state"] == "pending-local"


def test_queue_lifetime_bounces_with_4_4_7(users, qrun):
    users.control("queue-lifetime", "2")
    fix = break_maildir(users, "bob@example.test")
    q = qrun(users)
    rc, err = users.inject(MSG, "alice@example.test", "bob@example.test")
    assert rc == 0, err
    q.wait_log(r"^delivery \S+ to=<bob@example.test> .* status=bounced \(4.4.7 message expired", timeout=20)
    q.wait_log(r"^done ", count=2)
    fix()
    [b] = users.messages("alice@example.test")
    m = email.message_from_bytes(b.split(b"\n", 2)[2], policy=email.policy.default)
    ds = list(m.iter_parts())[1].get_payload()
    assert ds[1]["Status"].strip() == "4.4.7", b.decode()  # RFC 3463 X.4.7 (issue 10)
    assert ds[1]["Action"].strip() == "failed"
    assert users.messages("bob@example.test") == []


def test_corrupt_queue_files_are_quarantined(users, qrun):
    rc, err = users.inject(MSG, "alice@example.test", "bob@example.test")
    assert rc == 0, err
    [good] = mess(users)
    with open(users.path("queue", "mess", good), "rb") as f:
        data = f.read()
    d = users.path("queue", "mess")
    bad = {
        "1700000000.000001.1": data[:-5],                       # truncated message
        "1700000000.000002.1": data[:20],                        # truncated header+envelope
        "1700000000.000003.1": b"garbage, not a queue file\n",  # no header at all
        "1700000000.000004.1": data.replace(b"PBQ1 ", b"PBQ1 x", 1),
        "1700000000.000005.1": b"",
    }
    for name, content in bad.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(content)
    q = qrun(users)
    for name in bad:
        q.wait_log(r"^quarantine %s: " % re.escape(name))
    q.wait_log(r"^done %s$" % re.escape(good))
    assert sorted(os.listdir(users.path("queue", "quarantine"))) == sorted(bad)
    assert len(users.messages("bob@example.test")) == 1  # only the good one, never a part
    assert q.p.poll() is None  # still running
    rc, err = users.inject(MSG, "alice@example.test", "carol@example.test")
    q.wait_log(r"^done ", count=2)


def test_unreadable_state_file_means_try_again(users, qrun):
    rc, err = users.inject(MSG, "alice@example.test", "bob@example.test")
    [qid] = mess(users)
    with open(users.path("queue", "state", qid), "w") as f:
        f.write("PBS1 3\nnonsense\n")
    q = qrun(users)
    q.wait_log(r"^done ")
    assert len(users.messages("bob@example.test")) == 1


def test_stale_temporary_files_are_removed_at_start(users, qrun):
    os.makedirs(users.path("queue", "tmp"), exist_ok=True)
    old = users.path("queue", "tmp", "1600000000.000000.1")
    new = users.path("queue", "tmp", "9999.000000.2")
    for p in (old, new):
        with open(p, "wb") as f:
            f.write(b"PBQ1 1 2 3\nhalf")
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    os.makedirs(users.path("queue", "state"), exist_ok=True)
    orphan = users.path("queue", "state", "1600000000.000000.3")
    with open(orphan, "w") as f:
        f.write("PBS1 0\n")
    q = qrun(users)
    q.wait_log(r"^removed stale tmp/1600000000.000000.1$")
    assert os.path.exists(new) and not os.path.exists(old)
    wait_for(lambda: not os.path.exists(orphan), what="orphan state removed")
    assert users.messages("bob@example.test") == []  # a half-written file is never delivered


def inject_as_nobody(inst, message, sender, *rcpts):
    """queue-inject the qmail-queue way, run as the unprivileged user nobody (setpriv)."""
    r_env, w_env = os.pipe()
    os.write(w_env, envelope(sender, *rcpts))
    os.close(w_env)
    p = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
                        prog("queue-inject")], input=message, stdout=r_env,
                       stderr=subprocess.PIPE, env=inst.env, timeout=30)
    os.close(r_env)
    return p.returncode, p.stderr


def test_inject_uses_tmp_where_intake_may_not_be_written(shared_tmp):
    # a queue from before intake/ whose intake/N/ another uid made (EACCES) still takes mail,
    # through tmp/ as before intake/
    inst = make_instance(os.path.join(shared_tmp, "inst"))
    q = inst.path("queue")
    shutil.rmtree(q)
    os.mkdir(q, 0o755)
    shutil.chown(q, "nobody", "nogroup")
    rc, err = inject_as_nobody(inst, MSG, "a@example.test", "bob@example.test")
    assert rc == 0, err                                  # the queue's directories, nobody's
    shutil.rmtree(os.path.join(q, "intake"))
    for i in range(16):
        os.makedirs(os.path.join(q, "intake", str(i)), 0o755)   # root's, as before an upgrade
    rc, err = inject_as_nobody(inst, MSG, "a@example.test", "carol@example.test")
    assert rc == 0, err
    assert len(mess(inst)) == 2
    for qid in mess(inst):
        with open(os.path.join(q, "mess", qid), "rb") as f:
            assert f.read().endswith(MSG)
    assert tmpfiles(inst) == []


def test_inject_fails_where_intake_is_broken(instance):
    # any other failure in intake/ (here: a file in its place) is the injection's, temporary
    # (62, trouble creating files in the queue), as it was in tmp/: no detour
    q = instance.path("queue")
    shutil.rmtree(os.path.join(q, "intake"))
    with open(os.path.join(q, "intake"), "w") as f:
        f.write("not a directory\n")
    rc, err = instance.inject(MSG, "a@example.test", "bob@example.test")
    assert rc == 62, err
    assert mess(instance) == []
    assert os.listdir(os.path.join(q, "tmp")) == []


def test_stale_intake_files_are_removed_at_start(users, qrun):
    # what a killed injector leaves is in intake/N/ (lib/queue writes each message there)
    rc, err = users.inject(MSG, "alice@example.test", "bob@example.test")
    assert rc == 0, err
    assert sorted(os.listdir(users.path("queue", "intake"))) == sorted(str(i) for i in range(16))
    old = users.path("queue", "intake", "7", "1600000000.000000.1")
    new = users.path("queue", "intake", "12", "9999.000000.2")
    for p in (old, new):
        with open(p, "wb") as f:
            f.write(b"PBQ1 1 2 3\nhalf")
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    q = qrun(users)
    q.wait_log(r"^removed stale intake/7/1600000000.000000.1$")
    assert os.path.exists(new) and not os.path.exists(old)
    wait_for(lambda: len(users.messages("bob@example.test")) == 1, what="the message delivered")


def test_sigterm_waits_for_running_deliveries(users, qrun, tmp_path):
    # a deliver-maildir that takes its time, ahead of the real one on PATH
    slow = tmp_path / "slowbin"
    slow.mkdir()
    (slow / "deliver-maildir").write_text('#!/bin/sh\nsleep 1\nexec %s "$@"\n'
                                          % prog("deliver-maildir"))
    os.chmod(slow / "deliver-maildir", 0o755)
    env = {"PATH": str(slow) + ":" + users.env["PATH"]}
    for i in range(3):
        rc, err = users.inject(MSG, "alice@example.test", "bob@example.test")
        assert rc == 0, err
    q = qrun(users, env)
    q.wait_log(r"^new ", count=3)
    t0 = time.monotonic()
    assert q.stop() == 0
    assert time.monotonic() - t0 >= 0.5  # it waited for the children
    log = q.text()
    assert "stopping" in log and log.rstrip().endswith("stopped")
    delivered = len(users.messages("bob@example.test"))
    assert delivered == 3
    assert mess(users) == []
    assert len(re.findall(r"^done ", log, re.M)) == 3


def test_concurrency_local_is_respected(users, qrun, tmp_path):
    users.control("concurrency-local", "2")
    spy = tmp_path / "spybin"
    spy.mkdir()
    marks = tmp_path / "marks"
    marks.mkdir()
    (spy / "deliver-maildir").write_text(
        '#!/bin/sh\nn=$(ls %s | wc -l); echo $n >> %s/../counts; touch %s/$$; sleep 0.3\n'
        'rm %s/$$\nexec %s "$@"\n' % (marks, marks, marks, marks, prog("deliver-maildir")))
    os.chmod(spy / "deliver-maildir", 0o755)
    for i in range(8):
        rc, err = users.inject(MSG, "alice@example.test", "bob@example.test")
        assert rc == 0
    q = qrun(users, {"PATH": str(spy) + ":" + users.env["PATH"]})
    q.wait_log(r"^done ", count=8, timeout=30)
    counts = [int(x) for x in (tmp_path / "counts").read_text().split()]
    assert max(counts) <= 1  # at most one other running when one starts: 2 at once
    assert len(users.messages("bob@example.test")) == 8


# ---- queue-list and queue-ctl ----

def test_queue_list_text_and_json(users):
    rc, _ = users.inject(MSG, "alice@example.test", "bob@example.test", "x@remote.test")
    rc2, _ = users.inject(MSG + b"more\n", "", "carol@example.test")
    assert rc == rc2 == 0
    ids = mess(users)
    r = users.run("queue-list")
    lines = r.stdout.decode().splitlines()
    assert r.returncode == 0 and len(lines) == 2
    assert re.fullmatch(r"%s \d+s %d <alice@example.test> bob@example.test:new x@remote.test:new"
                        % (re.escape(ids[0]), len(MSG)), lines[0]), lines[0]
    assert lines[1].startswith(ids[1]) and " <> " in lines[1]
    js = qlist(users)
    assert [j["id"] for j in js] == ids
    assert js[0]["sender"] == "alice@example.test" and js[0]["size"] == len(MSG)
    assert [x["address"] for x in js[0]["recipients"]] == ["bob@example.test", "x@remote.test"]
    assert js[1]["sender"] == "" and js[1]["held"] is False
    assert qlist(users, ids[1])[0]["id"] == ids[1]
    r = users.run("queue-list", "1.000000.1")
    assert r.returncode == 100
    r = users.run("queue-list", "../etc")
    assert r.returncode == 100


def test_queue_ctl_hold_release_delete_bounce(users, qrun):
    ids = []
    for i in range(3):
        users.inject(MSG, "alice@example.test", "bob@example.test")
        ids.append(sorted(set(mess(users)) - set(ids))[0])
    for qid in ids:
        r = users.run("queue-ctl", "hold", qid)
        assert r.returncode == 0, r.stderr
    assert all(m["held"] for m in qlist(users))
    q = qrun(users)
    q.wait_log(r"^start ")
    time.sleep(0.5)  # give it a chance to (wrongly) deliver
    assert users.messages("bob@example.test") == []
    r = users.run("queue-ctl", "release", ids[0])
    assert r.returncode == 0, r.stderr
    q.wait_log(r"^done %s$" % re.escape(ids[0]))
    r = users.run("queue-ctl", "delete", ids[1])
    assert r.returncode == 0, r.stderr
    q.wait_log(r"^deleted %s$" % re.escape(ids[1]))
    r = users.run("queue-ctl", "bounce", ids[2])
    assert r.returncode == 0, r.stderr
    q.wait_log(r"^bounce %s to=<alice@example.test>" % re.escape(ids[2]))
    q.wait_log(r"^done ", count=3)  # ids[0], ids[2], the bounce
    assert len(users.messages("bob@example.test")) == 1
    assert len(users.messages("alice@example.test")) == 1
    wait_for(lambda: mess(users) == [], what="empty queue")
    assert users.run("queue-ctl", "hold", ids[0]).returncode == 100  # gone
    assert users.run("queue-ctl", "frobnicate", ids[0]).returncode == 100
    assert users.run("queue-ctl").returncode == 100
    assert users.run("queue-ctl", "delete", "../../etc/passwd").returncode == 100


def test_flush_without_queue_run_warns(users):
    r = users.run("queue-ctl", "flush")
    assert r.returncode == 0 and b"not running" in r.stderr


# ---- remote recipients (smtp-send contract, with a scripted smtp-send) ----

FAKE_SMTP_SEND = r'''#!/bin/sh
# records its arguments, then answers per recipient from $FAKE_ANSWERS (by address)
dom=$1; shift; sender=$1; shift
echo "$dom $sender $*" >> "$FAKE_LOG"
cat > /dev/null
for r in "$@"; do
  case "$r" in
    *perm*) printf 'P\t%s\tmx.%s\t550 5.1.1 <%s>: user unknown\n' "$r" "$dom" "$r" ;;
    *temp*) printf 'T\t%s\tmx.%s\t451 4.3.0 try later\n' "$r" "$dom" ;;
    *) printf 'D\t%s\tmx.%s\t250 2.0.0 ok\n' "$r" "$dom" ;;
  esac
done
'''


@pytest.fixture
def fake_remote(users, tmp_path):
    b = tmp_path / "fakebin"
    b.mkdir()
    (b / "smtp-send").write_text(FAKE_SMTP_SEND)
    os.chmod(b / "smtp-send", 0o755)
    log = tmp_path / "smtp-send.log"
    return {"PATH": str(b) + ":" + users.env["PATH"], "FAKE_LOG": str(log)}, log


def test_remote_recipients_grouped_by_domain(users, qrun, fake_remote):
    env, log = fake_remote
    users.add_alias("fwd@example.test", "friend@far.test")
    q = qrun(users, env)
    rc, err = users.inject(MSG, "alice@example.test", "a@far.test", "b@near.test", "c@far.test",
                           "fwd@example.test", "bob@example.test")
    assert rc == 0, err
    q.wait_log(r"^done ")
    calls = sorted(log.read_text().splitlines())
    assert calls == ["far.test alice@example.test a@far.test c@far.test friend@far.test",
                     "near.test alice@example.test b@near.test"]
    assert len(users.messages("bob@example.test")) == 1
    assert len(re.findall(r"^delivery \S+ to=<\S+> orig_to=<\S+> relay=mx\.\S+ delay=\S+ status=sent \(smtp; 250 2.0.0 ok\)$", q.text(), re.M)) == 4


def test_remote_permanent_failure_bounces_with_remote_diagnostic(users, qrun, fake_remote):
    env, log = fake_remote
    q = qrun(users, env)
    rc, err = users.inject(MSG, "alice@example.test", "perm@far.test", "ok@far.test")
    assert rc == 0, err
    q.wait_log(r"^done ", count=2)
    [b] = users.messages("alice@example.test")
    m = email.message_from_bytes(b.split(b"\n", 2)[2], policy=email.policy.default)
    ds = list(m.iter_parts())[1].get_payload()
    assert len(ds) == 2
    assert ds[1]["Final-Recipient"].endswith("perm@far.test")
    assert ds[1]["Status"].strip() == "5.1.1"
    assert "mx.far.test" in ds[1]["Remote-MTA"]
    assert ds[1]["Diagnostic-Code"].startswith("smtp;")
    assert "550 5.1.1" in ds[1]["Diagnostic-Code"]


def test_remote_temporary_failure_retries_and_domain_backs_off(users, qrun, fake_remote):
    env, log = fake_remote
    users.control("retry-base", "1")
    users.control("retry-max", "1")
    users.control("queue-lifetime", "3")
    q = qrun(users, env)
    rc, err = users.inject(MSG, "alice@example.test", "temp@slow.test")
    assert rc == 0, err
    q.wait_log(r"^delivery \S+ to=<temp@slow.test> .* status=deferred \(smtp; 451 4.3.0 try later\)$")
    q.wait_log(r"^delivery \S+ to=<temp@slow.test> .* status=bounced \(4.4.7 message expired", timeout=20)
    q.wait_log(r"^done ", count=2)
    n = len(log.read_text().splitlines())
    assert 2 <= n <= 8, n  # retried, but not hammered
    [b] = users.messages("alice@example.test")
    assert b"Status: 4.4.7" in b and b"451 4.3.0 try later" in b


def test_smtp_send_missing_is_temporary(users, qrun, tmp_path):
    # PATH without smtp-send: forwarders stay queued as remote recipients
    only = tmp_path / "onlybin"
    only.mkdir()
    os.symlink(prog("deliver-maildir"), only / "deliver-maildir")
    users.add_alias("fwd@example.test", "friend@far.test")
    users.control("retry-base", "300")
    q = qrun(users, {"PATH": str(only) + ":/usr/bin:/bin"})
    rc, err = users.inject(MSG, "alice@example.test", "fwd@example.test")
    assert rc == 0, err
    q.wait_log(r"^delivery \S+ to=<friend@far.test> .* status=deferred ")
    wait_for(lambda: os.listdir(users.path("queue", "state")), what="state file")
    [m] = qlist(users)
    [r] = m["recipients"]
    assert r["address"] == "friend@far.test" and r["state"] == "pending-remote"
    assert r["attempts"] == 1 and r["next"] > time.time()
    assert "pending-remote" in users.run("queue-list").stdout.decode()


@pytest.mark.parametrize("name,value", [("concurrency-local", "ten"), ("retry-base", "4m"),
                                        ("queue-lifetime", "5 days")])
def test_queue_run_refuses_junk_control_files(users, name, value):
    users.control(name, value)
    r = users.run("queue-run", timeout=30)
    assert r.returncode == 100, r
    assert ("control/" + name).encode() in r.stderr


def test_queue_run_survives_an_empty_alias_and_a_loop(users, qrun):
    users.add_alias("loop1@example.test", "loop2@example.test")
    # mail-alias refuses to close a loop (issue 10); one made by hand reaches the queue
    with open(users.path("control", "aliases"), "a") as f:
        f.write("loop2@example.test: loop1@example.test\n")
    assert users.run("mail-alias", "rebuild").returncode == 0
    q = qrun(users)
    rc, err = users.inject(MSG, "alice@example.test", "loop1@example.test", "bob@example.test")
    assert rc == 0, err
    q.wait_log(r"^done ", count=2)
    assert len(users.messages("bob@example.test")) == 1
    [b] = users.messages("alice@example.test")
    assert b"5.4.6" in b or b"5.1.1" in b


SLOW_SMTP_SEND = r'''#!/bin/sh
# counts how many of us run at once for a domain, then delivers everything
dom=$1; shift; shift
d="$FAKE_DIR/$dom"; a="$FAKE_DIR/all"; mkdir -p "$d" "$a"
ls "$d" | wc -l >> "$FAKE_DIR/counts.$dom"
ls "$a" | wc -l >> "$FAKE_DIR/counts.all"
touch "$d/$$" "$a/$$"; sleep 0.3; rm "$d/$$" "$a/$$"
cat > /dev/null
for r in "$@"; do printf 'D\t%s\tmx.%s\t250 ok\n' "$r" "$dom"; done
'''


def test_remote_concurrency_per_domain_and_overall(users, qrun, tmp_path):
    b = tmp_path / "slowbin"
    b.mkdir()
    (b / "smtp-send").write_text(SLOW_SMTP_SEND)
    os.chmod(b / "smtp-send", 0o755)
    users.control("concurrency-domain", "2")
    users.control("concurrency-remote", "3")
    for i in range(6):
        for dom in ("one.test", "two.test"):
            rc, err = users.inject(MSG, "alice@example.test", "r%d@%s" % (i, dom))
            assert rc == 0, err
    q = qrun(users, {"PATH": str(b) + ":" + users.env["PATH"], "FAKE_DIR": str(tmp_path)})
    q.wait_log(r"^done ", count=12, timeout=40)
    one = [int(x) for x in (tmp_path / "counts.one.test").read_text().split()]
    two = [int(x) for x in (tmp_path / "counts.two.test").read_text().split()]
    assert len(one) == 6 and len(two) == 6
    assert max(one) <= 1 and max(two) <= 1  # never a third for one domain
    every = [int(x) for x in (tmp_path / "counts.all").read_text().split()]
    assert max(every) <= 2  # never a fourth at all
    assert max(every) >= 1  # and they did run in parallel


def test_failing_domain_is_backed_off_as_a_whole(users, qrun, fake_remote):
    env, log = fake_remote
    users.control("retry-base", "60")
    users.control("retry-max", "60")
    q = qrun(users, env)
    rc, err = users.inject(MSG, "alice@example.test", "temp@slow.test")
    assert rc == 0, err
    q.wait_log(r"^delivery \S+ to=<temp@slow.test> .* status=deferred ")
    rc, err = users.inject(MSG, "alice@example.test", "temp2@slow.test", "ok@fast.test")
    assert rc == 0, err
    q.wait_log(r"^delivery \S+ to=<ok@fast.test> .* status=sent ")
    time.sleep(0.5)
    calls = log.read_text().splitlines()
    assert calls == ["slow.test alice@example.test temp@slow.test",
                     "fast.test alice@example.test ok@fast.test"], calls  # slow.test waits
    wait_for(lambda: len(os.listdir(users.path("queue", "state"))) == 2, what="state files")
    second = [m for m in qlist(users) if len(m["recipients"]) == 2][0]
    r = {x["address"]: x for x in second["recipients"]}
    assert r["temp2@slow.test"]["state"] == "pending-remote"
    assert r["temp2@slow.test"]["attempts"] == 0 and r["temp2@slow.test"]["next"] > time.time() + 30
    assert users.run("queue-ctl", "flush").returncode == 0  # forgets the domain's backoff
    q.wait_log(r"^delivery \S+ to=<temp2@slow.test> .* status=deferred ")


def test_a_list_expands_to_many_local_targets(users, qrun):
    members = ["m%d@example.test" % i for i in range(30)]
    for m in members:
        users.run("mail-user", "add", m, input=b"pw\n", check=True)
    users.add_alias("all@example.test", *members)
    q = qrun(users)
    rc, err = users.inject(MSG, "alice@example.test", "all@example.test", "bob@example.test")
    assert rc == 0, err
    q.wait_log(r"^done ", timeout=30)
    for m in members + ["bob@example.test"]:
        assert len(users.messages(m)) == 1, m


def test_a_hung_delivery_is_killed_and_retried(users, qrun, tmp_path):
    hang = tmp_path / "hangbin"
    hang.mkdir()
    (hang / "deliver-maildir").write_text("#!/bin/sh\nexec sleep 60\n")
    os.chmod(hang / "deliver-maildir", 0o755)
    users.control("timeout-local", "1")
    users.control("retry-base", "300")
    q = qrun(users, {"PATH": str(hang) + ":" + users.env["PATH"]})
    rc, err = users.inject(MSG, "alice@example.test", "bob@example.test")
    assert rc == 0, err
    q.wait_log(r"^warning \S+: deliver-maildir timed out, killed$", timeout=15)
    q.wait_log(r"^delivery \S+ to=<bob@example.test> .* status=deferred \(4.4.1 deliver-maildir timed out\)$")
    wait_for(lambda: os.listdir(users.path("queue", "state")), what="state file")
    [m] = qlist(users)
    assert m["recipients"][0]["state"] == "pending-local" and m["recipients"][0]["attempts"] == 1


def test_parallel_injections_into_a_fresh_queue(instance):
    # mail-instance makes queue/ only: the first injectors race to make its sub-directories
    q = instance.path("queue")
    for attempt in range(10):
        for name in mess(instance):
            os.unlink(os.path.join(q, "mess", name))
        for d in os.listdir(q):
            if os.path.isdir(os.path.join(q, d)) and not os.listdir(os.path.join(q, d)):
                os.rmdir(os.path.join(q, d))
        assert not os.path.exists(os.path.join(q, "mess"))
        # all 40 have their message and envelope before the first one looks at the queue
        procs = []
        for i in range(40):
            r_env, w_env = os.pipe()
            os.write(w_env, envelope("a@example.test", "bob@example.test"))
            os.close(w_env)
            p = subprocess.Popen([prog("queue-inject")], stdin=subprocess.PIPE, stdout=r_env,
                                 stderr=subprocess.PIPE, env=instance.env)
            os.close(r_env)
            procs.append(p)
        for p in procs:
            p.stdin.write(MSG)
        for p in procs:
            p.stdin.close()
        for p in procs:
            assert p.wait(timeout=30) == 0, p.stderr.read()
            p.stderr.close()
        assert len(mess(instance)) == 40
