"""bench/tls.py: tls-serve against openssl s_server, and SMTPS against plain SMTP, in one run.

Measured:
  1. full TLS 1.2 handshakes per second (ECDHE-ECDSA-AES128-GCM-SHA256, EC P-256 key) with
     `openssl s_time -new` as the client (one, then four at once), and the server's CPU per
     handshake (all its processes, from /proc), against openssl s_server -tls1_2 (one process,
     key loaded once), target >= 0.5 with one client. Every server is started once and each
     takes its turn in BENCH_TLS_ROUNDS rounds (s_server first in each), so each ratio is
     against the s_server run of the same round, seconds apart (the machine is shared):
       tls-serve:              tcpserver -> tls-serve -> cat (a process pair per connection,
                               keys read from disk each time);
       engine-0-pop3-serve:    tcpserver -> pop3-serve with TLS_IMPLICIT=1 and TLS_ENGINE (one
                               exec per connection; the long-running tls-engine, started by the
                               bench, forks an engine per connection: `tls-engine -p 0`);
       engine-4-pop3-serve:    the same with `tls-engine -p 4`, as services/tls-engine runs it
                               (engines forked in advance, no fork on the handshake's path);
       engine-4-smtp-receive:  the same in front of smtp-receive (smtps's chain until 13:50);
       pool-4-smtp-receive:    tcp-pool (4 workers, 100 sessions each) -> smtp-receive workers,
                               `tls-engine -p 4`: smtps as services/smtps runs it now (no
                               process created per connection on the handshake's path);
       pool-4-pop3-serve,      the same with pop3-serve and imap-serve workers: pop3s and
       pool-4-imap-serve:      imaps since 2026-12-05 19:30;
     BENCH_TLS_VARIANTS="pool-4-smtp-receive pool-4-pop3-serve ..." picks the servers (s_server
     is always first);
     where a handshake's time goes: BearSSL's own public-key work for one handshake (ECDHE
     P-256 or X25519 + the ECDSA P-256 signature), timed in-process (bench/tls-crypto.c), set
     against each server's time per handshake, and the group the client and BearSSL agree on;
  2. bulk: a 100 MB message submitted with a raw SMTP client (EHLO, AUTH, MAIL, RCPT, DATA),
     over SMTPS (tcpserver -> tls-serve -> smtp-receive -> queue-inject) and over plain SMTP
     (tcpserver -> smtp-receive -> queue-inject), best of 2 each; MB/s and ratio SMTPS / plain
     (target >= 0.7);
  3. private memory (Private_Clean + Private_Dirty from /proc/PID/smaps_rollup) of each TLS
     engine process of 20 open connections, after the handshake and after 1 MB each way
     (target < 128 KB).
Run: /usr/bin/python3 bench/tls.py  (BENCH_TLS_SECONDS, BENCH_TLS_MB change the sizes;
BENCH_TLS_HANDSHAKES_ONLY=1 stops after the handshakes)
"""
import base64
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from tls_helpers import echo_roundtrip  # noqa: E402  (the tests' full-duplex TLS echo)
BIN = os.path.join(ROOT, "build", "bin")  # where make puts the programs
SECONDS = int(os.environ.get("BENCH_TLS_SECONDS", "5"))
MB = int(os.environ.get("BENCH_TLS_MB", "100"))
HOST = "mx.example.test"
USER = "bench@example.test"
PW = "bench password"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listen(port, proc, timeout=10):
    want = ":%04X" % port
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit("server exited early")
        for fn in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(fn) as f:
                if any(l.split()[1].endswith(want) and l.split()[3] == "0A"
                       for l in list(f)[1:]):
                    return
        time.sleep(0.02)
    raise SystemExit("server did not listen on %d" % port)


class Proc:
    def __init__(self, argv, env, port):
        self.p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        try:
            wait_listen(port, self.p)
        except BaseException:
            self.stop()
            raise

    def stop(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()


def tcpserver(env, port, argv):
    return Proc(["tcpserver", "-R", "-H", "-l", "localhost", "-c", "200", "127.0.0.1",
                 str(port)] + argv, env, port)


def tcppool(env, port, argv):
    """tcp-pool as services/smtps runs it: 4 workers kept, 100 sessions each."""
    return Proc([os.path.join(BIN, "tcp-pool"), "-R", "-H", "-l", "localhost", "-c", "200",
                 "-n", "4", "-m", "100", "127.0.0.1", str(port)] + argv, env, port)


def stat_of(pid):
    """(comm, fields after the comm) of /proc/PID/stat, or None when it is gone."""
    try:
        with open("/proc/%s/stat" % pid) as f:
            st = f.read()
    except OSError:
        return None
    name, rest = st.split("(", 1)[1].rsplit(")", 1)
    return name, rest.split()


def children(pids):
    """(pid, comm, stat fields) of the live children of pids."""
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            st = stat_of(p)
            if st and int(st[1][1]) in pids:
                out.append((int(p), st[0], st[1]))
    return out


def cpu_ticks(pids):
    """utime + stime + cutime + cstime (clock ticks) of pids: the process and its reaped
    children (tcpserver reaps each connection's program, which reaped its own), and of their
    live children (the engine service's spares, which are reaped only after their session)."""
    t = 0
    for pid in pids:
        t += sum(int(x) for x in stat_of(pid)[1][11:15])
    for _, _, f in children(pids):
        t += sum(int(x) for x in f[11:15])
    return t


def no_children(pids, timeout=10):
    """Waits (bounded) until the servers have reaped every connection's process (the engine
    service's spares, waiting for a connection, and tcp-pool's workers stay)."""
    pools = [p for p in pids if (stat_of(p) or ("",))[0] == "tcp-pool"]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not [c for c in children(pids) if c[1] != "tls-engine-idle"
                and int(c[2][1]) not in pools]:
            return
        time.sleep(0.05)


def cpu_per_handshake(pids, port, clients):
    """(handshakes/s, server CPU ms per handshake, [ms per handshake of each pid's tree]) with
    `clients` s_time clients."""
    no_children(pids)
    t0 = [cpu_ticks([p]) for p in pids]
    rate, conns = s_time_parallel(port, clients)
    no_children(pids)
    ms = [(cpu_ticks([p]) - t) * 1000.0 / os.sysconf("SC_CLK_TCK") / max(conns, 1)
          for p, t in zip(pids, t0)]
    return rate, sum(ms), ms


def s_time_parallel(port, n):
    """n `openssl s_time -new` clients at once; the sum of their connection rates, and the
    number of connections."""
    ps = [subprocess.Popen(["openssl", "s_time", "-connect", "127.0.0.1:%d" % port, "-new",
                            "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256", "-time",
                            str(SECONDS)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
          for _ in range(n)]
    total = 0.0
    conns = 0
    for p in ps:
        out, _ = p.communicate(timeout=SECONDS + 60)
        m = re.search(rb"(\d+) connections in (\d+) real seconds", out)
        if not m:
            raise SystemExit("s_time failed: %r" % out)
        total += int(m.group(1)) / float(m.group(2))
        conns += int(m.group(1))
    return total, conns


class EngineService:
    """tls-engine on INST/run/tls/engine, as services/tls-engine runs it (engines as pb-tls
    when root)."""

    def __init__(self, inst, env, spares=0, name="engine"):
        self.sock = os.path.join(inst, "run", "tls", name)
        os.makedirs(os.path.dirname(self.sock), exist_ok=True)
        e = dict(env)
        if os.geteuid() == 0:
            import pwd
            try:
                pw = pwd.getpwnam("pb-tls")
            except KeyError:
                pw = pwd.getpwnam("nobody")
            e.update(TLS_UID=str(pw.pw_uid), TLS_GID=str(pw.pw_gid))
        self.p = subprocess.Popen([os.path.join(BIN, "tls-engine"), "-c", "200", "-p",
                                   str(spares), self.sock],
                                  env=e, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        end = time.monotonic() + 10
        while not os.path.exists(self.sock) or len(idle_engines(self.p.pid)) < spares:
            if self.p.poll() is not None or time.monotonic() > end:
                self.stop()
                raise SystemExit("tls-engine did not start")
            time.sleep(0.02)

    def stop(self):
        Proc.stop(self)


def idle_engines(ppid):
    """The spares of the tls-engine ppid (comm tls-engine-idle)."""
    return [p for p, name, _ in children([ppid]) if name == "tls-engine-idle"]


ROUNDS = int(os.environ.get("BENCH_TLS_ROUNDS", "3"))


class Variant:
    """One server for the handshake rounds: its name, port, and the pids whose CPU is its."""

    def __init__(self, name, port, procs):
        self.name, self.port, self.procs = name, port, procs
        self.rates, self.ms, self.split = [], [], []

    def pids(self):
        return [p.p.pid for p in self.procs]

    def stop(self):
        for p in reversed(self.procs):
            p.stop()


def start_variants(inst, env, wanted):
    """Every server of the rounds, started once and left idle between its turns."""
    cert = os.path.join(inst, "tls", "cert.pem")
    key = os.path.join(inst, "tls", "key.pem")
    out = []
    try:
        for name in wanted:
            port = free_port()
            if name == "s_server":
                procs = [Proc(["openssl", "s_server", "-accept", "127.0.0.1:%d" % port, "-cert",
                               cert, "-key", key, "-tls1_2", "-cipher",
                               "ECDHE-ECDSA-AES128-GCM-SHA256", "-quiet"], env, port)]
            elif name == "tls-serve":
                procs = [tcpserver(env, port, [os.path.join(BIN, "tls-serve"), "cat"])]
            else:  # FRONT-P-PROGRAM: tls-engine -p P, FRONT (engine: tcpserver; pool:
                # tcp-pool, as smtps runs) -> PROGRAM with TLS_IMPLICIT
                front, spares, program = name.split("-", 2)
                eng = EngineService(inst, env, int(spares), name)
                e = dict(env, TLS_ENGINE=eng.sock, TLS_IMPLICIT="1", SMTPAUTH="1")
                try:
                    if front == "pool":
                        procs = [eng, tcppool(e, port, [os.path.join(BIN, program)])]
                    else:
                        procs = [eng, tcpserver(e, port, [os.path.join(BIN, program)])]
                except BaseException:
                    eng.stop()
                    raise
                # tcpserver's tree first, then the engine service's
                procs = [procs[1], procs[0]]
            out.append(Variant(name, port, procs))
    except BaseException:
        for v in out:
            v.stop()
        raise
    return out


def rounds(variants, clients):
    """ROUNDS rounds, each variant in turn (s_server first), so that each ratio is taken
    against the s_server run of the same round, seconds apart."""
    for _ in range(ROUNDS):
        for v in variants:
            rate, ms, split = cpu_per_handshake(v.pids(), v.port, clients)
            v.rates.append(rate)
            v.ms.append(ms)
            v.split.append(split)


def span(xs, fmt="%.2f"):
    """median (min-max) of xs."""
    ys = sorted(xs)
    return (fmt + " (" + fmt + "-" + fmt + ")") % (ys[len(ys) // 2], ys[0], ys[-1])


def report_rounds(variants, clients):
    base = variants[0]
    print("handshakes/s, %d client%s, %d rounds of %d s, each against s_server in the same "
          "round (median, range): s_server %s/s" % (clients, "s" if clients > 1 else "",
                                                    ROUNDS, SECONDS, span(base.rates, "%.0f")))
    for v in variants[1:]:
        ratios = [a / b for a, b in zip(v.rates, base.rates)]
        cpu = [b / a for a, b in zip(v.ms, base.ms)]
        print("  %-22s %s/s, ratio %s; server CPU %s ms per handshake (s_server %s), "
              "handshakes per CPU-second %s of s_server"
              % (v.name, span(v.rates, "%.0f"), span(ratios), span(v.ms),
                 span(base.ms), span(cpu)))
        if len(v.split[0]) == 2:
            print("  %-22s CPU split: the front and its program %s ms, tls-engine and its "
                  "engines %s ms" % ("", span([x[0] for x in v.split]),
                                     span([x[1] for x in v.split])))


def temp_key(port):
    """The key exchange group the client (OpenSSL's defaults) and the server agree on."""
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-tls1_2",
                        "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"], input=b"",
                       capture_output=True, timeout=30)
    m = re.search(rb"(?:Server|Peer) Temp Key: ([^\n]+)", r.stdout)
    return m.group(1).decode().strip() if m else "unknown"


def crypto_usec(tmp):
    """BearSSL's public-key work for one server handshake, in microseconds (tls-crypto.c)."""
    exe = os.path.join(tmp, "tls-crypto")
    subprocess.run(["cc", "-O2", "-std=c99", "-D_POSIX_C_SOURCE=200809L", "-o", exe,
                    os.path.join(ROOT, "bench", "tls-crypto.c"), "-l:libbearssl.a"],
                   check=True, timeout=120)
    out = subprocess.run([exe, "300"], check=True, capture_output=True, timeout=300).stdout
    w = out.decode().split()
    return dict(zip(w[0::2], (float(x) for x in w[1::2])))


def reply(f):
    while True:
        ln = f.readline()
        if not ln:
            raise SystemExit("connection closed")
        if ln[3:4] == b" ":
            return int(ln[:3]), ln


def submit(sock, payload, auth):
    f = sock.makefile("rb")
    def cmd(line, want):
        sock.sendall(line + b"\r\n")
        code, ln = reply(f)
        if code != want:
            raise SystemExit("%r -> %r" % (line, ln))
    code, _ = reply(f)
    cmd(b"EHLO bench.example", 250)
    if auth:
        cmd(b"AUTH PLAIN " + base64.b64encode(("\0%s\0%s" % (USER, PW)).encode()), 235)
    cmd(b"MAIL FROM:<%s> SIZE=%d" % (USER.encode(), len(payload)), 250)
    cmd(b"RCPT TO:<%s>" % USER.encode(), 250)
    cmd(b"DATA", 354)
    t0 = time.monotonic()
    sock.sendall(payload)
    cmd(b".", 250)
    dt = time.monotonic() - t0
    sock.sendall(b"QUIT\r\n")
    f.close()
    return dt


def bulk(inst, env, payload, cafile):
    e = dict(env, SMTPAUTH="1")
    ps = free_port()
    pp = free_port()
    smtps = tcpserver(e, ps, [os.path.join(BIN, "tls-serve"), os.path.join(BIN, "smtp-receive")])
    plain = tcpserver(env, pp, [os.path.join(BIN, "smtp-receive")])
    ctx = ssl.create_default_context(cafile=cafile)
    res = {"smtps": [], "plain": []}
    try:
        for _ in range(2):
            for kind in ("plain", "smtps"):
                if kind == "smtps":
                    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", ps)),
                                        server_hostname=HOST)
                else:
                    s = socket.create_connection(("127.0.0.1", pp))
                with s:
                    res[kind].append(len(payload) / submit(s, payload, kind == "smtps") / 1e6)
                shutil.rmtree(os.path.join(inst, "mail"), ignore_errors=True)
                clean_queue(inst)
    finally:
        smtps.stop()
        plain.stop()
    return max(res["smtps"]), max(res["plain"])


def clean_queue(inst):
    # keep the queue small between runs: delete message files, keep the directories
    for d, _, files in os.walk(os.path.join(inst, "queue")):
        for f in files:
            p = os.path.join(d, f)
            if os.path.isfile(p) and not p.endswith(("lock", "trigger")):
                try:
                    os.unlink(p)
                except OSError:
                    pass


def private_kb(pid):
    d = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for ln in f:
            p = ln.split()
            if len(p) >= 2 and p[0].endswith(":") and p[1].isdigit():
                d[p[0][:-1]] = int(p[1])
    return d.get("Private_Clean", 0) + d.get("Private_Dirty", 0), d.get("Pss", 0)


def engines(port):
    """PIDs of the TLS engines: tls-serve processes (not exec'd into the program)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv[0] == os.path.join(BIN, "tls-serve").encode():
            out.append(int(pid))
    return out


def memory(env, cafile):
    port = free_port()
    srv = tcpserver(env, port, [os.path.join(BIN, "tls-serve"), "cat"])
    ctx = ssl.create_default_context(cafile=cafile)
    socks = []
    try:
        for _ in range(20):
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                                server_hostname=HOST)
            s.sendall(b"x")
            s.recv(1)
            socks.append(s)
        time.sleep(0.2)
        after_hs = [private_kb(p) for p in engines(port)]
        blob = os.urandom(1 << 20)
        for s in socks:
            if echo_roundtrip(s, blob) != blob:
                raise SystemExit("echo through tls-serve came back wrong")
        time.sleep(0.2)
        after_bulk = [private_kb(p) for p in engines(port)]
    finally:
        for s in socks:
            s.close()
        srv.stop()
    return after_hs, after_bulk


def main():
    tmp = tempfile.mkdtemp(prefix="bench-tls-")
    try:
        inst = os.path.join(tmp, "inst")
        env = dict(os.environ, PATH=BIN + ":" + os.environ["PATH"], MAILROOT=inst)
        subprocess.run([os.path.join(BIN, "mail-instance"), "create", inst, "--hostname", HOST,
                        "--domain", "example.test"], env=env, check=True, capture_output=True)
        subprocess.run([os.path.join(BIN, "mail-user"), "add", USER], input=(PW + "\n").encode(),
                       env=env, check=True, capture_output=True)
        with open(os.path.join(inst, "control", "databytes"), "w") as f:
            f.write("%d\n" % ((MB + 10) << 20))
        cafile = os.path.join(inst, "tls", "cert.pem")

        names = ["s_server", "tls-serve", "engine-4-pop3-serve", "pool-4-smtp-receive",
                 "pool-4-pop3-serve", "pool-4-imap-serve"]
        if os.environ.get("BENCH_TLS_VARIANTS"):  # e.g. "pool-4-smtp-receive pool-4-imap-serve"
            names = ["s_server"] + os.environ["BENCH_TLS_VARIANTS"].split()
        variants = start_variants(inst, env, names)
        try:
            group = temp_key(variants[-1].port)
            spared = [v for v in variants if v.name.split("-")[1:2] == ["4"]]
            spare_mem = [private_kb(p) for p in idle_engines(spared[0].procs[1].p.pid)] \
                if spared else []
            print("idle spares of tls-engine -p 4: %d, private %s KB, PSS %s KB each"
                  % (len(spare_mem), [m for m, _ in spare_mem], [q for _, q in spare_mem]))
            rounds(variants, 1)
            report_rounds(variants, 1)
            print("  (tls-serve's CPU misses its TLS engine: the engine outlives `cat`, is "
                  "reparented and never reaped by tcpserver)")
            for v in variants:
                v.rates, v.ms, v.split = [], [], []
            rounds(variants, 4)
            report_rounds(variants, 4)
        finally:
            for v in variants:
                v.stop()
        c = crypto_usec(tmp)
        hs = c["total_x25519"] if "25519" in group else c["total"]
        print("group agreed: %s; BearSSL in-process per handshake: ECDHE P-256 %.0f us, X25519 "
              "%.0f us, ECDSA P-256 sign %.0f us: %.0f us with this group; its ceiling alone "
              "(no process, no client) %.0f/s" % (group, c["ecdhe"], c["x25519"], c["ecdsa"], hs,
                                                   1e6 / hs))
        if os.environ.get("BENCH_TLS_HANDSHAKES_ONLY"):
            return

        line = b"x" * 76 + b"\r\n"
        payload = b"Subject: bulk\r\n\r\n" + line * ((MB << 20) // len(line))
        tls_rate, plain_rate = bulk(inst, env, payload, cafile)
        print("bulk %d MB: SMTPS %.1f MB/s, plain SMTP %.1f MB/s, ratio %.2f (target >= 0.7)"
              % (MB, tls_rate, plain_rate, tls_rate / plain_rate))

        hs, bk = memory(env, cafile)
        if hs and bk:
            print("engine private memory (KB) over %d connections: after handshake avg %.0f "
                  "max %d; after 1 MB each way avg %.0f max %d (target < 128)"
                  % (len(bk), sum(p for p, _ in hs) / len(hs), max(p for p, _ in hs),
                     sum(p for p, _ in bk) / len(bk), max(p for p, _ in bk)))
        else:
            print("engine private memory: no engine process found")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
