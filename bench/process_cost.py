"""bench/process_cost.py: what a process costs: dynamic against static programs, fork+exec
against posix_spawn, side by side in one run (issue 11, item 6).

Variants: the objects of build/obj (run `make` first) linked here, into temporary directories,
once dynamically and once with -static (glibc, libcrypt and libresolv static archives). A program that uses NSS (getpwnam, getpwuid, ...) is not linked statically: glibc
would load the NSS modules at run time anyway; it stays dynamic in both variants (listed).

Measured, the variants alternated (best of ROUNDS each), every figure next to its baseline
from the same run:
  1. injection: one injector starting queue-inject once per 2 KB message (message on fd 0,
     envelope on fd 1, both from files) against the one-writer durable-commit ceiling
     (bench/_benchlib.ceiling, measured before and after; mean); target >= 0.6.
  2. starting a process: a C driver starts a static no-op program N times with fork+exec and
     with posix_spawn (lib/spawn), from a small parent and from one with 64 MB of touched
     heap (queue-run with a large queue): starts per second and the ratio spawn / fork.
  3. PSS of smtp-receive holding a plaintext session after EHLO under tcpserver, 1 and 20
     sessions held (mean per session); target < 128 KB.
  4. PSS of a logged-in POP3 session (pop3-serve -> auth-check -> pop3-maildir under
     tcpserver, after USER/PASS/STAT/UIDL): the sum over the session's processes; target
     < 256 KB.
  5. TLS handshakes, one `openssl s_time -new` client, tcpserver -> tls-serve -> cat against
     `openssl s_server`, both with mail-instance's EC P-256 certificate; target >= 0.5.
Run: /usr/bin/python3 bench/process_cost.py   (BENCH_PC_N messages, default 2000; BENCH_PC_ROUNDS)
"""
import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.join(ROOT, "build")
BIN = os.path.join(BUILD, "bin")  # where make puts the programs
N = int(os.environ.get("BENCH_PC_N", "2000"))
ROUNDS = int(os.environ.get("BENCH_PC_ROUNDS", "2"))
os.environ.setdefault("BENCH_POP3_MESSAGES", "50")
sys.path.insert(0, HERE)
import _benchlib  # noqa: E402
import pop3 as pop3bench  # noqa: E402  (bench/pop3.py: its client and session PSS)
import smtp as smtpbench  # noqa: E402  (bench/smtp.py: its server and held sessions)
import tls as tlsbench  # noqa: E402  (bench/tls.py: its s_time handshakes)

LIBS = [os.path.join(BUILD, "libpillarbox.a"), "-l:libcdb.a", "-l:libbearssl.a", "-l:libskarnet.a",
        "-l:libz.a", "-lcrypt", "-lresolv"]  # as the Makefile's LIBS
NSS_WARNING = re.compile(rb"statically linked applications requires at runtime")

DRIVER = r"""
/* injdrv MODE COUNT HEAPMB PROG [MSGFILE ENVFILE]: starts PROG COUNT times, one at a time,
 * with fork+exec (MODE fork) or lib/spawn (MODE spawn), fd 0 and 1 from the files (or
 * /dev/null), after touching HEAPMB megabytes of heap; exits 1 if a child failed. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "spawn.h"
int main(int argc, char **argv)
{
  int fork_mode = !strcmp(argv[1], "fork"), count = atoi(argv[2]), i, st;
  size_t heap = (size_t)atoi(argv[3]) << 20;
  char *h = heap ? malloc(heap) : 0;
  char const *av[] = {argv[4], 0};
  int in = open(argc > 5 ? argv[5] : "/dev/null", O_RDONLY);
  int out = open(argc > 6 ? argv[6] : "/dev/null", argc > 6 ? O_RDONLY : O_WRONLY);
  if (h) memset(h, 1, heap);
  if (in < 0 || out < 0) return 2;
  for (i = 0; i < count; i++) {
    pid_t pid;
    if (lseek(in, 0, SEEK_SET) < 0 || lseek(out, 0, SEEK_SET) < 0) { /* /dev/null: fine */ }
    if (fork_mode) {
      pid = fork();
      if (!pid) {
        if (dup2(in, 0) < 0 || dup2(out, 1) < 0) _exit(111);
        execv(av[0], (char *const *)av);
        _exit(111);
      }
    } else {
      spawn_fd map[] = {{0, 0}, {1, 0}};
      map[0].parent = in;
      map[1].parent = out;
      pid = spawn(av, 0, map, 2);
    }
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st)) return 1;
  }
  return h ? (h[heap / 2] == 1 ? 0 : 3) : 0;
}
"""


def sh(argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, timeout=300, **kw)


def build_variant(out, static):
    """Links every program of build/obj into out, dynamically or (static) statically; a program
    that would need NSS is linked dynamically in both. Returns {program: "static" | "dynamic" |
    "dynamic (NSS)"}."""
    kinds = {}
    os.makedirs(out)
    for obj in sorted(glob.glob(os.path.join(BUILD, "obj", "*.o"))):
        name = os.path.basename(obj)[:-2]
        dst = os.path.join(out, name)
        r = subprocess.run(["cc"] + (["-static"] if static else []) + ["-o", dst, obj] + LIBS,
                           capture_output=True, timeout=300)
        if r.returncode != 0:
            raise SystemExit("link of %s failed: %s" % (name, r.stderr.decode()))
        kinds[name] = "static" if static else "dynamic"
        if static and NSS_WARNING.search(r.stderr):
            sh(["cc", "-o", dst, obj] + LIBS)
            kinds[name] = "dynamic (NSS)"
    return kinds


def build_tools(tmp):
    drv = os.path.join(tmp, "injdrv")
    with open(drv + ".c", "w") as f:
        f.write(DRIVER)
    sh(["cc", "-O2", "-std=c99", "-D_POSIX_C_SOURCE=200809L", "-iquote", os.path.join(ROOT, "lib"),
        "-o", drv, drv + ".c"] + LIBS)
    noop = os.path.join(tmp, "noop")
    with open(noop + ".c", "w") as f:
        f.write("int main(void) { return 0; }\n")
    sh(["cc", "-O2", "-static", "-o", noop, noop + ".c"])
    return drv, noop


def timed(argv, env=None):
    t = time.monotonic()
    r = subprocess.run(argv, env=env, capture_output=True, timeout=600)
    if r.returncode:
        raise SystemExit("%s failed (%d): %s" % (argv[:3], r.returncode, r.stderr.decode()[-500:]))
    return time.monotonic() - t


def make_instance(base, name):
    root = os.path.join(base, name)
    e = dict(os.environ, PATH=BIN + ":" + os.environ.get("PATH", "/usr/bin:/bin"), MAILROOT=root)
    sh([os.path.join(BIN, "mail-instance"), "create", root, "--hostname", "mx.example.test",
        "--domain", "example.test"], env=e)
    users = ["user%d@example.test" % i for i in range(_benchlib.BOXES)] + ["bench@example.test"]
    for u in users:
        sh([os.path.join(BIN, "mail-user"), "add", u], env=e, input=b"bench password\n")
    return root, e


def injection(tmp, drv, variants):
    """Rounds of: ceiling, each variant followed by a ceiling again; each variant's rate is
    divided by the mean of the ceilings just before and just after it. Returns {variant:
    (msg/s, ceiling, ratio)} for the round with the median ratio, and the median over rounds of
    the static / dynamic rate ratio."""
    root, e = make_instance(tmp, "inject")
    msg = os.path.join(tmp, "msg")
    env = os.path.join(tmp, "env")
    with open(msg, "wb") as f:
        f.write(_benchlib.message(1))
    with open(env, "wb") as f:
        f.write(b"Fsender@example.test\0Tuser1@example.test\0\0")
    runs = {name: [] for name, _ in variants}
    speed = []
    for r in range(ROUNDS):
        before = _benchlib.ceiling(tmp, 1, N)
        rates = {}
        for name, d in variants:
            e2 = dict(e, PATH=d + ":" + os.environ.get("PATH", "/usr/bin:/bin"))
            dt = timed([drv, "spawn", str(N), "0", os.path.join(d, "queue-inject"), msg, env], e2)
            after = _benchlib.ceiling(tmp, 1, N)
            ceil = (before + after) / 2
            rates[name] = N / dt
            runs[name].append((N / dt, ceil, N / dt / ceil))
            before = after
        speed.append(rates["static"] / rates["dynamic"])
    out = {}
    for name in runs:
        out[name] = sorted(runs[name], key=lambda x: x[2])[len(runs[name]) // 2]
    return out, sorted(speed)[len(speed) // 2]


def starts(drv, noop, count):
    """{(mode, heapMB): starts/s} best of ROUNDS."""
    best = {}
    for r in range(ROUNDS):
        for heap in (0, 64):
            for mode in ("fork", "spawn"):
                dt = timed([drv, mode, str(count), str(heap), noop])
                best[(mode, heap)] = max(best.get((mode, heap), 0), count / dt)
    return best


def rollup(pid):
    """(PSS, private = Private_Clean + Private_Dirty) of a process, in KB."""
    v = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for ln in f:
            p = ln.split()
            if p[0] in ("Pss:", "Private_Clean:", "Private_Dirty:"):
                v[p[0]] = int(p[1])
    return v["Pss:"], v["Private_Clean:"] + v["Private_Dirty:"]


def held(srv, port, k):
    """k plaintext sessions held after EHLO: (mean PSS, mean private) per smtp-receive, KB."""
    socks = []
    try:
        for _ in range(k):
            s = socket.create_connection(("127.0.0.1", port), timeout=60)
            buf = b""
            while b"\r\n" not in buf:
                buf += s.recv(1000)
            s.sendall(b"EHLO client.example\r\n")
            buf = b""
            while b"250 " not in buf:
                buf += s.recv(1000)
            socks.append(s)
        kids = smtpbench.children(srv.pid)
        assert len(kids) == k, (len(kids), k)
        vals = [rollup(p) for p in kids]
        return sum(v[0] for v in vals) / k, sum(v[1] for v in vals) / k
    finally:
        for s in socks:
            s.close()


HELD = (1, 20)


def smtp_pss(tmp, variants):
    """{variant: {held: (PSS, private) KB per session}} (the lowest PSS of ROUNDS)."""
    out = {}
    smtpbench.BIN = BIN
    root, e = smtpbench.make_instance(tmp, "smtp-pss")
    for r in range(ROUNDS):
        for name, d in variants:
            smtpbench.BIN = d
            e2 = dict(e, PATH=d + ":" + os.environ.get("PATH", "/usr/bin:/bin"))
            port = smtpbench.free_port()
            srv = smtpbench.start_server(e2, port)
            try:
                for k in HELD:
                    # start_server's probe connection, or the last count's sessions, gone first
                    end = time.monotonic() + 10
                    while smtpbench.children(srv.pid) and time.monotonic() < end:
                        time.sleep(0.02)
                    v = held(srv, port, k)
                    cur = out.setdefault(name, {})
                    if k not in cur or v[0] < cur[k][0]:
                        cur[k] = v
            finally:
                srv.terminate()
                srv.wait()
    smtpbench.BIN = BIN
    return out


def pop3_pss(tmp, variants):
    """{variant: (PSS KB, private KB, [(comm, PSS, private)])} (the lowest PSS of ROUNDS)."""
    import pwd
    out = {}
    pop3bench.BIN = BIN
    d = os.path.join(tmp, "pop3")
    os.makedirs(d)
    os.chmod(tmp, 0o755)
    os.chmod(d, 0o755)
    env, _, _ = pop3bench.setup(d)
    pw = pwd.getpwnam(pop3bench.RUN_AS)
    pop3bench.chown_tree(d, pw.pw_uid, pw.pw_gid)
    for r in range(ROUNDS):
        for name, b in variants:
            pop3bench.BIN = b
            e2 = dict(env, PATH=b + ":" + os.environ.get("PATH", "/usr/bin:/bin"))
            port = pop3bench.free_port()
            ps = pop3bench.start_pillarbox(d, e2, port)  # tcpserver, auth-serve, the broker
            p = ps[0]
            try:
                pop3bench.wait_port(port, p, "pillarbox", d)
                c = pop3bench.Client(port)
                c.login(pop3bench.USERS[0])
                c.cmd(b"STAT")
                c.multi(b"UIDL")
                # the session: pop3-serve (under tcpserver), pop3-maildir (under the broker)
                procs = pop3bench.descendants(p.pid) + [
                    x for b in ps[1:] for x in pop3bench.descendants(b.pid)]
                detail = [(comm,) + rollup(pid) for pid, comm in procs]
                c.cmd(b"QUIT")
                c.close()
                kb = sum(d[1] for d in detail)
                if name not in out or kb < out[name][0]:
                    out[name] = (kb, sum(d[2] for d in detail), detail)
            finally:
                for q in ps:
                    pop3bench.stop(q)
    pop3bench.BIN = BIN
    return out


def handshakes(tmp, variants):
    """{variant: (ours/s, openssl/s)} best ratio of ROUNDS."""
    inst = os.path.join(tmp, "tls-inst")
    env = dict(os.environ, PATH=BIN + ":" + os.environ["PATH"], MAILROOT=inst)
    sh([os.path.join(BIN, "mail-instance"), "create", inst, "--hostname", tlsbench.HOST,
        "--domain", "example.test"], env=env)
    out = {}
    for r in range(ROUNDS):
        for name, b in variants:
            tlsbench.BIN = b
            e2 = dict(env, PATH=b + ":" + os.environ["PATH"])
            ours, theirs = tlsbench.handshakes(inst, e2, 1)
            if name not in out or ours / theirs > out[name][0] / out[name][1]:
                out[name] = (ours, theirs)
    tlsbench.BIN = BIN
    return out


def main():
    if not os.path.isdir(os.path.join(BUILD, "obj")):
        raise SystemExit("build first: make")
    tmp = tempfile.mkdtemp(prefix="bench-process-")
    try:
        dynamic, static = os.path.join(tmp, "dynamic"), os.path.join(tmp, "static")
        build_variant(dynamic, False)
        kinds = build_variant(static, True)
        drv, noop = build_tools(tmp)
        variants = [("dynamic", dynamic), ("static", static)]
        print("process_cost %s UTC, %d CPUs, load %s" % (
            time.strftime("%Y-%m-%d %H:%M", time.gmtime()), os.cpu_count(),
            " ".join("%.1f" % x for x in os.getloadavg())))
        print("left dynamic (NSS): %s" % (", ".join(k for k, v in sorted(kinds.items())
                                                     if v != "static") or "none"))

        st = starts(drv, noop, max(500, N // 2))
        print("\nstarting a static no-op, one at a time (starts/s, best of %d):" % ROUNDS)
        for heap in (0, 64):
            f, s = st[("fork", heap)], st[("spawn", heap)]
            print("  parent heap %2d MB: fork+exec %6.0f  posix_spawn %6.0f  ratio spawn/fork %.2f"
                  % (heap, f, s, s / f))

        inj, speed = injection(tmp, drv, variants)
        print("\ninjection, one injector (lib/spawn), %d messages of 2 KB per run, median of %d:"
              % (N, ROUNDS))
        for name, _ in variants:
            rate, ceil, ratio = inj[name]
            print("  %-7s %6.0f msg/s, one-writer ceiling %6.0f commits/s, ratio %.2f (target >= 0.6)"
                  % (name, rate, ceil, ratio))
        print("  static / dynamic injection rate: %.2f" % speed)

        sp = smtp_pss(tmp, variants)
        print("\nsmtp-receive holding plaintext sessions after EHLO, KB per session: PSS (target < 128)"
              " / private (Private_Clean + Private_Dirty: what one more session costs)")
        for name, _ in variants:
            print("  %-7s " % name + "   ".join("%2d held %4.0f / %4.0f" % ((k,) + sp[name][k])
                                                 for k in HELD))

        pp = pop3_pss(tmp, variants)
        print("\none logged-in POP3 session, KB: PSS (target < 256) / private")
        for name, _ in variants:
            kb, priv, detail = pp[name]
            print("  %-7s %5.0f / %5.0f  (%s)" % (name, kb, priv, " + ".join(
                "%s %d/%d" % x for x in detail)))

        hs = handshakes(tmp, variants)
        print("\nTLS handshakes, one s_time -new client (tls-serve -> cat vs openssl s_server):")
        for name, _ in variants:
            ours, theirs = hs[name]
            print("  %-7s tls-serve %5.0f/s  openssl %5.0f/s  ratio %.2f (target >= 0.5)"
                  % (name, ours, theirs, ours / theirs))
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
