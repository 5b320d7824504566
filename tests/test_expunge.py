"""mail-expunge: auto-expunge of Trash and Junk (issue 12), driven as the periodic service and
an administrator run it."""
import os
import time

from conftest import prog  # noqa: F401  (the instance fixture runs the programs)

USER = "ann@example.test"
DAY = 86400


def folder(inst, name):
    d = os.path.join(inst.maildir(USER), "." + name)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    return d


def put(d, n, sub="cur", size=100):
    name = "%d.M%dP1.host,S=%d:2,S" % (1700000000 + n, n, size)
    with open(os.path.join(d, sub, name), "wb") as f:
        f.write(b"x" * size)
    return name


def test_old_trash_and_junk_removed_the_rest_kept(instance):
    instance.add_user(USER, "pw")
    md = instance.maildir(USER)
    trash, junk, sent = folder(instance, "Trash"), folder(instance, "Junk"), folder(instance, "Sent")
    put(trash, 1)
    put(trash, 2, sub="new")
    put(junk, 3, size=300)
    put(sent, 4)
    with open(os.path.join(md, "maildirsize"), "w") as f:
        f.write("0S\n500 4\n")
    now = int(time.time())
    # 10 days from now nothing in the folders is 30 days old yet
    r = instance.run("mail-expunge", "-T", now + 10 * DAY)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"removed 0 messages, 0 bytes\n"
    # a dry run 31 days from now names them and removes nothing
    r = instance.run("mail-expunge", "-n", "-v", "-T", now + 31 * DAY)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(b"would remove ") == 4 and b"removed" not in r.stdout.split(b"\n")[0]
    assert len(os.listdir(os.path.join(trash, "cur"))) == 1
    r = instance.run("mail-expunge", "-T", now + 31 * DAY)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"removed 3 messages, 500 bytes\n"
    for d in (trash, junk):
        assert os.listdir(os.path.join(d, "cur")) == [] and os.listdir(os.path.join(d, "new")) == []
    assert len(os.listdir(os.path.join(sent, "cur"))) == 1  # other folders untouched
    with open(os.path.join(md, "maildirsize")) as f:
        assert f.read() == "0S\n500 4\n-500 -3\n"


def test_folder_list_days_setting_and_named_maildirs(instance):
    instance.add_user(USER, "pw")
    spam = folder(instance, "Spam")
    trash = folder(instance, "Trash")
    put(spam, 1)
    put(trash, 2)
    instance.control("expunge-days", "7")
    now = int(time.time())
    r = instance.run("mail-expunge", "-f", "Spam", "-T", now + 8 * DAY, instance.maildir(USER))
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"removed 1 messages, 100 bytes\n"
    assert os.listdir(os.path.join(spam, "cur")) == []
    assert len(os.listdir(os.path.join(trash, "cur"))) == 1


def test_bad_usage(instance):
    for args in (["-f", "../x"], ["-f", ".Trash"], ["-d", "0"], ["-d", "x"]):
        r = instance.run("mail-expunge", *args)
        assert r.returncode == 100, args
    instance.control("expunge-days", "soon")
    r = instance.run("mail-expunge")
    assert r.returncode == 100 and b"control/expunge-days" in r.stderr


def test_periodic_service_runs_the_jobs_and_stops_cleanly(instance):
    """services/periodic as s6 would run it: with env/RUN_AT_START the jobs run at once, then
    it sleeps until env/HOUR; SIGTERM stops it and its sleep at once."""
    import signal
    import subprocess
    from conftest import wait_for
    instance.add_user(USER, "pw")
    trash = folder(instance, "Trash")
    put(trash, 1)
    os.utime(os.path.join(trash, "cur", os.listdir(os.path.join(trash, "cur"))[0]))
    svc = instance.path("service", "periodic")
    assert os.path.exists(os.path.join(svc, "run")), "mail-instance copies the template"
    with open(os.path.join(svc, "env", "RUN_AT_START"), "w") as f:
        f.write("1\n")
    os.unlink(os.path.join(svc, "env", "DELIVERY_USER"))  # the test's own uid runs the job
    instance.control("expunge-days", "1")
    out = open(instance.path("periodic.out"), "wb+")
    p = subprocess.Popen(["./run"], cwd=svc, stdout=out, stderr=subprocess.STDOUT,
                         env=instance.env, start_new_session=True)
    try:
        def said():
            out.seek(0)
            return out.read()
        wait_for(lambda: b"next run at" in said(), timeout=20, what="the periodic loop")
        assert b"periodic: mail-expunge: removed 0 messages, 0 bytes" in said()
        assert len(os.listdir(os.path.join(trash, "cur"))) == 1  # a fresh message stays
        kids = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True).stdout.split()
        assert kids, "the loop sleeps in a child"
        os.kill(p.pid, signal.SIGTERM)
        assert p.wait(timeout=10) == 0
        for k in kids:
            wait_for(lambda: not os.path.exists("/proc/%s" % k.decode()), timeout=5,
                     what="the sleep to end with the service")
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        out.close()
