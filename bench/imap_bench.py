"""bench/imap_bench.py: imap-maildir against Dovecot 2.3's imap over the same Maildir, same run.

A deterministic 10,000-message INBOX (1-50 KB; text/plain, multipart/alternative text+HTML,
multipart/mixed with a base64 attachment: bench/pop3.py's generator; a quarter unseen, some
flagged or answered) is made once; every run gives each server its own copy (hard links, so
the page cache is shared and warm; each server renames only its own directory entries).

How the two are started (the same steps on both sides): tcpserver -u nobody on a loopback
port runs the post-login program directly, which greets with PREAUTH (no login on either
side; imap-serve, the login front, is measured elsewhere):
  pillarbox: tcpserver ... imap-maildir            (HOME = the Maildir)
  Dovecot:   tcpserver ... /usr/lib/dovecot/imap   (HOME = its home, mail_location = ~/Maildir)
Dovecot's settings are handed over in its own environment form (what `doveconf -e` passes),
so that each session is one exec on both sides: run with `-c FILE`, Dovecot's imap would
exec doveconf and itself again per session. Dovecot keeps its index files in the Maildir
(its default), with its default fsync settings.

Measured:
  1. the single-client suite: connect + SELECT INBOX, FETCH 1:* (FLAGS UID RFC822.SIZE
     ENVELOPE), FETCH 1:* BODYSTRUCTURE, UID FETCH 1:* BODY.PEEK[], SEARCH SUBJECT,
     STORE 1:* +FLAGS (\\Flagged) (the warm sessions alternate -FLAGS and +FLAGS, so every
     STORE changes all 10,000 messages), LOGOUT. "Cold" is each server's first session on its
     copy (no record, no index, no cache of ours or Dovecot's; page cache warm: the files were
     just written or linked), "warm" the best of the next two sessions;
  2. short sessions (connect, SELECT, FETCH of 50 envelopes, 10 BODY.PEEK[], SEARCH SUBJECT,
     LOGOUT) with 1, 4 and 16 clients, each client on its own account (a copy of the INBOX;
     one tcpserver per account, as PREAUTH names no user), after one warm-up session on each
     account: sessions per second;
  3. PSS (/proc/PID/smaps_rollup) of the process serving one session with the 10,000-message
     INBOX selected (warm), i.e. imap-maildir / Dovecot's imap alone (PREAUTH: no login
     chain); tcpserver not counted. Issue 12's figure, every process of a logged-in session
     (the pre-login side included), is bench/imap_login.py's;
  4. SELECT of a 100,000-message folder (small messages) in a new session (a new server
     process, page cache warm) once the folder has been opened before; the first ever SELECT
     (building the record / index) is printed too.
The client is the same for both (raw socket, literals skipped by count); its own time is in
every figure. Prints times and ratios pillarbox / Dovecot. Run as root:
  /usr/bin/python3 bench/imap_bench.py     (BENCH_IMAP_RUNS, BENCH_IMAP_MESSAGES,
                                            BENCH_IMAP_SECONDS, BENCH_IMAP_BIG to change sizes)
"""
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pop3  # noqa: E402  (the message generator)
from _benchlib import descendants, free_port, pool_rate, pss, sessions_for  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "bin")
NMSG = int(os.environ.get("BENCH_IMAP_MESSAGES", "10000"))
RUNS = int(os.environ.get("BENCH_IMAP_RUNS", "3"))
SHORT_SECONDS = float(os.environ.get("BENCH_IMAP_SECONDS", "5"))
BIG = int(os.environ.get("BENCH_IMAP_BIG", "100000"))
ACCOUNTS = 16
RUN_AS = "nobody"
DOVECOT_IMAP = "/usr/lib/dovecot/imap"


# ---- the corpus ----

def make_master(d, n):
    """n messages in d/cur, names as deliver-maildir writes them; returns total octets."""
    os.makedirs(d + "/cur")
    rng = random.Random(20261205)
    total = 0
    for i in range(n):
        _, data = pop3.message(rng, i)
        t = 1700000000 + i * 37
        r = i % 8
        info = ":2," if r in (0, 1) else ":2,FS" if r == 2 else ":2,RS" if r == 3 else ":2,S"
        name = "%d.M%dP%dQ1.mx.example.test,S=%d%s" % (t, i, 4000 + i, len(data), info)
        with open(os.path.join(d, "cur", name), "wb") as f:
            f.write(data)
        total += len(data)
    return total


def make_small(d, n):
    """n small messages (about 400 octets) for the SELECT of a big folder."""
    os.makedirs(d + "/cur")
    for sub in ("new", "tmp"):
        os.makedirs(os.path.join(d, sub))
    for i in range(n):
        t = 1600000000 + i
        data = ("From: s%d@example.org\nTo: big@example.test\nSubject: small %d\n"
                "Date: Tue, 14 Nov 2023 22:13:20 +0000\nMessage-ID: <%d@example.org>\n\n"
                "a small message to fill a big folder, number %d\n" % (i % 97, i, i, i)).encode()
        name = "%d.M%dP%dQ1.mx.example.test,S=%d:2,S" % (t, i, 9000 + i % 1000, len(data))
        with open(os.path.join(d, "cur", name), "wb") as f:
            f.write(data)


def copy_maildir(master, dst):
    """A Maildir at dst whose cur/ holds hard links to master's files."""
    for sub in ("new", "tmp", "cur"):
        os.makedirs(os.path.join(dst, sub))
    for n in os.listdir(master + "/cur"):
        os.link(os.path.join(master, "cur", n), os.path.join(dst, "cur", n))


def chown_tree(path, uid, gid):
    for dp, dns, fns in os.walk(path):
        os.chown(dp, uid, gid)
        for n in fns:
            os.lchown(os.path.join(dp, n), uid, gid)


# ---- the client ----

LIT = re.compile(rb"\{(\d+)\}$")


class Client:
    """An IMAP client that reads replies fast: literals are skipped by count."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.buf = bytearray()
        self.pos = 0
        self.tagn = 0
        g = self.line()
        if not g.startswith(b"* PREAUTH"):
            raise RuntimeError("greeting %r" % g)

    def fill(self):
        if self.pos > 1 << 20:
            del self.buf[:self.pos]
            self.pos = 0
        d = self.s.recv(1 << 20)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def line(self):
        while True:
            i = self.buf.find(b"\r\n", self.pos)
            if i >= 0:
                ln = bytes(self.buf[self.pos:i])
                self.pos = i + 2
                return ln
            self.fill()

    def skip(self, n):
        have = len(self.buf) - self.pos
        if have >= n:
            self.pos += n
            return
        n -= have
        del self.buf[:]
        self.pos = 0
        scratch = bytearray(1 << 20)
        while n > 0:
            k = self.s.recv_into(scratch, min(n, len(scratch)))
            if not k:
                raise EOFError("connection closed in a literal")
            n -= k

    def cmd(self, text):
        """Sends a command; returns (untagged lines with literals elided, literal octets)."""
        self.tagn += 1
        tag = b"a%d" % self.tagn
        self.s.sendall(tag + b" " + text + b"\r\n")
        lines, lit = [], 0
        cur = b""
        while True:
            ln = self.line()
            m = LIT.search(ln)
            if m:
                n = int(m.group(1))
                self.skip(n)
                lit += n
                cur += ln[:m.start()] + b"{}"
                continue
            ln = cur + ln
            cur = b""
            if ln.startswith(tag + b" "):
                if not ln.startswith(tag + b" OK"):
                    raise RuntimeError("%r -> %r" % (text, ln))
                return lines, lit
            lines.append(ln)

    def close(self):
        self.s.close()


def count_fetch(lines):
    return sum(1 for ln in lines if b" FETCH (" in ln)


def search_hits(lines):
    for ln in lines:
        if ln.startswith(b"* SEARCH"):
            return len(ln.split()) - 2
    return -1


def suite(port, store):
    """One single-client session; returns ({step: seconds}, check tuple)."""
    t = {}
    t0 = time.perf_counter()
    c = Client(port)
    lines, _ = c.cmd(b"SELECT INBOX")
    t1 = time.perf_counter()
    t["select"] = t1 - t0
    exists = [ln for ln in lines if ln.endswith(b" EXISTS")]
    l1, _ = c.cmd(b"FETCH 1:* (FLAGS UID RFC822.SIZE ENVELOPE)")
    t2 = time.perf_counter()
    t["envelope"] = t2 - t1
    l2, _ = c.cmd(b"FETCH 1:* BODYSTRUCTURE")
    t3 = time.perf_counter()
    t["bodystructure"] = t3 - t2
    l3, octets = c.cmd(b"UID FETCH 1:* BODY.PEEK[]")
    t4 = time.perf_counter()
    t["body"] = t4 - t3
    l4, _ = c.cmd(b'SEARCH SUBJECT "message 99"')
    t5 = time.perf_counter()
    t["search"] = t5 - t4
    c.cmd(b"STORE 1:* " + store + b" (\\Flagged)")
    c.cmd(b"LOGOUT")
    c.close()
    t["store"] = time.perf_counter() - t5
    t["total"] = time.perf_counter() - t0
    return t, (exists[:1], count_fetch(l1), count_fetch(l2), count_fetch(l3), octets,
               search_hits(l4))


def short_session(port, rng):
    c = Client(port)
    lines, _ = c.cmd(b"SELECT INBOX")
    n = int([ln for ln in lines if ln.endswith(b" EXISTS")][0].split()[1])
    lo = max(1, n - 49)
    c.cmd(b"FETCH %d:%d (FLAGS UID RFC822.SIZE ENVELOPE)" % (lo, n))
    for _ in range(10):
        c.cmd(b"FETCH %d BODY.PEEK[]" % rng.randint(1, n))
    c.cmd(b'SEARCH SUBJECT "message 4242"')
    c.cmd(b"LOGOUT")
    c.close()


def short_worker(args):
    port, seconds, seed = args
    return sessions_for(seconds, seed, lambda rng: short_session(port, rng))


def short_rate(ports, n):
    return pool_rate(short_worker, [(ports[i], SHORT_SECONDS, i) for i in range(n)])


# ---- the servers ----

class Server:
    """tcpserver -u nobody on a loopback port running one side's post-login program."""

    def __init__(self, kind, home, tmp):
        import pwd
        pw = pwd.getpwnam(RUN_AS)
        self.port = free_port()
        env = {"PATH": "/usr/bin:/bin", "USER": RUN_AS, "HOME": home}
        if kind == "pillarbox":
            prog = [BIN + "/imap-maildir"]
        else:
            # what `doveconf -f service=imap -c FILE -m imap -m ssl -e` hands to imap
            env.update({"DOVECONF_ENV": "1", "BASE_DIR": tmp + "/dovecot-run",
                        "LOG_PATH": tmp + "/dovecot.log", "SSL": "no",
                        "MAIL_LOCATION": "maildir:~/Maildir", "FIRST_VALID_UID": "1"})
            prog = [DOVECOT_IMAP]
        self.log = open(tmp + "/%s.log" % kind, "a")
        self.p = subprocess.Popen(["tcpserver", "-u", str(pw.pw_uid), "-g", str(pw.pw_gid),
                                   "-R", "-H", "-l", "localhost", "-c", "100", "127.0.0.1",
                                   str(self.port)] + prog, env=env, stdout=subprocess.DEVNULL,
                                  stderr=self.log)
        deadline = time.monotonic() + 20
        while True:
            try:
                Client(self.port).close()
                return
            except (OSError, EOFError, RuntimeError):
                if time.monotonic() > deadline or self.p.poll() is not None:
                    raise SystemExit("%s did not start: see %s/%s.log" % (kind, tmp, kind))
                time.sleep(0.05)

    def session_pss(self):
        c = Client(self.port)
        c.cmd(b"SELECT INBOX")
        time.sleep(0.3)
        procs = [(c, pss(p)) for p, c in descendants(self.p.pid)]
        kb = sum(k for _, k in procs)
        c.cmd(b"LOGOUT")
        c.close()
        return kb, procs

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


SIDES = ("pillarbox", "dovecot")


def layout(tmp, master, name, kinds=SIDES):
    """A fresh copy of master for each side; returns {kind: home}."""
    import pwd
    pw = pwd.getpwnam(RUN_AS)
    homes = {}
    for k in kinds:
        home = os.path.join(tmp, name, k)
        md = home if k == "pillarbox" else os.path.join(home, "Maildir")
        copy_maildir(master, md)
        chown_tree(os.path.join(tmp, name, k), pw.pw_uid, pw.pw_gid)
        homes[k] = home
    return homes


def rng_str(vals, fmt="%.3f"):
    return (fmt % min(vals)) + ("" if len(vals) == 1 else ("-" + fmt % max(vals)))


def main():
    if not os.path.exists(DOVECOT_IMAP):
        raise SystemExit("bench/imap_bench.py: needs Debian's dovecot-imapd")
    if os.geteuid() != 0:
        raise SystemExit("bench/imap_bench.py: run as root (the servers run as nobody)")
    tmp = tempfile.mkdtemp(prefix="pillarbox-bench-imap-")
    os.chmod(tmp, 0o755)
    os.makedirs(tmp + "/dovecot-run")
    servers = []
    try:
        t = time.perf_counter()
        master = tmp + "/master"
        total = make_master(master, NMSG)
        print("INBOX: %d messages, %.1f MB; made in %.1fs; load %s"
              % (NMSG, total / 1e6, time.perf_counter() - t,
                 open("/proc/loadavg").read().split(" ", 3)[:3]))
        import pwd
        pw = pwd.getpwnam(RUN_AS)
        chown_tree(tmp + "/dovecot-run", pw.pw_uid, pw.pw_gid)

        # 1. the single-client suite, cold and warm, RUNS times, the two sides alternated
        steps = ("select", "envelope", "bodystructure", "body", "search", "store", "total")
        res = {(k, w): [] for k in SIDES for w in ("cold", "warm")}
        checks = {}
        for run in range(RUNS):
            homes = layout(tmp, master, "run%d" % run)
            srv = {k: Server(k, homes[k], tmp) for k in SIDES}
            servers.extend(srv.values())
            order = SIDES if run % 2 == 0 else SIDES[::-1]
            for k in order:
                tm, chk = suite(srv[k].port, b"+FLAGS")
                res[(k, "cold")].append(tm)
                checks[k] = chk
            warm = {k: [] for k in SIDES}
            for i in range(2):
                for k in order:
                    warm[k].append(suite(srv[k].port, b"-FLAGS" if i == 0 else b"+FLAGS")[0])
            for k in SIDES:
                res[(k, "warm")].append(min(warm[k], key=lambda x: x["total"]))
            for s in srv.values():
                s.stop()
                servers.remove(s)
            shutil.rmtree(os.path.join(tmp, "run%d" % run), ignore_errors=True)
        if checks["pillarbox"] != checks["dovecot"]:
            print("NOTE: the replies differ (EXISTS, FETCH counts, body octets, SEARCH hits):"
                  "\n  pillarbox %r\n  dovecot   %r" % (checks["pillarbox"], checks["dovecot"]))
        else:
            print("both: %r (EXISTS, FETCH responses x3, body octets, SEARCH hits)"
                  % (checks["pillarbox"],))
        print("single client, %d messages, %d runs (min-max over runs; warm: best of 2 per run):"
              % (NMSG, RUNS))
        print("  %-14s %-25s %-25s %s" % ("step", "pillarbox cold / warm s", "dovecot cold / warm s",
                                          "ratio cold / warm"))
        for st in steps:
            row = []
            for k in SIDES:
                row.append("%s / %s" % (rng_str([r[st] for r in res[(k, "cold")]]),
                                        rng_str([r[st] for r in res[(k, "warm")]])))
            rc = [res[("pillarbox", "cold")][i][st] / res[("dovecot", "cold")][i][st]
                  for i in range(RUNS)]
            rw = [res[("pillarbox", "warm")][i][st] / res[("dovecot", "warm")][i][st]
                  for i in range(RUNS)]
            print("  %-14s %-25s %-25s %s / %s" % (st, row[0], row[1], rng_str(rc, "%.2f"),
                                                   rng_str(rw, "%.2f")))
        print("  targets: total ratio cold <= 1.0, warm <= 0.8")

        # 2. short sessions, one account per client
        homes = [layout(tmp, master, "acct%d" % a) for a in range(ACCOUNTS)]
        srv = {k: [Server(k, h[k], tmp) for h in homes] for k in SIDES}
        for k in SIDES:
            servers.extend(srv[k])
            for s in srv[k]:
                short_session(s.port, random.Random(0))
        for n in (1, 4, 16):
            rates = {k: [] for k in SIDES}
            for _ in range(2):
                for k in SIDES:
                    rates[k].append(short_rate([s.port for s in srv[k]], n))
            ratios = [rates["pillarbox"][i] / rates["dovecot"][i] for i in range(2)]
            print("%2d client(s), short sessions (SELECT, 50 ENVELOPE, 10 BODY.PEEK[], SEARCH), "
                  "%.0fs x2: pillarbox %s/s, dovecot %s/s, ratio %s (target >= 1.5)"
                  % (n, SHORT_SECONDS, rng_str(rates["pillarbox"], "%.1f"),
                     rng_str(rates["dovecot"], "%.1f"), rng_str(ratios, "%.2f")))

        # 3. PSS of one session with the 10,000-message INBOX selected
        pk = {}
        for k in SIDES:
            kb, procs = srv[k][0].session_pss()
            pk[k] = kb
            print("PSS, one PREAUTH session with INBOX selected (the post-login program "
                  "alone; bench/imap_login.py measures the whole login chain): %-9s %d kB (%s)"
                  % (k, kb, " + ".join("%s %d" % x for x in procs) or "-"))
        print("  ratio %.2f; target (every process of a session) pillarbox < 512 kB"
              % (pk["pillarbox"] / pk["dovecot"]))
        # text pages are shared between sessions: 4 sessions at once, one per account
        per = {}
        for k in SIDES:
            cs = []
            for s in srv[k][:4]:
                c = Client(s.port)
                c.cmd(b"SELECT INBOX")
                cs.append(c)
            time.sleep(0.3)
            per[k] = sum(pss(p) for s in srv[k][:4] for p, _ in descendants(s.p.pid)) / 4
            for c in cs:
                c.cmd(b"LOGOUT")
                c.close()
        print("  with 4 sessions at once (4 accounts), per session: pillarbox %d kB, dovecot %d kB"
              % (per["pillarbox"], per["dovecot"]))
        for k in SIDES:
            for s in srv[k]:
                s.stop()
                servers.remove(s)
        for a in range(ACCOUNTS):
            shutil.rmtree(os.path.join(tmp, "acct%d" % a), ignore_errors=True)

        # 4. SELECT of a 100,000-message folder
        t = time.perf_counter()
        make_small(tmp + "/bigmaster", BIG)
        print("big folder: %d messages made in %.1fs" % (BIG, time.perf_counter() - t))
        homes = layout(tmp, tmp + "/bigmaster", "big")
        first, again = {}, {}
        for k in SIDES:
            s = Server(k, homes[k], tmp)
            servers.append(s)
            t0 = time.perf_counter()
            c = Client(s.port)
            c.cmd(b"SELECT INBOX")
            c.cmd(b"LOGOUT")
            c.close()
            first[k] = time.perf_counter() - t0
            s.stop()
            servers.remove(s)
            again[k] = []
            for _ in range(3):
                s = Server(k, homes[k], tmp)  # a restarted server
                servers.append(s)
                t0 = time.perf_counter()
                c = Client(s.port)
                c.cmd(b"SELECT INBOX")
                again[k].append(time.perf_counter() - t0)
                c.cmd(b"LOGOUT")
                c.close()
                s.stop()
                servers.remove(s)
        for k in SIDES:
            print("SELECT of %d messages, %-9s: first ever %.3f s, after a restart %s s"
                  % (BIG, k, first[k], rng_str(again[k])))
        print("  ratio after a restart %.2f; target pillarbox < 0.5 s"
              % (min(again["pillarbox"]) / min(again["dovecot"])))
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
