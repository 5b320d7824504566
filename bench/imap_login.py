"""bench/imap_login.py: IMAP short sessions WITH the login, pillarbox against Dovecot 2.3, same
run, same Maildir (bench/imap_bench.py measures the post-login program alone, PREAUTH).

Both servers on loopback high ports, plaintext LOGIN (allowed on loopback), the same yescrypt
hashes and a verified-credential cache with the same TTL (bench/pop3.py's set-up, its 16
accounts over one 2,000-message Maildir by hard links):
  pillarbox: tcpserver -u LOGIN -> imap-serve -> login-handoff => login-broker (delivery uid)
             -> imap-maildir, the password checked by auth-serve (its own uid): services/imap
             + login-imap + auth, each part under its own uid
  Dovecot:   dovecot -F (as nobody): imap-login in high-performance mode, passwd-file passdb,
             static userdb, indexes and control files out of the Maildir.
Measured: short sessions (connect, LOGIN, SELECT INBOX, FETCH 1:50 (ENVELOPE), 10 FETCH
BODY.PEEK[], SEARCH SUBJECT, LOGOUT) with 1, 4 and 16 clients, each client on its own account,
for a fixed time after one warm-up session per account: sessions per second (best of 2,
alternated); and the PSS of every process serving one logged-in session with INBOX selected
(issue 12's figure: an account of its own with 10,000 messages, BENCH_IMAP_PSS_MESSAGES; and
one of the 2,000-message accounts), after one session that made the record / the index.
Prints the figures and the ratios pillarbox / Dovecot. Run as root:
  /usr/bin/python3 bench/imap_login.py    (BENCH_POP3_MESSAGES, BENCH_IMAP_LOGIN_SECONDS)
"""
import multiprocessing
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pop3 as common  # noqa: E402  (the Maildir, the accounts, the uids, Dovecot's start)
from _benchlib import pool_rate, sessions_for  # noqa: E402

BIN = common.BIN
USERS = common.USERS
PASSWORD = common.PASSWORD
SECONDS = float(os.environ.get("BENCH_IMAP_LOGIN_SECONDS", "6"))
# The memory figure is issue 12's: one session with an INBOX of 10,000 messages selected, on an
# account of its own (the first 2,000 messages are the other accounts' files, hard links).
PSS_NMSG = int(os.environ.get("BENCH_IMAP_PSS_MESSAGES", "10000"))
BIG = "benchbig@example.test"


def add_big(tmp, env, hashes):
    """The account BIG with PSS_NMSG messages (bench/pop3.py's generator, same seed)."""
    common.run([BIN + "/mail-user", "add", BIG], input=(PASSWORD + "\n").encode(), env=env)
    with open(tmp + "/inst/control/users") as f:
        for line in f:
            if line.startswith(BIG + ":"):
                hashes[BIG] = line.rstrip("\n").split(":")[1]
    rng = random.Random(20231114)
    first = tmp + "/inst/mail/example.test/bench1/cur/"
    big = tmp + "/inst/mail/example.test/benchbig/cur/"
    for i in range(PSS_NMSG):
        name, data = common.message(rng, i)
        if i < common.NMSG:
            os.link(first + name, big + name)
        else:
            with open(big + name, "wb") as f:
                f.write(data)


class Client:
    """A raw IMAP client: literals are skipped by their count."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buf = b""
        self.tag = 0
        self.line()

    def line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                l, self.buf = self.buf[:i], self.buf[i + 2:]
                m = re.search(rb"\{(\d+)\}$", l)
                if m:  # skip the literal's octets, then the rest of the line
                    n = int(m.group(1))
                    while len(self.buf) < n:
                        self.fill()
                    self.buf = self.buf[n:]
                    return l + self.line()
                return l
            self.fill()

    def fill(self):
        d = self.s.recv(262144)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def cmd(self, c):
        self.tag += 1
        t = b"a%d" % self.tag
        self.s.sendall(t + b" " + c + b"\r\n")
        n = 0
        while True:
            l = self.line()
            if l.startswith(t + b" "):
                if not l.startswith(t + b" OK"):
                    raise RuntimeError("%r -> %r" % (c, l))
                return n
            n += 1

    def close(self):
        self.s.close()


def session(port, user, rng):
    c = Client(port)
    c.cmd(b'LOGIN "%s" "%s"' % (user.encode(), PASSWORD.encode()))
    c.cmd(b"SELECT INBOX")
    c.cmd(b"FETCH 1:50 (ENVELOPE)")
    for _ in range(10):
        c.cmd(b"FETCH %d BODY.PEEK[]" % rng.randint(1, common.NMSG))
    c.cmd(b'SEARCH SUBJECT "benchmark message 7"')
    c.cmd(b"LOGOUT")
    c.close()


def worker(args):
    port, user, seconds, seed = args
    return sessions_for(seconds, seed, lambda rng: session(port, user, rng))


def rate(port, n):
    return pool_rate(worker, [(port, u, SECONDS, i) for i, u in enumerate(USERS[:n])])


def start_pillarbox(tmp, env, port):
    """The IMAP chain as the services run it (bench/pop3.py's start_pillarbox for IMAP);
    control/imap-peermax 0: 16 clients from one address."""
    return common.start_pillarbox(tmp, env, port, "imap", peermax=0)


def start_dovecot(tmp, hashes, port):
    """Dovecot with bench/pop3.py's configuration, serving IMAP instead of POP3."""
    conf = common.DOVECOT_CONF.replace("protocols = pop3", "protocols = imap")
    conf = conf.replace("service pop3-login {{\n  inet_listener pop3 {{\n    address = "
                        "127.0.0.1\n    port = {port}\n  }}",
                        "service pop3-login {{\n  inet_listener pop3 {{\n    port = 0\n  }}")
    conf = conf.replace("service imap-login {{\n  inet_listener imap {{\n    port = 0\n  }}",
                        "service imap-login {{\n  inet_listener imap {{\n    address = "
                        "127.0.0.1\n    port = {port}\n  }}\n  service_count = 0\n"
                        "  process_min_avail = 2\n  chroot =")
    conf = conf.replace("service pop3 {{\n  process_limit = 100\n}}",
                        "service imap {{\n  process_limit = 100\n}}")
    saved = common.DOVECOT_CONF
    common.DOVECOT_CONF = conf
    try:
        return common.start_dovecot(tmp, hashes, port)
    finally:
        common.DOVECOT_CONF = saved


def wait_port(port, proc, what, tmp):
    common._benchlib.wait_port(port, proc, what, tmp, lambda p: Client(p).close())


def session_pss(port, pick, user=USERS[0]):
    """PSS of the processes pick() names while one session is logged in, INBOX selected."""
    c = Client(port)
    c.cmd(b'LOGIN "%s" "%s"' % (user.encode(), PASSWORD.encode()))
    c.cmd(b"SELECT INBOX")
    time.sleep(0.3)
    detail = [(comm, common.pss(pid)) for pid, comm in pick()]
    c.cmd(b"LOGOUT")
    c.close()
    return sum(k for _, k in detail), detail


def main():
    if not shutil.which("dovecot"):
        raise SystemExit("bench/imap_login.py: needs dovecot (dovecot-imapd, package/deps-test)")
    tmp = tempfile.mkdtemp(prefix="pillarbox-bench-imap-login-")
    os.chmod(tmp, 0o755)
    procs = []
    try:
        t = time.perf_counter()
        env, hashes, total = common.setup(tmp)
        add_big(tmp, env, hashes)
        print("Maildir: %d messages, %.1f MB, %d accounts (hard links); made in %.1fs"
              % (common.NMSG, total / 1e6, len(USERS), time.perf_counter() - t))
        pport, dport = common.free_port(), common.free_port()
        dv = start_dovecot(tmp, hashes, dport)  # first: it chowns the tree to RUN_AS
        procs.append(dv)
        pbs = start_pillarbox(tmp, env, pport)
        procs.extend(pbs)
        wait_port(pport, pbs[0], "pillarbox", tmp)
        wait_port(dport, dv, "dovecot", tmp)
        # warm-up: one session per account on each side (records, indexes, auth caches)
        rng = random.Random(1)
        for u in USERS:
            session(pport, u, rng)
            session(dport, u, rng)
        for n in (1, 4, 16):
            rates = {"pillarbox": 0.0, "dovecot": 0.0}
            for _ in range(2):  # alternated, best of 2: the machine is shared and noisy
                for name, port in (("pillarbox", pport), ("dovecot", dport)):
                    rates[name] = max(rates[name], rate(port, n))
            print("%d client(s), short sessions with LOGIN (SELECT, 50 ENVELOPEs, 10 bodies, "
                  "SEARCH, LOGOUT), %.0fs, best of 2, auth cache on both sides:" % (n, SECONDS))
            for name in ("pillarbox", "dovecot"):
                print("  %-9s %.1f sessions/s" % (name, rates[name]))
            print("  ratio pillarbox/dovecot rate: %.2f (target >= 1.5)"
                  % (rates["pillarbox"] / rates["dovecot"]))
        pb = pbs[0]
        # Every process serving the session: below tcpserver the pre-login front and
        # login-handoff (both waiting as login-wait once the session runs), below the broker's
        # s6-ipcserverd the session program; the shared listeners (tcpserver, s6-ipcserverd)
        # and auth-serve are not counted. Dovecot: imap and the shared imap-login processes.
        def pb_procs():
            return common.descendants(pb.pid) + [
                d for b in pbs[1:] for d in common.descendants(b.pid)]

        def dv_procs():
            return [(pid, comm) for pid, comm in common.descendants(dv.pid)
                    if comm in ("imap", "imap-login")]
        for port in (pport, dport):  # the first SELECT makes the record / the index
            session_pss(port, lambda: [], BIG)
        for user, n in ((BIG, PSS_NMSG), (USERS[0], common.NMSG)):
            kb, detail = session_pss(pport, pb_procs, user)
            dk, ddetail = session_pss(dport, dv_procs, user)
            print("PSS of every process serving one logged-in session (INBOX of %d selected):"
                  % n)
            print("  pillarbox %d kB  %s" % (kb, " + ".join("%s %d" % d for d in detail)))
            print("  dovecot   %d kB  (imap and the shared imap-login processes: %s)"
                  % (dk, " + ".join("%s %d" % d for d in ddetail)))
            if n == PSS_NMSG:
                print("  target (issue 12): pillarbox < 512 kB")
    finally:
        for p in procs:
            common.stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
