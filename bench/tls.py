"""bench/tls.py: tls-serve against openssl s_server, and SMTPS against plain SMTP, in one run.

Measured:
  1. full TLS 1.2 handshakes per second (ECDHE-ECDSA-AES128-GCM-SHA256, EC P-256 key) with
     `openssl s_time -new` as the client (one, then four at once), against
       pillarbox: tcpserver -> tls-serve -> cat (a process pair per connection, keys read
                  from disk each time), and
       openssl:   openssl s_server -tls1_2 (one process, key loaded once);
     ratio pillarbox / openssl (target >= 0.5), and, in the same run,
       engine:    tcpserver -> pop3-serve with TLS_IMPLICIT=1 and TLS_ENGINE (one exec per
                  connection; the long-running tls-engine, started by the bench, forks the TLS
                  engine with the keys already loaded: `tls-engine -p 0`);
       spares:    the same with `tls-engine -p 4`, as services/tls-engine runs it (engines
                  forked in advance, one given each connection, no fork on the handshake's
                  path), in front of pop3-serve and of smtp-receive (smtps's program);
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
    service's spares, waiting for a connection, stay)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not [c for c in children(pids) if c[1] != "tls-engine-idle"]:
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

    def __init__(self, inst, env, spares=0):
        self.sock = os.path.join(inst, "run", "tls", "engine")
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


def engine_handshakes(inst, env, clients=1, spares=0, program="pop3-serve"):
    """Handshakes/s of tcpserver -> program (TLS_IMPLICIT=1) through the engine service."""
    eng = EngineService(inst, env, spares)
    try:
        e = dict(env, TLS_ENGINE=eng.sock, TLS_IMPLICIT="1", SMTPAUTH="1")
        port = free_port()
        srv = tcpserver(e, port, [os.path.join(BIN, program)])
        try:
            group = temp_key(port)
            rate, ms, split = cpu_per_handshake([srv.p.pid, eng.p.pid], port, clients)
            return rate, ms, group, split
        finally:
            srv.stop()
    finally:
        eng.stop()


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


def handshakes(inst, env, clients=1):
    cert = os.path.join(inst, "tls", "cert.pem")
    key = os.path.join(inst, "tls", "key.pem")
    p1 = free_port()
    srv = tcpserver(env, p1, [os.path.join(BIN, "tls-serve"), "cat"])
    try:
        ours = cpu_per_handshake([srv.p.pid], p1, clients)[:2]
    finally:
        srv.stop()
    p2 = free_port()
    ossl = Proc(["openssl", "s_server", "-accept", "127.0.0.1:%d" % p2, "-cert", cert, "-key", key,
                 "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256", "-quiet"], env, p2)
    try:
        theirs = cpu_per_handshake([ossl.p.pid], p2, clients)[:2]
    finally:
        ossl.stop()
    return ours, theirs


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

        (ours, ours_ms), (theirs, theirs_ms) = handshakes(inst, env)
        eng, eng_ms, group, _ = engine_handshakes(inst, env)
        spa, spa_ms, _, spa_split = engine_handshakes(inst, env, spares=4)
        sms, sms_ms, _, sms_split = engine_handshakes(inst, env, spares=4,
                                                      program="smtp-receive")
        print("handshakes/s, 1 client: tls-serve %.0f, openssl s_server %.0f, ratio %.2f "
              "(target >= 0.5)" % (ours, theirs, ours / theirs))
        print("handshakes/s, 1 client: engine (tcpserver -> pop3-serve, TLS_IMPLICIT) %.0f, "
              "ratio %.2f to s_server, %.2f to tls-serve" % (eng, eng / theirs, eng / ours))
        print("handshakes/s, 1 client, tls-engine -p 4 (spares, as the services run): "
              "pop3-serve %.0f, ratio %.2f; smtp-receive (smtps) %.0f, ratio %.2f to s_server"
              % (spa, spa / theirs, sms, sms / theirs))
        print("server CPU per handshake (all its processes, from /proc): tls-serve %.2f ms, "
              "engine %.2f ms, spares %.2f ms (pop3-serve) %.2f ms (smtps), s_server %.2f ms; "
              "handshakes per CPU-second, ratio to s_server: tls-serve %.2f, engine %.2f, "
              "spares %.2f / %.2f" % (ours_ms, eng_ms, spa_ms, sms_ms, theirs_ms,
                                      theirs_ms / ours_ms, theirs_ms / eng_ms,
                                      theirs_ms / spa_ms, theirs_ms / sms_ms))
        print("  split with spares: tcpserver and its program %.2f ms (pop3-serve) %.2f ms "
              "(smtp-receive); tls-engine and its engines %.2f / %.2f ms"
              % (spa_split[0], sms_split[0], spa_split[1], sms_split[1]))
        c = crypto_usec(tmp)
        hs = c["total_x25519"] if "25519" in group else c["total"]
        print("group agreed: %s; BearSSL in-process per handshake: ECDHE P-256 %.0f us, X25519 "
              "%.0f us, ECDSA P-256 sign %.0f us: %.0f us with this group"
              % (group, c["ecdhe"], c["x25519"], c["ecdsa"], hs))
        for name, rate, ms in (("tls-serve", ours, ours_ms), ("engine", eng, eng_ms),
                               ("spares", spa, spa_ms), ("s_server", theirs, theirs_ms)):
            print("  %-9s %6.0f us per handshake wall (client included), %5.0f us server CPU; "
                  "BearSSL's crypto %.0f%% of that CPU, the rest (processes, I/O) %.0f us"
                  % (name, 1e6 / rate, ms * 1e3, 100 * hs / (ms * 1e3), ms * 1e3 - hs))
        print("  ceiling with BearSSL's crypto alone (no process, no client): %.0f/s, %.2f of "
              "s_server" % (1e6 / hs, 1e6 / hs / theirs))
        (ours, _), (theirs, _) = handshakes(inst, env, clients=4)
        eng = engine_handshakes(inst, env, clients=4)[0]
        spa = engine_handshakes(inst, env, clients=4, spares=4)[0]
        print("handshakes/s, 4 clients: tls-serve %.0f, engine %.0f, spares %.0f, openssl "
              "s_server %.0f, ratio %.2f / %.2f / %.2f (tcpserver runs connections in parallel, "
              "s_server one at a time)" % (ours, eng, spa, theirs, ours / theirs, eng / theirs,
                                          spa / theirs))
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
