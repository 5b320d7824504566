"""An administrator's day (issue 10): cron's mail to root reaches a person, bare names live in
the default domain, deleting an account that aliases point to neither breaks a list into
"alias loop" nor loses the mailbox, and mail-alias refuses to make a loop."""
import os
import subprocess

from conftest import Instance, base_env, prog
from test_smtp_clients import Server, delivered


def lookup(inst, *addrs):
    r = inst.run("mail-lookup", *addrs)
    return r.returncode, r.stdout.decode().splitlines()


def aliases(inst):
    return inst.run("mail-alias", "list").stdout.decode().splitlines()


# ---------------------------------------------------------------- role aliases, defaultdomain

def test_role_addresses_reach_the_first_account(instance):
    with open(instance.path("control", "defaultdomain")) as f:
        assert f.read() == "example.test\n"
    instance.add_user("joe@example.test")
    md = instance.maildir("joe@example.test")
    for a in ("root@example.test", "ABUSE@example.test", "MAILER-DAEMON@example.test",
              "postmaster@example.test"):
        assert lookup(instance, a) == (0, ["local joe@example.test " + md]), a


def test_role_addresses_with_postmaster_option(tmp_path):
    r = subprocess.run([prog("mail-instance"), "create", str(tmp_path / "i"), "--hostname",
                        "mx.one.test", "--domain", "One.test", "--domain", "two.test",
                        "--postmaster", "root@one.test"], env=base_env(), capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    inst = Instance(tmp_path / "i")
    with open(inst.path("control", "defaultdomain")) as f:
        assert f.read() == "one.test\n"
    # root@one.test is the postmaster's mailbox itself, not an alias of it (no loop)
    assert "root@one.test: postmaster@one.test" not in aliases(inst)
    inst.add_user("root@one.test")
    md = inst.maildir("root@one.test")
    for a in ("root@one.test", "abuse@one.test", "mailer-daemon@two.test", "root@two.test"):
        assert lookup(inst, a) == (0, ["local root@one.test " + md]), a


def test_an_account_named_like_a_role_replaces_its_alias(instance):
    instance.add_user("joe@example.test")
    r = instance.add_user("abuse@example.test")
    assert b"removed" in r.stderr
    assert "abuse@example.test: postmaster@example.test" not in aliases(instance)
    assert lookup(instance, "abuse@example.test") == \
        (0, ["local abuse@example.test " + instance.maildir("abuse@example.test")])


def test_cron_mail_from_root_reaches_a_person(instance):
    """`sendmail root` as cron runs it: the bare name is root@ the default domain, which is an
    alias of the postmaster, the first account; the envelope sender is a local address too, so
    a bounce would stay here instead of going out as root@HOSTNAME."""
    instance.add_user("joe@example.test")
    s = Server(instance)
    try:
        env = {"LOGNAME": "root", "USER": "root"}
        r = instance.run("sendmail", "root", input=b"Subject: cron <root@mx> run-parts\n\nok\n",
                         env=env)
        assert r.returncode == 0, r.stderr
        m = delivered(instance, "joe@example.test")[0]
        assert b"Subject: cron" in m
        user = __import__("pwd").getpwuid(os.getuid()).pw_name
        assert m.startswith(b"Return-Path: <%s@example.test>\n" % user.encode()), m[:200]
        assert b"Delivered-To: joe@example.test" in m
        # -f with a bare name is qualified the same way
        r = instance.run("sendmail", "-f", "backup", "abuse", input=b"Subject: two\n\nx\n")
        assert r.returncode == 0, r.stderr
        [m] = [x for x in delivered(instance, "joe@example.test", 2) if b"Subject: two" in x]
        assert m.startswith(b"Return-Path: <backup@example.test>\n"), m[:200]
    finally:
        s.stop()


def test_bare_names_use_control_defaultdomain(instance):
    instance.add_domain("second.test")
    instance.add_user("ops@second.test")
    instance.control("defaultdomain", "second.test")
    s = Server(instance)
    try:
        r = instance.run("sendmail", "ops", input=b"Subject: d\n\nx\n")
        assert r.returncode == 0, r.stderr
        assert b"Subject: d" in delivered(instance, "ops@second.test")[0]
    finally:
        s.stop()


def bs_codes(out):
    return [int(l[:3]) for l in out.split(b"\r\n") if l[:3].isdigit() and l[3:4] == b" "]


def test_sendmail_bs_qualifies_bare_names(instance):
    """`sendmail -bs`: RCPT TO:<root> and MAIL FROM:<backup> are at the default domain, as
    sendmail's command-line addresses are; <postmaster> and full addresses are unchanged."""
    instance.add_user("joe@example.test")
    instance.add_domain("second.test")
    instance.add_user("ops@second.test")
    s = Server(instance)
    try:
        r = instance.run("sendmail", "-bs", input=b"HELO local\r\nMAIL FROM:<backup>\r\n"
                         b"RCPT TO:<root>\r\nDATA\r\nSubject: bs one\r\n\r\nx\r\n.\r\n"
                         b"QUIT\r\n")
        assert bs_codes(r.stdout) == [220, 250, 250, 250, 354, 250, 221], r.stdout
        [m] = [x for x in delivered(instance, "joe@example.test") if b"Subject: bs one" in x]
        assert m.startswith(b"Return-Path: <backup@example.test>\n"), m[:200]
        assert b"root@example.test" in m.split(b"\n\n")[0]  # the original recipient
        instance.control("defaultdomain", "second.test")
        r = instance.run("sendmail", "-bs", input=b"HELO local\r\nMAIL FROM:<>\r\n"
                         b"RCPT TO:<ops>\r\nRCPT TO:<nobody-here>\r\nDATA\r\n"
                         b"Subject: bs two\r\n\r\nx\r\n.\r\nQUIT\r\n")
        assert bs_codes(r.stdout) == [220, 250, 250, 250, 550, 354, 250, 221], r.stdout
        assert b"Subject: bs two" in delivered(instance, "ops@second.test")[0]
    finally:
        s.stop()
    # a network client's bare name stays refused (RFC 5321 4.1.2 wants a domain)
    r = subprocess.run([prog("smtp-receive")], input=b"HELO c\r\nMAIL FROM:<a@b.example>\r\n"
                       b"RCPT TO:<root>\r\nQUIT\r\n", env=dict(instance.env,
                       TCPREMOTEIP="192.0.2.1"), capture_output=True, timeout=30)
    assert bs_codes(r.stdout)[:4] == [220, 250, 250, 501], r.stdout


# ---------------------------------------------------------------- deleting an aliased account

def setup_lists(inst):
    inst.add_user("joe@example.test")
    inst.add_user("ann@example.test")
    inst.add_alias("team@example.test", "joe@example.test", "ann@example.test")
    inst.add_alias("joe-only@example.test", "joe+lists@example.test")
    inst.add_alias("@example.test", "joe@example.test")


def test_deleting_an_aliased_account_is_refused_naming_the_aliases(instance):
    setup_lists(instance)
    before = open(instance.path("control", "aliases")).read()
    users = open(instance.path("control", "users")).read()
    r = instance.run("mail-user", "del", "joe@example.test")
    assert r.returncode == 100
    for name in (b"postmaster@example.test", b"team@example.test", b"joe-only@example.test",
                 b"@example.test", b"--force"):
        assert name in r.stderr, (name, r.stderr)
    assert open(instance.path("control", "aliases")).read() == before
    assert open(instance.path("control", "users")).read() == users
    assert os.path.isdir(instance.maildir("joe@example.test"))


def test_forced_delete_keeps_lists_valid_and_the_maildir(instance):
    setup_lists(instance)
    with open(os.path.join(instance.maildir("joe@example.test"), "new", "1.M1P1.h"), "w") as f:
        f.write("Subject: keep me\n\nx\n")
    r = instance.run("mail-user", "del", "--force", "joe@example.test")
    assert r.returncode == 0, r.stderr
    assert b"warning: alias @example.test removed" in r.stderr
    assert b"still point to postmaster@example.test" in r.stderr  # root, abuse, ...
    # no lookup turns into a loop: the list keeps its other member, strangers are unknown
    ann = "local ann@example.test " + instance.maildir("ann@example.test")
    assert lookup(instance, "team@example.test") == (0, [ann])
    assert lookup(instance, "joe@example.test") == (100, ["unknown joe@example.test"])
    assert lookup(instance, "stranger@example.test") == (100, ["unknown stranger@example.test"])
    assert "team@example.test: ann@example.test" in aliases(instance)
    assert not any(l.startswith(("joe-only@", "@example.test", "postmaster@"))
                   for l in aliases(instance))
    # the Maildir is kept aside, whole
    assert not os.path.exists(instance.maildir("joe@example.test"))
    kept = os.listdir(instance.path("mail", "example.test", ".deleted"))
    assert len(kept) == 1 and kept[0].startswith("joe-"), kept
    assert os.listdir(instance.path("mail", "example.test", ".deleted", kept[0], "new")) == \
        ["1.M1P1.h"]
    assert kept[0] in r.stderr.decode()
    # .deleted belongs to mail/'s owner (pb-deliv on an instance made by root), as the box
    mail_st = os.stat(instance.path("mail"))
    for d in (instance.path("mail", "example.test", ".deleted"),
              instance.path("mail", "example.test", ".deleted", kept[0])):
        st = os.stat(d)
        assert (st.st_uid, st.st_gid) == (mail_st.st_uid, mail_st.st_gid), d
        assert st.st_mode & 0o077 == 0, oct(st.st_mode)
    # SMTP says 550 5.1.1 for joe, and delivers the list to ann (not 550 5.4.6)
    s = Server(instance)
    try:
        import smtplib
        with smtplib.SMTP("127.0.0.1", s.port, timeout=30) as c:
            c.ehlo("x")
            c.mail("a@remote.test")
            assert c.rcpt("joe@example.test")[0] == 550
            assert c.rcpt("team@example.test")[0] == 250
            assert c.data(b"Subject: to the team\r\n\r\nhi\r\n")[0] == 250
        assert b"to the team" in delivered(instance, "ann@example.test")[0]
    finally:
        s.stop()
    # the same address again: a fresh Maildir, the kept one untouched
    instance.add_user("joe@example.test")
    assert os.listdir(os.path.join(instance.maildir("joe@example.test"), "new")) == []
    r = instance.run("mail-user", "del", "joe@example.test")
    assert r.returncode == 0, r.stderr
    assert len(os.listdir(instance.path("mail", "example.test", ".deleted"))) == 2


def test_purge_removes_the_maildir(instance):
    instance.add_user("joe@example.test")
    instance.add_user("tmp@example.test")
    rec = instance.path("run", "quota", "tmp@example.test")
    os.makedirs(os.path.dirname(rec), exist_ok=True)
    with open(rec, "w") as f:
        f.write("PBQS1 10 1 1000 0 1700000000\n")
    r = instance.run("mail-user", "del", "--purge", "tmp@example.test")
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(rec)  # the quota record goes with the account
    assert not os.path.exists(instance.maildir("tmp@example.test"))
    assert not os.path.exists(instance.path("mail", "example.test", ".deleted"))
    assert instance.run("mail-user", "list").stdout == b"joe@example.test\n"
    for bad in (["del"], ["del", "--frob", "joe@example.test"],
                ["del", "joe@example.test", "x@example.test"]):
        assert instance.run("mail-user", *bad).returncode == 100, bad


def test_self_copy_alias_survives_the_delete(instance):
    """"joe: joe, ext" keeps a copy in joe's box; with joe gone it forwards, not loops."""
    instance.add_user("boss@example.test")
    instance.add_user("joe@example.test")
    instance.add_alias("joe@example.test", "joe@example.test", "joe@remote.test")
    assert instance.run("mail-user", "del", "-f", "joe@example.test").returncode == 0
    assert lookup(instance, "joe@example.test") == (0, ["remote joe@remote.test"])


# ---------------------------------------------------------------- mail-alias refuses loops

def test_mail_alias_refuses_loops_naming_them(instance):
    instance.add_user("joe@example.test")
    instance.add_alias("a@example.test", "b@example.test")
    instance.add_alias("b@example.test", "c@example.test", "x@remote.test")
    before = open(instance.path("control", "aliases")).read()
    cdb = open(instance.path("control", "aliases.cdb"), "rb").read()
    for args, loop in [
        (["c@example.test", "a@example.test"],
         b"c@example.test -> a@example.test -> b@example.test -> c@example.test"),
        (["a@example.test", "a+tag@example.test"], b"a@example.test -> a@example.test"),
        (["@example.test", "nobody@example.test"], b"@example.test -> @example.test"),
    ]:
        r = instance.run("mail-alias", "add", *args)
        assert r.returncode == 100, (args, r.stderr)
        assert b"alias loop: " + loop in r.stderr, r.stderr
        assert open(instance.path("control", "aliases")).read() == before
        assert open(instance.path("control", "aliases.cdb"), "rb").read() == cdb
    # not loops: a copy kept in an account, a catch-all to an account, a chain that ends
    instance.add_alias("joe@example.test", "joe@example.test", "j@remote.test")
    instance.add_alias("@example.test", "joe@example.test")
    instance.add_alias("c@example.test", "joe@example.test")
    assert lookup(instance, "a@example.test")[0] == 0


# ---------------------------------------------------------------- control/README is complete

def control_names_in_sources():
    """Every control file a program reads, found in bin/*.c and lib/*.c by the ways they read
    them: control_*("NAME" / control_*(&sa, "NAME"), the programs' getcontrol / getlimit /
    keyed wrappers, tables of {"NAME", default, ...} read with control_*(table[i]...), and
    "control/NAME" literals."""
    import glob
    import re
    from conftest import ROOT
    pats = [r'\bcontrol_\w+\(\s*(?:&?\w+,\s*)?"([a-z0-9][a-z0-9.-]*)"',
            r'\b(?:getcontrol|getlimit|keyed)\([^"()]*"([a-z0-9][a-z0-9.-]*)"',
            r'"control/([a-z0-9][a-z0-9.-]*)"']
    names = set()
    for f in glob.glob(os.path.join(ROOT, "bin", "*.c")) + glob.glob(os.path.join(ROOT, "lib", "*.c")):
        src = open(f, errors="replace").read()
        for p in pats:
            names.update(re.findall(p, src))
        if re.search(r'control_\w+\(\s*\w+\[', src):  # a table {"name", default, ...}
            names.update(re.findall(r'\{\s*"([a-z][a-z0-9-]*)",\s*[0-9]+\s*,', src))
    # compiled forms and temporaries are described with their source
    return {n[:-4] if n.endswith(".cdb") else n for n in names if not n.endswith(".tmp")}


def test_control_readme_names_every_setting(instance):
    names = control_names_in_sources()
    assert {"me", "databytes", "concurrency-local", "pop3-timeout", "routes",
            "defaultdomain"} <= names  # the scan finds what it should
    readme = open(instance.path("control", "README")).read()
    listed = {l[2:].split()[0] for l in readme.splitlines()
              if l.startswith("# ") and len(l) > 2 and l[2] not in " "}
    missing = sorted(n for n in names if n not in listed and n != "passwd")
    assert missing == [], "control/README (bin/mail-instance.c) does not list: %s" % missing
