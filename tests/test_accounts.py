"""Accounts, domains, aliases and instances, driven through the real admin commands the way a
postmaster types them: mail-instance, mail-domain, mail-user, mail-alias, mail-lookup."""
import concurrent.futures
import os
import shutil
import stat
import subprocess
import warnings

import pytest

from conftest import Instance, base_env, prog, wait_for

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # noqa: E402  (deprecated in 3.11, still the way to check a crypt(3) hash)


def create(root, *args, env=None):
    e = base_env()
    if env:
        e.update(env)
    return subprocess.run([prog("mail-instance"), "create", str(root)] + list(args), env=e,
                          capture_output=True, timeout=60)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def read(path, binary=False):
    with open(path, "rb" if binary else "r") as f:
        return f.read()


def users_lines(inst):
    return [l for l in read(inst.path("control", "users")).splitlines()
            if l and not l.startswith("#")]


def roles(*domains):
    """The aliases mail-instance makes for each domain (issue 10): root, abuse and
    MAILER-DAEMON reach the domain's postmaster."""
    return ["%s@%s: postmaster@%s" % (r, d, d) for d in domains
            for r in ("root", "abuse", "mailer-daemon")]


def roles_text(*domains):
    return "".join(l + "\n" for l in roles(*domains))


def lookup(inst, *addrs):
    r = inst.run("mail-lookup", *addrs)
    return r.returncode, r.stdout.decode().splitlines()


# ---------------------------------------------------------------- mail-instance

def test_instance_tree(tmp_path):
    tpl = tmp_path / "templates"
    (tpl / "smtp" / "log").mkdir(parents=True)
    (tpl / "smtp" / "run").write_text("#!/bin/sh\nexec @BINDIR@/smtp-receive @MAILROOT@/x\n")
    (tpl / "smtp" / "run").chmod(0o755)
    (tpl / "smtp" / "notification-fd").write_text("3\n")
    (tpl / "smtp" / "log" / "run").write_text("#!/bin/sh\nexec s6-log @MAILROOT@/log/smtp\n")
    (tpl / "smtp" / "log" / "run").chmod(0o700)
    (tpl / "make-run").write_text("not a service\n")
    (tpl / ".hidden").mkdir()
    root = tmp_path / "a" / "inst"  # parents are made
    r = create(root, "--hostname", "mx.example.test", "--domain", "Example.TEST",
               "--domain", "other.test", env={"PILLARBOX_SERVICES": str(tpl)})
    assert r.returncode == 0, r.stderr
    for d in ("control", "tls", "queue", "mail", "service", "log"):
        assert os.path.isdir(root / d), d
    assert mode(root / "tls") == 0o700
    assert read(root / "control" / "me") == "mx.example.test\n"
    assert read(root / "control" / "domains").split() == ["example.test", "other.test"]
    for name in ("domains", "users", "aliases"):
        assert os.path.getsize(root / "control" / (name + ".cdb")) >= 2048  # cdb header
    assert read(root / "control" / "users") == ""
    assert read(root / "control" / "aliases") == roles_text("example.test", "other.test")
    assert "databytes" in read(root / "control" / "README")
    # tcp-rules and its cdb
    assert read(root / "control" / "tcp-rules") == \
        '127.:allow,RELAYCLIENT=""\n::1:allow,RELAYCLIENT=""\n:allow\n'
    assert os.path.getsize(root / "control" / "tcp-rules.cdb") > 2048
    # the certificate: EC P-256 for the host name, key private
    assert mode(root / "tls" / "key.pem") == 0o600
    x = subprocess.run(["openssl", "x509", "-in", str(root / "tls" / "cert.pem"), "-noout",
                        "-subject", "-ext", "subjectAltName", "-text"],
                       capture_output=True, timeout=30)
    assert x.returncode == 0, x.stderr
    out = x.stdout.decode()
    assert "CN = mx.example.test" in out and "DNS:mx.example.test" in out
    assert "prime256v1" in out or "P-256" in out
    # services: copied with tokens replaced and modes kept; loose files and dot dirs skipped
    run = root / "service" / "smtp" / "run"
    assert read(run) == "#!/bin/sh\nexec %s/smtp-receive %s/x\n" % (
        os.path.realpath(os.path.dirname(prog("mail-instance"))), root)
    assert mode(run) == 0o755 and mode(root / "service" / "smtp" / "log" / "run") == 0o700
    assert read(root / "service" / "smtp" / "notification-fd") == "3\n"
    assert sorted(os.listdir(root / "service")) == ["smtp"]
    # the new instance is usable at once
    inst = Instance(root)
    assert inst.run("mail-domain", "list").stdout.decode().split() == \
        ["example.test", "other.test"]


def test_instance_relative_root_and_empty_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    e = base_env()
    r = subprocess.run([prog("mail-instance"), "create", "empty", "--hostname", "h.test",
                        "--domain", "d.test"], cwd=tmp_path, env=e, capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert read(tmp_path / "empty" / "control" / "domains") == "d.test\n"


def test_instance_refuses_to_overwrite(tmp_path, instance):
    me = read(instance.path("control", "me"))
    instance.add_user("demo@example.test", "pw1")
    before = read(instance.path("control", "users"))
    r = create(instance.root, "--hostname", "other.test", "--domain", "other.test")
    assert r.returncode == 100
    assert b"refusing" in r.stderr
    assert read(instance.path("control", "me")) == me
    assert read(instance.path("control", "users")) == before
    # a directory with anything in it, and a file
    (tmp_path / "notempty").mkdir()
    (tmp_path / "notempty" / "x").write_text("keep\n")
    assert create(tmp_path / "notempty", "--hostname", "h.test", "--domain", "d.test") \
        .returncode == 100
    assert os.listdir(tmp_path / "notempty") == ["x"]
    (tmp_path / "file").write_text("")
    assert create(tmp_path / "file", "--hostname", "h.test", "--domain", "d.test") \
        .returncode == 100


@pytest.mark.parametrize("args", [
    [],
    ["--hostname", "h.test"],
    ["--domain", "d.test"],
    ["--hostname", "h.test", "--domain"],
    ["--hostname", "h.test", "--domain", "d.test", "--bogus"],
    ["--hostname", "bad host", "--domain", "d.test"],
    ["--hostname", "h.test", "--domain", "d..test"],
    ["--hostname", "h.test", "--domain", "-d.test"],
    ["--hostname", "h.test", "--domain", "d.test", "--domain", "D.test"],  # duplicate
])
def test_instance_usage(tmp_path, args):
    r = create(tmp_path / "i", *args)
    assert r.returncode == 100, r.stderr
    assert not os.path.exists(tmp_path / "i" / "control" / "domains.cdb")


def test_instance_without_openssl_warns(tmp_path):
    # a PATH with tcprules but no openssl
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink("/usr/bin/tcprules", bindir / "tcprules")
    r = create(tmp_path / "i", "--hostname", "h.test", "--domain", "d.test",
               env={"PATH": str(bindir)})
    assert r.returncode == 0, r.stderr
    assert b"openssl" in r.stderr and b"warning" in r.stderr
    assert not os.path.exists(tmp_path / "i" / "tls" / "key.pem")
    assert os.path.exists(tmp_path / "i" / "control" / "tcp-rules.cdb")


# ---------------------------------------------------------------- mail-domain

def test_domains(instance):
    def domains():
        return instance.run("mail-domain", "list").stdout.decode().split()
    assert domains() == ["example.test"]
    instance.add_domain("Second.TEST")
    assert domains() == ["example.test", "second.test"]
    r = instance.run("mail-domain", "add", "second.test")  # already there: harmless
    assert r.returncode == 0 and b"already" in r.stderr
    assert domains() == ["example.test", "second.test"]
    for bad in ("bad domain", "a..b", "x.", "-x.test", "[1.2.3.4]", "", "a" * 64 + ".test"):
        r = instance.run("mail-domain", "add", bad)
        assert r.returncode == 100, bad
    assert instance.run("mail-domain", "del", "unknown.test").returncode == 100
    instance.add_user("joe@second.test")
    instance.add_alias("@second.test", "joe@second.test")
    r = instance.run("mail-domain", "del", "SECOND.test")
    assert r.returncode == 0
    # the catch-all and postmaster@second.test (made by the domain's first account)
    assert b"1 account(s)" in r.stderr and b"2 alias(es)" in r.stderr
    assert domains() == ["example.test"]
    assert lookup(instance, "joe@second.test") == (0, ["remote joe@second.test"])
    assert instance.run("mail-domain").returncode == 100
    assert instance.run("mail-domain", "frob", "x.test").returncode == 100


def test_domain_decides_local(instance):
    instance.add_user("demo@example.test")
    assert lookup(instance, "demo@example.test") == \
        (0, ["local demo@example.test " + instance.maildir("demo@example.test")])
    assert lookup(instance, "demo@Example.TEST")[0] == 0
    assert lookup(instance, "x@second.test") == (0, ["remote x@second.test"])
    instance.add_domain("second.test")
    assert lookup(instance, "x@second.test") == (100, ["unknown x@second.test"])


# ---------------------------------------------------------------- mail-user

def test_user_add(instance):
    instance.add_user("Demo@Example.TEST", "correct horse\r")
    [line] = users_lines(instance)
    addr, h, maildir, quota = line.split(":")
    assert addr == "demo@example.test" and maildir == "mail/example.test/demo" and quota == "0"
    assert h.startswith("$y$") or h.startswith("$6$")
    assert crypt.crypt("correct horse", h) == h       # CR LF stripped
    assert crypt.crypt("correct horse\r", h) != h
    assert "correct horse" not in read(instance.path("control", "users"))
    md = instance.maildir("demo@example.test")
    for sub in ("tmp", "new", "cur"):
        assert os.path.isdir(os.path.join(md, sub)) and mode(os.path.join(md, sub)) == 0o700
    assert mode(md) == 0o700
    assert instance.run("mail-user", "list").stdout == b"demo@example.test\n"


def test_user_add_makes_the_default_folders(instance):
    """Issue 12: the account starts with its Maildir++ folders (.Sent .Drafts .Trash .Junk
    .Archive, each a Maildir with its maildirfolder file, all subscribed), owned like the rest of
    mail/ (the delivery uid when an instance made by root is administered by root)."""
    instance.add_user("folders@example.test")
    md = instance.maildir("folders@example.test")
    owner = os.stat(instance.path("mail"))
    names = ["Sent", "Drafts", "Trash", "Junk", "Archive"]
    for n in names:
        f = os.path.join(md, "." + n)
        for sub in ("tmp", "new", "cur"):
            assert os.path.isdir(os.path.join(f, sub)), (n, sub)
        assert os.path.isfile(os.path.join(f, "maildirfolder")), n
    assert sorted(read(os.path.join(md, "subscriptions")).split()) == sorted(names)
    for d, dirs, files in os.walk(md):
        for x in [d] + [os.path.join(d, y) for y in files]:
            st = os.lstat(x)
            assert (st.st_uid, st.st_gid) == (owner.st_uid, owner.st_gid), x
    if os.geteuid() == 0:
        assert owner.st_uid != 0  # mail/ is pb-deliv's, so the folders are too
    # nothing else changed: the account is listed as before
    assert instance.run("mail-user", "list").stdout == b"folders@example.test\n"


def test_user_add_refusals(instance):
    def add(addr, pw=b"pw\n", *extra):
        return instance.run("mail-user", "add", addr, *extra, input=pw)
    instance.add_user("demo@example.test")
    assert add("demo@example.test").returncode == 100             # exists
    assert add("DEMO@example.test").returncode == 100             # exists, any case
    assert add("x@foreign.test").returncode == 100                # not a local domain
    assert add("x@example.test", b"").returncode == 100          # no password
    assert add("x@example.test", b"\n").returncode == 100        # empty password
    assert add("x@example.test", b"\r\n").returncode == 100
    assert add("x@example.test", b"a\0b\n").returncode == 100    # NUL
    assert add("x@example.test", b"p" * 1025 + b"\n").returncode == 100
    assert add("x@example.test", b"p" * 5000).returncode == 100
    for bad in ("x", "x@", "@example.test", "a b@example.test", ";sleep 5;@example.test",
                '"q"@example.test', "a/b@example.test", "x@[1.2.3.4]", "x@example.test.",
                "a" * 65 + "@example.test"):
        r = add(bad)
        assert r.returncode == 100, bad
    assert add("x@example.test", b"pw\n", "--quota").returncode == 100
    assert add("x@example.test", b"pw\n", "--quota", "12k").returncode == 100
    assert add("x@example.test", b"pw\n", "--frob").returncode == 100
    assert instance.run("mail-user", "list").stdout == b"demo@example.test\n"
    assert not os.path.exists(instance.path("mail", "example.test", "x"))
    # libcrypt hashes at most 511 bytes (CRYPT_MAX_PASSPHRASE_SIZE): longer is refused
    r = add("x@example.test", b"p" * 512 + b"\n")
    assert r.returncode == 100 and b"511" in r.stderr
    assert add("x@example.test", b"p" * 1024 + b"\n").returncode == 100
    # the longest password is fine
    r = add("long@example.test", b"p" * 511 + b"\r\n")
    assert r.returncode == 0, r.stderr
    h = [l for l in users_lines(instance) if l.startswith("long@")][0].split(":")[1]
    assert crypt.crypt("p" * 511, h) == h


def test_password_never_in_argv(instance):
    secret = "Sekr1t-only-on-stdin"
    p = subprocess.Popen([prog("mail-user"), "add", "demo@example.test"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=instance.env)
    try:
        def cmdline():
            try:
                with open("/proc/%d/cmdline" % p.pid, "rb") as f:
                    c = f.read()
            except OSError:
                return None
            return c if b"mail-user" in c else None
        c = wait_for(cmdline, what="mail-user to start")
        assert c.split(b"\0")[:3] == [prog("mail-user").encode(), b"add", b"demo@example.test"]
        assert secret.encode() not in c
        out, err = p.communicate(secret.encode() + b"\n", timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    h = users_lines(instance)[0].split(":")[1]
    assert crypt.crypt(secret, h) == h
    assert secret not in read(instance.path("control", "users"))
    with open(instance.path("control", "users.cdb"), "rb") as f:
        assert secret.encode() not in f.read()


def test_user_passwd_quota_del(instance):
    instance.add_user("demo@example.test", "old", "--quota", "1000")
    instance.add_user("bob@example.test", "bob")
    assert users_lines(instance)[0].endswith(":mail/example.test/demo:1000")
    r = instance.run("mail-user", "passwd", "Demo@example.test", input=b"new\n")
    assert r.returncode == 0, r.stderr
    line = users_lines(instance)[0]
    h = line.split(":")[1]
    assert crypt.crypt("new", h) == h and crypt.crypt("old", h) != h
    assert line.endswith(":mail/example.test/demo:1000")           # the rest is kept
    assert instance.run("mail-user", "passwd", "demo@example.test", input=b"").returncode == 100
    assert crypt.crypt("new", users_lines(instance)[0].split(":")[1]) == users_lines(instance)[0].split(":")[1]
    assert instance.run("mail-user", "passwd", "nobody@example.test",
                        input=b"x\n").returncode == 100
    assert instance.run("mail-user", "quota", "demo@example.test", "5000").returncode == 0
    assert users_lines(instance)[0] == line[:-4] + "5000"
    assert instance.run("mail-user", "quota", "demo@example.test", "-1").returncode == 100
    assert instance.run("mail-user", "list").stdout == b"demo@example.test\nbob@example.test\n"
    assert instance.run("mail-user", "list", "other.test").stdout == b""
    # demo, the first account, is postmaster@'s target: refused without --force (issue 10)
    r = instance.run("mail-user", "del", "DEMO@example.test")
    assert r.returncode == 100 and b"postmaster@example.test" in r.stderr
    assert instance.run("mail-user", "del", "--force", "DEMO@example.test").returncode == 0
    assert instance.run("mail-user", "del", "demo@example.test").returncode == 100
    assert instance.run("mail-user", "list").stdout == b"bob@example.test\n"
    assert lookup(instance, "demo@example.test") == (100, ["unknown demo@example.test"])
    # the Maildir is kept (mail is never thrown away by an admin command), moved aside
    [kept] = os.listdir(instance.path("mail", "example.test", ".deleted"))
    assert kept.startswith("demo-")
    assert os.path.isdir(instance.path("mail", "example.test", ".deleted", kept, "new"))
    # and the account can come back
    instance.add_user("demo@example.test", "again")
    assert lookup(instance, "demo@example.test")[0] == 0


def test_parallel_adds_all_land(instance):
    def add(i):
        return instance.run("mail-user", "add", "u%d@example.test" % i, input=b"pw\n").returncode
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        assert list(ex.map(add, range(16))) == [0] * 16
    listed = instance.run("mail-user", "list").stdout.decode().split()
    assert sorted(listed) == sorted("u%d@example.test" % i for i in range(16))
    rc, out = lookup(instance, *["u%d@example.test" % i for i in range(16)])
    assert rc == 0 and len(out) == 16


def test_commands_need_an_instance(tmp_path):
    env = base_env(MAILROOT=str(tmp_path / "nowhere"))
    for args in (["mail-user", "list"], ["mail-user", "add", "a@b.test"], ["mail-domain", "list"],
                 ["mail-domain", "add", "b.test"], ["mail-alias", "list"],
                 ["mail-alias", "add", "a@b.test", "c@d.test"]):
        r = subprocess.run([prog(args[0])] + args[1:], env=env, input=b"pw\n",
                           capture_output=True, timeout=30)
        assert r.returncode == 100, (args, r.stderr)
        assert b"MAILROOT" in r.stderr
    assert not os.path.exists(tmp_path / "nowhere")


# ---------------------------------------------------------------- mail-alias

def test_aliases(instance):
    instance.add_user("demo@example.test")
    instance.add_alias("Postmaster@example.test", "demo@example.test")
    instance.add_alias("list@example.test", "demo@example.test", "Ext@Remote.test")
    instance.add_alias("list@example.test", "DEMO@example.test", "other@remote.test")  # merged
    instance.add_alias("@example.test", "demo@example.test")
    assert instance.run("mail-alias", "list").stdout.decode().splitlines() == roles(
        "example.test") + [
        "postmaster@example.test: demo@example.test",
        "list@example.test: demo@example.test, Ext@Remote.test, other@remote.test",
        "@example.test: demo@example.test",
    ]
    md = instance.maildir("demo@example.test")
    assert lookup(instance, "list@example.test") == (0, [
        "local demo@example.test " + md, "remote Ext@Remote.test", "remote other@remote.test"])
    # remove one target, then the whole alias
    assert instance.run("mail-alias", "del", "list@example.test", "ext@remote.test").returncode == 0
    assert lookup(instance, "list@example.test")[1] == [
        "local demo@example.test " + md, "remote other@remote.test"]
    assert instance.run("mail-alias", "del", "list@example.test", "nope@x.test").returncode == 100
    assert instance.run("mail-alias", "del", "list@example.test").returncode == 0
    assert instance.run("mail-alias", "del", "list@example.test").returncode == 100
    # removing the last target removes the alias
    assert instance.run("mail-alias", "del", "postmaster@example.test",
                        "demo@example.test").returncode == 0
    assert instance.run("mail-alias", "list").stdout.decode() == roles_text("example.test") + \
        "@example.test: demo@example.test\n"


@pytest.mark.parametrize("args", [
    ["add", "x@foreign.test", "demo@example.test"],     # alias outside the local domains
    ["add", "@foreign.test", "demo@example.test"],
    ["add", "x@example.test"],                          # no target
    ["add", "x@example.test", "@example.test"],         # catch-all as a target
    ["add", "x@example.test", "not an address"],
    ["add", "x@example.test", ";rm -rf /;@x.test"],
    ["add", "x@example.test", "a@b.test,c@d.test"],     # one argument, one target
    ["add", "bad", "demo@example.test"],
    ["add", "@", "demo@example.test"],
    ["del", "nobody@example.test"],
    ["frob"],
    [],
])
def test_alias_refusals(instance, args):
    before = read(instance.path("control", "aliases.cdb"), binary=True)
    r = instance.run("mail-alias", *args)
    assert r.returncode == 100, r.stderr
    assert read(instance.path("control", "aliases.cdb"), binary=True) == before
    assert read(instance.path("control", "aliases")) == roles_text("example.test")


def test_lookup_order(instance):
    """exact, then user+tag, then the catch-all; domains in any case."""
    for u in ("demo", "tagged", "catch", "exact+tag"):
        instance.add_user(u + "@example.test")
    instance.add_alias("@example.test", "catch@example.test")
    instance.add_alias("fwd+x@example.test", "x@remote.test")
    md = instance.maildir

    def one(a):
        rc, out = lookup(instance, a)
        assert rc == 0, (a, out)
        return out

    assert one("demo@example.test") == ["local demo@example.test " + md("demo@example.test")]
    assert one("DEMO+news@EXAMPLE.test") == ["local demo@example.test " + md("demo@example.test")]
    assert one("exact+tag@example.test") == \
        ["local exact+tag@example.test " + md("exact+tag@example.test")]
    assert one("exact+other@example.test") == ["local catch@example.test " + md("catch@example.test")]
    assert one("nobody@example.test") == ["local catch@example.test " + md("catch@example.test")]
    assert one("fwd+x@example.test") == ["remote x@remote.test"]
    assert one("fwd+y@example.test") == ["local catch@example.test " + md("catch@example.test")]
    # without the catch-all, the unknown stay unknown
    assert instance.run("mail-alias", "del", "@example.test").returncode == 0
    assert lookup(instance, "nobody@example.test") == (100, ["unknown nobody@example.test"])


def test_alias_loops_and_copies(instance):
    instance.add_user("a@example.test")
    instance.add_alias("a@example.test", "a@example.test", "b@remote.test")  # keep a copy
    instance.add_alias("l1@example.test", "l2@example.test")
    # mail-alias refuses to close the loop (issue 10), naming it ...
    r = instance.run("mail-alias", "add", "l2@example.test", "l1@example.test")
    assert r.returncode == 100
    assert (b"alias loop: l2@example.test -> l1@example.test -> l2@example.test"
            in r.stderr), r.stderr
    # ... and a loop made by hand is still caught by the lookup
    with open(instance.path("control", "aliases"), "a") as f:
        f.write("l2@example.test: l1@example.test\n")
    assert instance.run("mail-alias", "rebuild").returncode == 0
    rc, out = lookup(instance, "a@example.test")
    assert rc == 0 and out == ["local a@example.test " + instance.maildir("a@example.test"),
                               "remote b@remote.test"]
    assert lookup(instance, "l1@example.test") == (100, ["loop l1@example.test"])
    # a chain too deep is a loop too
    for i in range(11):
        instance.add_alias("d%d@example.test" % i, "d%d@example.test" % (i + 1))
    instance.add_alias("d11@example.test", "end@remote.test")
    assert lookup(instance, "d2@example.test") == (0, ["remote end@remote.test"])  # 10 deep
    assert lookup(instance, "d1@example.test") == (100, ["loop d1@example.test"])  # 11
    assert lookup(instance, "d0@example.test") == (100, ["loop d0@example.test"])


# ---------------------------------------------------------------- atomic rebuilds

@pytest.mark.parametrize("kind,junk,cmd", [
    ("users", "this line is junk\n", ["mail-user", "add", "new@example.test"]),
    ("users", "x@example.test:h:mail/x:12k\n", ["mail-user", "add", "new@example.test"]),
    ("aliases", "a@example.test b@example.test\n", ["mail-alias", "add", "n@example.test",
                                                      "demo@example.test"]),
    ("aliases", "a@example.test: ;sleep 5;\n", ["mail-alias", "add", "n@example.test",
                                                  "demo@example.test"]),
    ("domains", "not a domain\n", ["mail-domain", "add", "new.test"]),
])
def test_junk_keeps_old_database(instance, kind, junk, cmd):
    instance.add_user("demo@example.test")
    instance.add_alias("post@example.test", "demo@example.test")
    src = instance.path("control", kind)
    db = src + ".cdb"
    old_db = read(db, binary=True)
    old_ino = os.stat(db).st_ino
    with open(src, "a") as f:
        f.write("# a comment\n\n" + junk)
    edited = read(src)
    nline = edited.count("\n")
    r = instance.run(*cmd, input=b"pw\n")
    assert r.returncode == 100
    assert ("control/%s line %d:" % (kind, nline)).encode() in r.stderr, r.stderr
    assert read(db, binary=True) == old_db and os.stat(db).st_ino == old_ino
    assert read(src) == edited
    assert not os.path.exists(db + ".tmp")
    r = instance.run(cmd[0], "rebuild")
    assert r.returncode == 100 and ("line %d" % nline).encode() in r.stderr
    assert read(db, binary=True) == old_db
    # the old database still answers
    assert lookup(instance, "post@example.test")[0] == 0
    # fix the file by hand and rebuild
    with open(src, "w") as f:
        f.write(edited[: -len(junk)])
    r = instance.run(cmd[0], "rebuild")
    assert r.returncode == 0, r.stderr
    assert os.stat(db).st_ino != old_ino
    r = instance.run(*cmd, input=b"pw\n")
    assert r.returncode == 0, r.stderr


def test_hand_edit_and_rebuild(instance):
    """A postmaster may edit the text sources; rebuild makes them live."""
    instance.add_user("demo@example.test")
    with open(instance.path("control", "aliases"), "a") as f:
        f.write("# sales team\nsales@example.test: demo@example.test, boss@remote.test\n")
    assert lookup(instance, "sales@example.test")[0] == 100
    assert instance.run("mail-alias", "rebuild").returncode == 0
    assert lookup(instance, "sales@example.test")[1][1] == "remote boss@remote.test"
    # edits through the commands keep the comments
    instance.add_alias("info@example.test", "demo@example.test")
    assert "# sales team\n" in read(instance.path("control", "aliases"))
    # an absolute Maildir in a hand-written account
    with open(instance.path("control", "users"), "a") as f:
        f.write("abs@example.test::/srv/mail/abs:0\n")
    assert instance.run("mail-user", "rebuild").returncode == 0
    assert lookup(instance, "abs@example.test") == (0, ["local abs@example.test /srv/mail/abs"])


# ---------------------------------------------------------------- password hashes kept apart

def as_nobody(*argv, env=None):
    """Runs argv as the unprivileged user nobody (setpriv), as a service without the right to
    read the hashes would run."""
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                           "--"] + list(argv), env=env, capture_output=True, timeout=30)


def test_hashes_only_in_private_files(instance):
    instance.add_user("demo@example.test", "Sekr1t")
    c = instance.path("control")
    h = users_lines(instance)[0].split(":")[1]
    assert mode(os.path.join(c, "users")) == 0o600
    assert mode(os.path.join(c, "passwd.cdb")) == 0o600
    assert mode(os.path.join(c, "users.cdb")) == 0o644
    assert mode(os.path.join(c, "aliases.cdb")) == 0o644
    assert h.encode() not in read(os.path.join(c, "users.cdb"), binary=True)
    assert h.encode() in read(os.path.join(c, "passwd.cdb"), binary=True)
    # a umask that would open (0) or close (077) them changes nothing
    for um in (0o000, 0o077):
        r = subprocess.run(["sh", "-c", "umask %03o && exec \"$0\" passwd demo@example.test"
                            % um, prog("mail-user")], env=instance.env, input=b"Sekr1t\n",
                           capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert mode(os.path.join(c, "users")) == 0o600
        assert mode(os.path.join(c, "passwd.cdb")) == 0o600
        assert mode(os.path.join(c, "users.cdb")) == 0o644
    # a world-readable users from before passwd.cdb existed becomes private (not 0640)
    os.chmod(os.path.join(c, "users"), 0o644)
    assert instance.run("mail-user", "rebuild").returncode == 0
    assert mode(os.path.join(c, "users")) == 0o600
    # a leftover temporary file with loose modes is not reused
    with open(os.path.join(c, "passwd.cdb.tmp"), "w") as f:
        f.write("junk")
    os.chmod(os.path.join(c, "passwd.cdb.tmp"), 0o666)
    assert instance.run("mail-user", "rebuild").returncode == 0
    assert mode(os.path.join(c, "passwd.cdb")) == 0o600
    assert not os.path.exists(os.path.join(c, "passwd.cdb.tmp"))


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to act as nobody")
def test_unprivileged_reader_sees_accounts_but_no_hash(instance, tmp_path):
    instance.add_user("demo@example.test", "Sekr1t")
    # nobody must be able to walk to control/ (a tmp_path is 0700 under root)
    p = instance.root
    while p != "/":
        os.chmod(p, os.stat(p).st_mode | 0o711)
        p = os.path.dirname(p)
    c = instance.path("control")
    for name in ("users", "passwd.cdb"):
        r = as_nobody("cat", os.path.join(c, name))
        assert r.returncode != 0 and b"ermission denied" in r.stderr, name
    assert as_nobody("cat", os.path.join(c, "users.cdb")).returncode == 0
    # lookups from an unprivileged process still find the account and its Maildir
    r = as_nobody(prog("mail-lookup"), "demo@example.test", "postmaster@example.test",
                  env=instance.env)
    md = instance.maildir("demo@example.test")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines() == ["local demo@example.test " + md] * 2
    # ... but auth-check there cannot read the hashes: every login is trouble (111), never "bad"
    def auth(pw, who, direct=False):
        """auth-check with user and password on fd 3 (opened by the shell, as root); direct:
        without the auth service's socket (auth-check then runs auth-serve -i, with its own
        rights)."""
        f = tmp_path / "fd3"
        f.write_bytes(b"demo@example.test\0" + pw + b"\0\0")
        argv = [prog("auth-check"), "sh", "-c", 'echo "$HOME"']
        if who == "nobody":
            argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"] + argv
        e = dict(instance.env, FD3=str(f))
        if direct:
            e["AUTH_SOCKET"] = str(tmp_path / "no-such-socket")
        r = subprocess.run(["sh", "-c", 'exec "$@" 3<"$FD3"', "sh"] + argv,
                           env=e, capture_output=True, timeout=30)
        return r.returncode, r.stdout
    assert auth(b"Sekr1t", "nobody")[0] == 111  # issue 10: an unreadable passwd.cdb is trouble, not a bad password
    assert auth(b"Sekr1t", "root") == (0, (md + "\n").encode())
    assert auth(b"wrong", "root")[0] == 1
    # the group of the auth user, given once, survives rebuilds (and never more than g+r)
    os.chown(os.path.join(c, "passwd.cdb"), 0, 65534)
    os.chmod(os.path.join(c, "passwd.cdb"), 0o640)
    r = instance.run("mail-user", "passwd", "demo@example.test", input=b"New1\n")
    assert r.returncode == 0, r.stderr
    st = os.stat(os.path.join(c, "passwd.cdb"))
    assert st.st_gid == 65534 and stat.S_IMODE(st.st_mode) == 0o640
    assert auth(b"New1", "nobody", direct=True) == (0, (md + "\n").encode())  # nogroup reads it now
    assert mode(os.path.join(c, "users")) == 0o600


def test_lookup_without_passwd_cdb(instance):
    """No passwd.cdb (or one from before it existed): accounts are found, logins refused."""
    instance.add_user("demo@example.test", "pw")
    os.unlink(instance.path("control", "passwd.cdb"))
    assert lookup(instance, "demo@example.test")[0] == 0
    assert instance.run("mail-user", "rebuild").returncode == 0
    assert os.path.exists(instance.path("control", "passwd.cdb"))


# ---------------------------------------------------------------- postmaster (RFC 5321 4.5.1)

def aliases_list(inst):
    return inst.run("mail-alias", "list").stdout.decode().splitlines()


def test_first_account_becomes_postmaster(instance):
    md = instance.maildir
    r = instance.add_user("Joe@example.test")
    assert b"postmaster@example.test" in r.stderr
    assert aliases_list(instance) == roles("example.test") + [
        "postmaster@example.test: joe@example.test"]
    assert lookup(instance, "Postmaster@EXAMPLE.test") == \
        (0, ["local joe@example.test " + md("joe@example.test")])
    # later accounts change nothing
    r = instance.add_user("ann@example.test")
    assert b"postmaster" not in r.stderr
    assert aliases_list(instance) == roles("example.test") + [
        "postmaster@example.test: joe@example.test"]
    # a domain added later: its first account is its postmaster
    instance.add_domain("second.test")
    assert lookup(instance, "postmaster@second.test") == (100, ["unknown postmaster@second.test"])
    instance.add_user("bob@second.test")
    assert lookup(instance, "postmaster@second.test")[1] == \
        ["local bob@second.test " + md("bob@second.test")]
    # an existing postmaster alias is left alone; the admin's choice stays
    instance.add_domain("third.test")
    instance.add_alias("postmaster@third.test", "boss@remote.test")
    instance.add_user("x@third.test")
    assert lookup(instance, "postmaster@third.test")[1] == ["remote boss@remote.test"]
    # a real postmaster account replaces the one-target alias (aliases would hide it)
    r = instance.add_user("postmaster@example.test")
    assert b"removed" in r.stderr
    assert "postmaster@example.test: joe@example.test" not in aliases_list(instance)
    assert lookup(instance, "postmaster@example.test")[1] == \
        ["local postmaster@example.test " + md("postmaster@example.test")]
    # a list is not broken up: the account is warned about instead
    instance.add_alias("postmaster@third.test", "x@third.test")
    r = instance.add_user("postmaster@third.test")
    assert b"warning" in r.stderr and b"mail-alias del postmaster@third.test" in r.stderr
    assert "postmaster@third.test: boss@remote.test, x@third.test" in aliases_list(instance)


def test_postmaster_account_first(instance):
    """The first account being postmaster itself needs no alias."""
    instance.add_user("postmaster@example.test")
    instance.add_user("joe@example.test")
    assert aliases_list(instance) == roles("example.test")


def test_postmaster_alias_junk_keeps_the_account(instance):
    with open(instance.path("control", "aliases"), "w") as f:
        f.write("junk line\n")
    r = instance.run("mail-user", "add", "joe@example.test", input=b"pw\n")
    assert r.returncode == 0
    assert b"warning" in r.stderr and b"aliases line 1" in r.stderr
    assert instance.run("mail-user", "list").stdout == b"joe@example.test\n"
    assert read(instance.path("control", "aliases")) == "junk line\n"


def test_instance_postmaster_option(tmp_path):
    root = tmp_path / "i"
    r = create(root, "--hostname", "h.test", "--domain", "A.test", "--domain", "b.test",
               "--postmaster", "Boss@Remote.test")
    assert r.returncode == 0, r.stderr
    assert read(root / "control" / "aliases") == \
        "postmaster@a.test: Boss@Remote.test\npostmaster@b.test: Boss@Remote.test\n" + \
        roles_text("a.test", "b.test")
    inst = Instance(root)
    assert lookup(inst, "postmaster@a.test", "POSTMASTER@b.test") == \
        (0, ["remote Boss@Remote.test"] * 2)
    # the first account does not take it over
    inst.add_user("joe@a.test")
    assert lookup(inst, "postmaster@a.test") == (0, ["remote Boss@Remote.test"])
    # a local mailbox that does not exist yet is fine: it works once the account is added
    r = create(tmp_path / "j", "--hostname", "h.test", "--domain", "a.test",
               "--postmaster=admin@a.test")
    assert r.returncode == 0, r.stderr
    j = Instance(tmp_path / "j")
    j.add_user("admin@a.test")
    assert lookup(j, "postmaster@a.test") == (0, ["local admin@a.test " + j.maildir("admin@a.test")])


@pytest.mark.parametrize("args", [
    ["--postmaster"],
    ["--postmaster", "not an address"],
    ["--postmaster", "postmaster@D.test"],          # an alias of itself
    ["--postmaster", "a@x.test", "--postmaster", "b@x.test"],
])
def test_instance_postmaster_refusals(tmp_path, args):
    r = create(tmp_path / "i", "--hostname", "h.test", "--domain", "d.test", *args)
    assert r.returncode == 100, r.stderr
    assert not os.path.exists(tmp_path / "i" / "control" / "aliases.cdb")
