"""Accounts benchmark (lib/lookup, lib/accounts, the admin commands).

1. Lookup: lookup_resolve over a mix of addresses (exact, +tag, catch-all, a 10-target list,
   a forwarder, a remote domain) in an instance of 10,000 accounts and 1,000 aliases, calls
   per second. Baseline in the same run: lookup_is_local_domain, a single cdb probe. The
   ratio says how many probes' worth a full resolution costs (each call also stats the three
   databases to notice rebuilds).
2. Rebuild: `mail-user rebuild` of a 10,000-account control/users (parse, validate, write
   the cdb, fsync, rename, text rewrite). Baseline: writing the same bytes twice durably from
   Python (write, fsync, rename, fsync dir) - the I/O a rebuild cannot avoid.
3. One `mail-user add` into that instance (yescrypt hashing included), against the same
   baseline.

Environment: BENCH_LOOKUPS (default 300000).
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.join(ROOT, "build", "bin")  # where make puts the programs
LOOKUPS = int(os.environ.get("BENCH_LOOKUPS", "300000"))
USERS = 10000
ALIASES = 1000


def run(*args, **kw):
    return subprocess.run(list(args), check=True, capture_output=True, timeout=300, **kw)


def durable_write(path, data):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)
    os.rename(tmp, path)
    d = os.open(os.path.dirname(path), os.O_RDONLY)
    os.fsync(d)
    os.close(d)


def best(f, n=5):
    times = []
    for _ in range(n):
        t = time.monotonic()
        f()
        times.append(time.monotonic() - t)
    return min(times)


def main():
    tmp = tempfile.mkdtemp(prefix="pillarbox-bench-accounts-")
    try:
        root = os.path.join(tmp, "inst")
        env = dict(os.environ, MAILROOT=root, PATH=BIN + ":" + os.environ.get("PATH", ""))
        os.mkdir(os.path.join(tmp, "no-services"))
        run(os.path.join(BIN, "mail-instance"), "create", root, "--hostname", "mx.example.test",
            "--domain", "example.test", env=dict(env, PILLARBOX_SERVICES=os.path.join(tmp, "no-services")))
        h = "$y$j9T$0123456789abcdefghijkl$0123456789abcdefghijklmnopqrstuvwxyzABCDE"
        users = "".join("u%d@example.test:%s:mail/example.test/u%d:0\n" % (i, h, i)
                        for i in range(USERS)).encode()
        aliases = ["@example.test: u0@example.test\n"]
        for i in range(ALIASES // 2):
            aliases.append("list%d@example.test: %s\n" % (
                i, ", ".join("u%d@example.test" % (i * 10 + k) for k in range(10))))
            aliases.append("fwd%d@example.test: f%d@remote.test\n" % (i, i))
        with open(os.path.join(root, "control", "users"), "wb") as f:
            f.write(users)
        with open(os.path.join(root, "control", "aliases"), "w") as f:
            f.write("".join(aliases))
        run(os.path.join(BIN, "mail-user"), "rebuild", env=env)
        run(os.path.join(BIN, "mail-alias"), "rebuild", env=env)

        # 1. lookups
        exe = os.path.join(tmp, "accounts-lookup")
        run("cc", "-O2", "-std=c99", "-D_POSIX_C_SOURCE=200809L", "-iquote", os.path.join(ROOT, "lib"),
            "-o", exe, os.path.join(HERE, "accounts-lookup.c"),
            os.path.join(ROOT, "build", "libpillarbox.a"), "-l:libcdb.a", "-l:libskarnet.a",
            "-lcrypt")
        t_dom = min(float(run(exe, str(LOOKUPS), "domain", env=env).stdout) for _ in range(3))
        t_res = min(float(run(exe, str(LOOKUPS), "resolve", env=env).stdout) for _ in range(3))
        print("lookup: %d lookup_resolve calls: %.0f/s; baseline lookup_is_local_domain: %.0f/s;"
              " ratio %.2f" % (LOOKUPS, LOOKUPS / t_res, LOOKUPS / t_dom, t_dom / t_res))

        # 2. rebuild of 10,000 accounts
        t_rebuild = best(lambda: run(os.path.join(BIN, "mail-user"), "rebuild", env=env))
        cdb = open(os.path.join(root, "control", "users.cdb"), "rb").read()
        scratch = os.path.join(tmp, "scratch")
        t_base = best(lambda: (durable_write(scratch, users), durable_write(scratch + "2", cdb)))
        print("rebuild: %d accounts in %.1f ms; baseline durable write of the same bytes:"
              " %.1f ms; ratio %.2f" % (USERS, t_rebuild * 1e3, t_base * 1e3, t_base / t_rebuild))

        # 3. one add (hashing included)
        n = [0]

        def add():
            n[0] += 1
            run(os.path.join(BIN, "mail-user"), "add", "new%d@example.test" % n[0],
                input=b"a password\n", env=env)
        t_add = best(add, 3)
        print("add: one mail-user add into %d accounts: %.1f ms (ratio to the durable write"
              " baseline %.2f)" % (USERS, t_add * 1e3, t_base / t_add))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
