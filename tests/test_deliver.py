"""deliver-maildir: one message on fd 0 into one Maildir, as queue-run (or a shell user) runs it.

Each test makes its own Maildir with os.makedirs; no instance is needed. What must be on disk
afterwards is checked as closely as what the program says: a failure leaves nothing in new/
and nothing in tmp/.
"""
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import BUILD, LIBPILLARBOX, SANITIZE, base_env, prog, wait_for

NAME = re.compile(r"^(\d+)\.M(\d+)P(\d+)Q(\d+)\.([^/:]+),S=(\d+)$")


def mkmaildir(path):
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    return str(path)


@pytest.fixture
def md(tmp_path):
    return mkmaildir(tmp_path / "Maildir")


def deliver(d, message, sender="alice@example.org", rcpt="bob@example.test", args=(), env=None,
            stdin=None, unset=(), preexec=None, program=None):
    e = base_env()
    if sender is not None:
        e["SENDER"] = sender
    if rcpt is not None:
        e["RECIPIENT"] = rcpt
    for k in unset:
        e.pop(k, None)
    if env:
        e.update(env)
    if isinstance(message, str):
        message = message.encode()
    kw = {"stdin": stdin} if stdin is not None else {"input": message}
    return subprocess.run([program or prog("deliver-maildir")] + list(args) + ([d] if d is not None else []),
                          env=e, capture_output=True, timeout=60, preexec_fn=preexec, **kw)


def ls(d, sub):
    return sorted(os.listdir(os.path.join(d, sub)))


def read_new(d):
    names = ls(d, "new")
    out = []
    for n in names:
        with open(os.path.join(d, "new", n), "rb") as f:
            out.append((n, f.read()))
    return out


def assert_nothing(d):
    assert ls(d, "new") == []
    assert ls(d, "tmp") == []


MSG = "From: alice@example.org\nTo: bob@example.test\nSubject: hi\n\nhello\n"


def test_delivers_with_return_path_and_delivered_to_first(md):
    r = deliver(md, MSG)
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""
    [(name, data)] = read_new(md)
    assert data == (b"Return-Path: <alice@example.org>\nDelivered-To: bob@example.test\n" +
                    MSG.encode())
    m = NAME.match(name)
    assert m, name
    assert abs(int(m.group(1)) - time.time()) < 60
    assert int(m.group(3)) > 0
    assert int(m.group(6)) == len(data) == os.path.getsize(os.path.join(md, "new", name))
    assert ls(md, "tmp") == [] and ls(md, "cur") == []


def test_null_sender_and_unset_sender(md):
    assert deliver(md, MSG, sender="").returncode == 0
    assert deliver(md, MSG, sender=None, unset=("SENDER",)).returncode == 0
    msgs = read_new(md)
    assert len(msgs) == 2
    for _, data in msgs:
        assert data.startswith(b"Return-Path: <>\nDelivered-To: bob@example.test\n")


def test_crlf_is_stored_as_lf_and_lone_cr_kept(md):
    r = deliver(md, b"Subject: x\r\n\r\nline one\r\nbare\rcr\r\nlast\r\n")
    assert r.returncode == 0, r.stderr
    [(_, data)] = read_new(md)
    assert data.endswith(b"Subject: x\n\nline one\nbare\rcr\nlast\n")
    assert b"\r\n" not in data


def test_no_trailing_newline_is_kept_as_given(md):
    assert deliver(md, b"Subject: x\n\nno newline").returncode == 0
    [(_, data)] = read_new(md)
    assert data.endswith(b"\n\nno newline")


def test_large_message_streamed_intact_crlf_across_read_boundary(md, tmp_path):
    # 64 KiB reads: put a CRLF exactly across the first boundary and many more after it.
    head = b"Subject: big\r\n\r\n"
    pad = b"a" * (65536 - len(head) - 1)
    body = pad + b"\r\n" + (b"0123456789" * 7 + b"\r\n") * 70000
    src = tmp_path / "msg"
    src.write_bytes(head + body)
    with open(src, "rb") as f:
        r = deliver(md, None, stdin=f)
    assert r.returncode == 0, r.stderr
    [(name, data)] = read_new(md)
    want = (b"Return-Path: <alice@example.org>\nDelivered-To: bob@example.test\n" +
            (head + body).replace(b"\r\n", b"\n"))
    assert data == want
    assert NAME.match(name).group(6) == str(len(want))


def test_usage_and_environment_errors_are_permanent(md):
    r = deliver(md, MSG, rcpt=None, unset=("RECIPIENT",))
    assert r.returncode == 100 and b"RECIPIENT" in r.stderr
    r = deliver(md, MSG, rcpt="")
    assert r.returncode == 100 and b"RECIPIENT" in r.stderr
    r = deliver(md, MSG, rcpt="bob@example.test\nBcc: x@evil.test")
    assert r.returncode == 100 and b"RECIPIENT" in r.stderr
    r = deliver(md, MSG, sender="a\r\nX-Evil: 1")
    assert r.returncode == 100 and b"SENDER" in r.stderr
    r = deliver(md, MSG, rcpt="x" * 1001 + "@example.test")
    assert r.returncode == 100
    assert deliver(None, MSG).returncode == 100
    assert deliver(md, MSG, args=["extra"]).returncode == 100
    assert deliver("", MSG).returncode == 100
    assert deliver(md, MSG, args=["-q", "10X"]).returncode == 100
    assert deliver(md, MSG, args=["-z"]).returncode == 100
    assert_nothing(md)


@pytest.mark.parametrize("header", [
    "Delivered-To: bob@example.test",
    "Delivered-To: BOB@Example.TEST",
    "delivered-to:   <bob@example.test>  ",
    "Delivered-To:\n bob@example.test",
])
def test_loop_own_delivered_to_is_permanent(md, header):
    msg = "Received: from a\nSubject: x\n" + header + "\nX-Other: y\n\nbody\n"
    r = deliver(md, msg)
    assert r.returncode == 100, r.stderr
    assert b"loop" in r.stderr
    assert_nothing(md)


def test_other_delivered_to_and_body_mentions_are_not_loops(md):
    msg = ("Delivered-To: carol@example.test\nDelivered-To: bob@example.test.evil\n"
           "Subject: x\n\nDelivered-To: bob@example.test\n")
    r = deliver(md, msg)
    assert r.returncode == 0, r.stderr
    assert len(read_new(md)) == 1


def test_loop_hop_count(md):
    hops = "".join("Received: from h%d by h%d\n" % (i, i + 1) for i in range(100))
    r = deliver(md, hops + "Subject: 100 hops\n\nok\n")
    assert r.returncode == 0, r.stderr
    r = deliver(md, hops + "Received: (one more)\nSubject: 101 hops\n\nno\n")
    assert r.returncode == 100 and b"loop" in r.stderr
    assert len(read_new(md)) == 1 and ls(md, "tmp") == []
    # Received: lines in the body do not count
    r = deliver(md, "Subject: quoted\n\n" + hops + "Received: x\n")
    assert r.returncode == 0, r.stderr


def test_symlinked_tmp_is_refused_and_victim_untouched(md, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    shutil.rmtree(os.path.join(md, "tmp"))
    os.symlink(str(victim), os.path.join(md, "tmp"))
    r = deliver(md, MSG)
    assert r.returncode == 111, r.stderr
    assert b"symbolic link" in r.stderr
    assert os.listdir(victim) == []
    assert ls(md, "new") == []


def test_symlinked_new_is_refused(md, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    shutil.rmtree(os.path.join(md, "new"))
    os.symlink(str(victim), os.path.join(md, "new"))
    r = deliver(md, MSG)
    assert r.returncode == 111, r.stderr
    assert os.listdir(victim) == []
    assert ls(md, "tmp") == []


def test_symlinks_planted_in_tmp_are_never_written_through(md, tmp_path):
    # The name of the next delivery cannot be predicted to the microsecond, so this plants
    # links of the right shape to a victim and checks that deliveries go around them and leave
    # them alone; a link at the exact name is tests/unit/maildir.c's job
    # (maildir_tmp_open_name: O_CREAT|O_EXCL|O_NOFOLLOW refuses it with EEXIST).
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    host = os.uname().nodename.replace("/", "\\057").replace(":", "\\072")
    now = int(time.time())
    for i in range(200):
        os.symlink(str(victim), os.path.join(md, "tmp", "%d.M%dP1Q1.%s" % (now, i, host)))
    for _ in range(5):
        assert deliver(md, MSG).returncode == 0
    assert victim.read_bytes() == b"precious\n"
    assert len(ls(md, "new")) == 5
    for n in ls(md, "tmp"):
        assert os.path.islink(os.path.join(md, "tmp", n))


def test_missing_maildir_is_temporary_and_a_file_is_permanent(tmp_path):
    r = deliver(str(tmp_path / "nope"), MSG)
    assert r.returncode == 111 and b"nope" in r.stderr
    f = tmp_path / "file"
    f.write_text("x")
    r = deliver(str(f), MSG)
    assert r.returncode == 100 and b"not a directory" in r.stderr
    d = tmp_path / "half"
    (d / "new").mkdir(parents=True)  # no tmp/
    assert deliver(str(d), MSG).returncode == 111


def test_file_in_place_of_new_is_temporary(md):
    os.rmdir(os.path.join(md, "new"))
    with open(os.path.join(md, "new"), "w") as f:
        f.write("not a directory")
    r = deliver(md, MSG)
    assert r.returncode == 111, r.stderr
    assert ls(md, "tmp") == []


def test_unwritable_maildir_is_temporary():
    # Tests run as root, which may write anywhere: deliver as nobody into root's Maildir.
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv")
    base = tempfile.mkdtemp(prefix="pb-deliver-")
    try:
        os.chmod(base, 0o755)
        d = mkmaildir(os.path.join(base, "Maildir"))
        for p in (d, os.path.join(d, "tmp"), os.path.join(d, "new"), os.path.join(d, "cur")):
            os.chmod(p, 0o755)

        def drop():
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)

        r = deliver(d, MSG, preexec=drop)
        assert r.returncode == 111, r.stderr
        assert b"Permission denied" in r.stderr
        assert_nothing(d)
    finally:
        shutil.rmtree(base)


@pytest.fixture
def tiny_fs():
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mnt = tempfile.mkdtemp(prefix="pb-full-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt],
                       capture_output=True, timeout=30)
    if r.returncode != 0:
        os.rmdir(mnt)
        pytest.skip("cannot mount a tmpfs: %r" % r.stderr)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", mnt], capture_output=True, timeout=30)
        os.rmdir(mnt)


def test_full_disk_is_temporary_and_leaves_no_partial_file(tiny_fs):
    d = mkmaildir(os.path.join(tiny_fs, "Maildir"))
    small = deliver(d, MSG)
    assert small.returncode == 0, small.stderr
    big = "Subject: big\n\n" + ("x" * 99 + "\n") * 2000  # 200 KB on a 64 KB file system
    r = deliver(d, big)
    assert r.returncode == 111, r.stderr
    assert b"No space left" in r.stderr
    assert len(ls(d, "new")) == 1
    assert ls(d, "tmp") == []
    # the space is given back: a small message still goes in
    assert deliver(d, MSG).returncode == 0
    assert len(ls(d, "new")) == 2


def write_maildirsize(d, text, age=0):
    p = os.path.join(d, "maildirsize")
    with open(p, "w") as f:
        f.write(text)
    if age:
        t = time.time() - age
        os.utime(p, (t, t))
    return p


def test_over_quota_is_temporary_and_delivers_nothing(md):
    p = write_maildirsize(md, "100S\n0 0\n")
    r = deliver(md, "Subject: x\n\n" + "y" * 200 + "\n")
    assert r.returncode == 111, r.stderr
    assert b"quota" in r.stderr
    assert_nothing(md)
    with open(p) as f:
        assert f.read() == "100S\n0 0\n"


def test_quota_counts_and_updates_maildirsize(md):
    p = write_maildirsize(md, "1000S,2C\n0 0\n")
    r = deliver(md, MSG)
    assert r.returncode == 0, r.stderr
    [(name, data)] = read_new(md)
    with open(p) as f:
        assert f.read() == "1000S,2C\n0 0\n%d 1\n" % len(data)
    assert deliver(md, MSG).returncode == 0
    r = deliver(md, MSG)  # the count limit
    assert r.returncode == 111 and b"quota" in r.stderr
    assert len(ls(md, "new")) == 2 and ls(md, "tmp") == []


def test_quota_option_creates_maildirsize_by_counting(md):
    with open(os.path.join(md, "cur", "1.M1P1Q1.h,S=300:2,S"), "w") as f:
        f.write("x")
    with open(os.path.join(md, "cur", "2.M1P1Q1.h:2,"), "w") as f:
        f.write("z" * 50)
    os.makedirs(os.path.join(md, ".Sent", "cur"))
    with open(os.path.join(md, ".Sent", "cur", "3.M1P1Q1.h,S=100:2,S"), "w") as f:
        f.write("x")
    r = deliver(md, MSG, args=["-q", "1000S"])
    assert r.returncode == 0, r.stderr
    [(_, data)] = read_new(md)
    with open(os.path.join(md, "maildirsize")) as f:
        assert f.read() == "1000S\n450 3\n%d 1\n" % len(data)
    # a message that no longer fits
    r = deliver(md, "Subject: x\n\n" + "y" * 500 + "\n", args=["-q", "1000S"])
    assert r.returncode == 111
    assert len(ls(md, "new")) == 1 and ls(md, "tmp") == []
    # a new limit from -q replaces the old one (and recounts)
    r = deliver(md, "Subject: x\n\n" + "y" * 500 + "\n", args=["-q", "2000S,10C"])
    assert r.returncode == 0, r.stderr
    with open(os.path.join(md, "maildirsize")) as f:
        assert f.readline() == "2000S,10C\n"


def test_quota_bounce_control_makes_it_permanent(md, tmp_path):
    root = tmp_path / "inst"
    (root / "control").mkdir(parents=True)
    (root / "control" / "quota-bounce").write_text("1\n")
    write_maildirsize(md, "10S\n0 0\n")
    r = deliver(md, MSG, env={"MAILROOT": str(root)})
    assert r.returncode == 100 and b"quota" in r.stderr
    assert_nothing(md)
    (root / "control" / "quota-bounce").write_text("junk\n")
    r = deliver(md, MSG, env={"MAILROOT": str(root)})
    assert r.returncode == 100 and b"quota-bounce" in r.stderr


def test_old_maildirsize_over_quota_is_recounted(md):
    # Readers may have deleted mail without updating maildirsize: when it says "over" and is
    # older than 15 minutes, deliver-maildir counts again before refusing.
    write_maildirsize(md, "1000S\n5000 10\n")
    assert deliver(md, MSG).returncode == 111
    p = write_maildirsize(md, "1000S\n5000 10\n", age=3600)
    r = deliver(md, MSG)
    assert r.returncode == 0, r.stderr
    [(_, data)] = read_new(md)
    with open(p) as f:
        assert f.read() == "1000S\n0 0\n%d 1\n" % len(data)


def test_large_or_corrupt_maildirsize_is_recounted(md):
    p = write_maildirsize(md, "100000S\n" + "1000 1\n" * 800)  # over 5120 bytes, says 800000
    r = deliver(md, MSG)
    assert r.returncode == 0, r.stderr
    [(_, data)] = read_new(md)
    with open(p) as f:
        assert f.read() == "100000S\n0 0\n%d 1\n" % len(data)
    write_maildirsize(md, "100000S\n99999999 1\ngarbage\n")
    assert deliver(md, MSG).returncode == 0
    with open(p) as f:
        lines = f.read().splitlines()
    assert lines[0] == "100000S" and lines[1] == "%d 1" % len(data)


def test_parallel_deliveries_get_distinct_names(md):
    procs = []
    e = base_env(SENDER="a@example.org", RECIPIENT="bob@example.test")
    for i in range(30):
        p = subprocess.Popen([prog("deliver-maildir"), md], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=e)
        procs.append((i, p))
    for i, p in procs:
        p.stdin.write(("Subject: %d\n\nbody %d\n" % (i, i)).encode())
        p.stdin.close()
    for i, p in procs:
        assert p.wait(timeout=60) == 0, p.stderr.read()
        p.stderr.close()
    msgs = read_new(md)
    assert len(msgs) == 30
    assert sorted(d.split(b"Subject: ")[1].split(b"\n")[0] for _, d in msgs) == \
        sorted(str(i).encode() for i in range(30))
    assert ls(md, "tmp") == []


def test_account_quota_from_users_cdb(instance):
    # With MAILROOT set and no -q, the account's quota (mail-user --quota) is the limit.
    user = "quota@example.test"
    instance.add_user(user, "secret", "--quota", "600")
    d = instance.maildir(user)
    assert os.path.isdir(os.path.join(d, "new"))
    r = instance.run("deliver-maildir", d, input=MSG.encode(),
                     env={"SENDER": "a@example.org", "RECIPIENT": user})
    assert r.returncode == 0, r.stderr
    [(_, data)] = read_new(d)
    with open(os.path.join(d, "maildirsize")) as f:
        assert f.read() == "600S\n0 0\n%d 1\n" % len(data)
    big = ("Subject: big\n\n" + "z" * 500 + "\n").encode()
    r = instance.run("deliver-maildir", d, input=big,
                     env={"SENDER": "a@example.org", "RECIPIENT": user})
    assert r.returncode == 111 and b"quota" in r.stderr
    assert len(ls(d, "new")) == 1 and ls(d, "tmp") == []
    # the postmaster raises the quota: the next delivery follows the account, not the file
    assert instance.run("mail-user", "quota", user, "100000").returncode == 0
    r = instance.run("deliver-maildir", d, input=big,
                     env={"SENDER": "a@example.org", "RECIPIENT": user})
    assert r.returncode == 0, r.stderr
    with open(os.path.join(d, "maildirsize")) as f:
        assert f.readline() == "100000S\n"
    # an account without a quota is not limited by a leftover maildirsize, which is still
    # kept up to date
    other = "free@example.test"
    instance.add_user(other)
    d2 = instance.maildir(other)
    write_maildirsize(d2, "10S\n0 0\n")
    r = instance.run("deliver-maildir", d2, input=MSG.encode(),
                     env={"SENDER": "a@example.org", "RECIPIENT": other})
    assert r.returncode == 0, r.stderr
    [(_, data)] = read_new(d2)
    with open(os.path.join(d2, "maildirsize")) as f:
        assert f.read() == "10S\n0 0\n%d 1\n" % len(data)


def test_killed_mid_delivery_leaves_nothing_in_new(md):
    e = base_env(SENDER="a@example.org", RECIPIENT="bob@example.test")
    p = subprocess.Popen([prog("deliver-maildir"), md], stdin=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=e)
    try:
        p.stdin.write(b"Subject: half\n\n" + b"x" * 200000)
        p.stdin.flush()
        wait_for(lambda: ls(md, "tmp"), what="the file in tmp/")
        p.kill()
        assert p.wait(timeout=30) != 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)
        try:
            p.stdin.close()
        except BrokenPipeError:
            pass
    assert ls(md, "new") == []
    assert len(ls(md, "tmp")) == 1  # the leftover maildir_tmp_clean removes after 36 hours


def test_durable_order_of_system_calls(md, tmp_path):
    # What a crash argument rests on, checked on the real system calls: the file is created
    # O_EXCL|O_NOFOLLOW in tmp/, fsync'ed and closed before it is linked into new/, and new/
    # is fsync'ed after the link and before the exit (so exit 0 means durable).
    if not shutil.which("strace"):
        pytest.skip("needs strace")
    log = tmp_path / "strace.log"
    e = base_env(SENDER="a@example.org", RECIPIENT="bob@example.test")
    r = subprocess.run(["strace", "-f", "-e", "trace=openat,fsync,close,linkat,renameat,"
                        "unlinkat,exit_group", "-o", str(log), prog("deliver-maildir"), md],
                       input=MSG.encode(), env=e, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    calls = [l.split(None, 1)[1] for l in log.read_text().splitlines() if " " in l]
    [name] = ls(md, "new")
    base = name.split(",S=")[0]

    def find(pat, start=0):
        for i in range(start, len(calls)):
            m = re.search(pat, calls[i])
            if m:
                return i, m
        raise AssertionError("no %r after call %d in:\n%s" % (pat, start, "\n".join(calls)))

    i_tmp, m = find(r'^openat\(\d+, "tmp", .*O_NOFOLLOW.*\)\s*= (\d+)')
    tmpfd = m.group(1)
    i_new, m = find(r'^openat\(\d+, "new", .*O_NOFOLLOW.*\)\s*= (\d+)')
    newfd = m.group(1)
    i_open, m = find(r'^openat\(%s, "%s", (\S+), 0600\)\s*= (\d+)' % (tmpfd, re.escape(base)))
    assert set(m.group(1).split("|")) >= {"O_WRONLY", "O_CREAT", "O_EXCL", "O_NOFOLLOW"}
    filefd = m.group(2)
    i_sync, _ = find(r"^fsync\(%s\)\s*= 0" % filefd, i_open)
    i_close, _ = find(r"^close\(%s\)\s*= 0" % filefd, i_sync)
    i_link, _ = find(r'^linkat\(%s, "%s", %s, "%s", 0\)\s*= 0' % (
        tmpfd, re.escape(base), newfd, re.escape(name)), i_close)
    i_unlink, _ = find(r'^unlinkat\(%s, "%s", 0\)\s*= 0' % (tmpfd, re.escape(base)), i_link)
    i_dsync, _ = find(r"^fsync\(%s\)\s*= 0" % newfd, i_link)
    i_exit, _ = find(r"^exit_group\(0\)", i_dsync)
    assert i_tmp < i_open and i_new < i_open


SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
static int count(char const *var)
{
  static int n[2];
  char const *s = getenv(var);
  int i = var[5] == 'F' ? 0 : 1;
  return s && ++n[i] == atoi(s);
}
int fsync(int fd)
{
  int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  if (count("FAIL_FSYNC")) { errno = EIO; return -1; }
  return real(fd);
}
int linkat(int a, char const *b, int c, char const *d, int e)
{
  int (*real)(int, char const *, int, char const *, int) =
    (int (*)(int, char const *, int, char const *, int))dlsym(RTLD_NEXT, "linkat");
  if (count("FAIL_LINKAT")) { errno = EIO; return -1; }
  return real(a, b, c, d, e);
}
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    """(the fault-injection shim, deliver-maildir linked dynamically from the same object):
    LD_PRELOAD needs the dynamic loader, and build/bin's programs are static (STATIC=1)."""
    d = tmp_path_factory.mktemp("shim")
    (d / "shim.c").write_text(SHIM)
    so = str(d / "shim.so")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", so, str(d / "shim.c"), "-ldl"], check=True,
                   timeout=60)
    exe = str(d / "deliver-maildir")
    san = ["-fsanitize=address,undefined"] if SANITIZE else []
    subprocess.run(["cc"] + san + ["-o", exe, os.path.join(BUILD, "obj", "deliver-maildir.o"),
                    LIBPILLARBOX, "-l:libcdb.a", "-l:libbearssl.a", "-l:libskarnet.a", "-lcrypt",
                    "-lresolv"], check=True, timeout=120)
    return so, exe


@pytest.mark.parametrize("fault", [
    {"FAIL_FSYNC": "1"},   # fsync of the message file
    {"FAIL_LINKAT": "1"},  # the link into new/
    {"FAIL_FSYNC": "2"},   # fsync of new/ after the link: the message is taken back
])
def test_io_errors_at_each_step_are_temporary_and_leave_nothing(md, shim, fault):
    so, exe = shim
    env = {"LD_PRELOAD": so, "ASAN_OPTIONS": "detect_leaks=0:verify_asan_link_order=0"}
    env.update(fault)
    r = deliver(md, MSG, env=env, program=exe)
    assert r.returncode == 111, r.stderr
    assert b"Input/output error" in r.stderr
    assert_nothing(md)
    # the same without the fault delivers: the shim was the only cause
    env.pop(next(iter(fault)))
    assert deliver(md, MSG, env=env, program=exe).returncode == 0


def test_worker_table_argument_checked():
    """deliver-maildir -W -g FD (queue-spawn's table of shared fsyncs): fds 0-2, a non-number
    or extra words are a usage error; an fd that is not a table is a warning, and the worker
    then fsyncs by itself (here it sees EOF on its request socket at once and exits 0)."""
    for args in (["-W", "-g", "1"], ["-W", "-g", "x"], ["-W", "-g"], ["-W", "-g", "4", "5"]):
        r = subprocess.run([prog("deliver-maildir")] + args, stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=20)
        assert r.returncode == 100 and b"usage" in r.stderr, (args, r)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    b.close()  # queue-spawn gone: EOF at the first request
    with a:
        r = subprocess.run([prog("deliver-maildir"), "-W", "-g", "9"], stdin=a.fileno(),
                           capture_output=True, timeout=20)
    assert r.returncode == 0 and b"map the table of shared fsyncs" in r.stderr, r
