"""SMTP in, side by side with Postfix in the same run, under the privilege model: accept rate
with one connection per message and with 20 reused connections, and the PSS of a held
plaintext session.

Both servers as in bench/smtp_model.py (which this reuses): pillarbox made by `mail-instance
create` as root, its smtpd, tls-engine and inject services under s6-svscan (tcp-pool ->
long-lived smtp-receive workers as pb-smtpd, STARTTLS through the tls-engine service -> the injection socket ->
queue-inject-ipc as pb-queue), the scheduler
stopped; Postfix private (smtpd -> cleanup -> queue, qmgr off). Load: smtp-source, 20 sessions
at once, 2 KB messages, one local recipient; one connection per message (no -d) and reused
connections (-d). The per-address connection cap (control/smtp-peermax) is set to 50, as
Postfix's smtpd_client_connection_count_limit, since every session comes from 127.0.0.1.
Each shape runs twice per server, alternating; the best run is kept.
PSS: smaps_rollup of the processes holding one plaintext session after EHLO (the smtp-receive
worker serving it: fd 0 a socket; and any tls-serve or tls-engine process made for it, for
pillarbox; smtpd for Postfix), alone and per session with 20 held; and the idle workers (fd 0 on
/dev/null, waiting in accept) and tcp-pool itself, which a held session does not count.
CPU: each tree in a cgroup of its own (smtp_model.CpuGroup): CPU time per accepted message.
End to end, 20 reused connections: from the first byte until the last message is in the
recipient's Maildir (fsync'ed by both): pillarbox with its queue service started (queue-run ->
queue-spawn -> its long-running deliver-maildir workers, under their uids); a second private
Postfix with qmgr on, delivering by virtual(8) to a Maildir; CPU per message from the same
cgroups (pillarbox's whole tree against the delivering Postfix's). Baseline for the target "0.3 of the 20-writer ceiling":
the disk's 20-writer durable-commit ceiling (bench/_benchlib.Ceiling: a directory of its own,
made before either server, that the runs never touch) measured before the end-to-end runs and
after each of them; the ratio is printed against the highest ceiling seen (the conservative
one) and against the median.

Needs root. Environment: BENCH_MODEL_N (messages per run, default 400).
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import smtp_model as m  # noqa: E402
from _benchlib import Arrivals, Ceiling, remove_tree, settle  # noqa: E402


def cpu_source(port, n, reuse, cg):
    c0 = cg.usage_ms()
    r = source(port, n, reuse)
    c1 = cg.usage_ms()
    return r, (c1 - c0) / n if c0 is not None else None


def source(port, n, reuse):
    args = [m.SOURCE, "-s", str(m.PAR), "-m", str(n), "-l", "2048", "-f", "a@b.example",
            "-t", "bench@example.test", "-M", "client.example"] + (["-d"] if reuse else []) + \
           ["127.0.0.1:%d" % port]
    t0 = time.monotonic()
    r = subprocess.run(args, capture_output=True, timeout=600)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError("smtp-source failed: %r" % (r.stderr[-500:],))
    return n / dt


def pss_kb(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def procs_by_name(names):
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % pid) as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm in names:
            out.append((int(pid), comm))
    return out


def serving(pid):
    """A pool worker that holds a session: its fd 0 is a socket (idle: /dev/null)."""
    try:
        return os.readlink("/proc/%d/fd/0" % pid).startswith("socket:")
    except OSError:
        return False


def of_instance(pid, root):
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            return ("MAILROOT=" + root).encode() in f.read().split(b"\0")
    except OSError:
        return False


def idle_pool_pss(root):
    """PSS (KB) of the instance's idle smtp-receive workers (each) and of tcp-pool."""
    idle = [pss_kb(p) for p, c in procs_by_name({"smtp-receive"})
            if of_instance(p, root) and not serving(p)]
    pool = [pss_kb(p) for p, c in procs_by_name({"tcp-pool"}) if of_instance(p, root)]
    return idle, pool


def held_session_pss(port, names, k=1):
    """PSS (KB) of the processes named in names that hold the k sessions held after EHLO (new
    ones, and pool workers serving a session): the total, and the total per process name."""
    before = set(p for p, _ in procs_by_name(names))
    socks = []
    try:
        for _ in range(k):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(s)
            s.recv(512)
            s.sendall(b"EHLO client.example\r\n")
            buf = b""
            while b"\r\n250 " not in buf and b"250 " not in buf[:4]:
                buf += s.recv(4096)
        time.sleep(0.3)  # let the fork settle (a measurement, not a synchronisation)
        by = {}
        for p, c in procs_by_name(names):
            if p not in before or (c == "smtp-receive" and serving(p)):
                by[c] = by.get(c, 0) + pss_kb(p)
        return sum(by.values()), by
    finally:
        for s in socks:
            s.close()


E2E_CF = """\
mydestination =
virtual_mailbox_domains = example.test
virtual_mailbox_base = {mb}
virtual_mailbox_maps = static:bench/
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
"""


def postfix_e2e_start(base, cg):
    """A second private Postfix that delivers (qmgr on) by virtual(8) into MB/bench/."""
    conf = os.path.join(base, "pfe-conf")
    q = os.path.join(base, "pfe-queue")
    d = os.path.join(base, "pfe-data")
    mb = os.path.join(base, "pfe-mail")
    for x in (conf, q, d, mb):
        os.makedirs(x)
    port = m.free_port()
    main_cf = m.MAIN_CF.format(q=q, d=d).replace("master_service_disable = qmgr.unix pickup.unix\n",
                                                  "")
    with open(os.path.join(conf, "main.cf"), "w") as f:
        f.write(main_cf + E2E_CF.format(mb=mb, uid=65534, gid=65534))
    with open(os.path.join(conf, "master.cf"), "w") as f:
        f.write(m.MASTER_CF.format(port=port) + "virtual   unix  - n n - - virtual\n")
    shutil.chown(d, "postfix")
    shutil.chown(mb, 65534, 65534)
    r = subprocess.run(["postfix", "-c", conf, "start"], capture_output=True, preexec_fn=cg.enter)
    if r.returncode != 0:
        raise RuntimeError("postfix start: %r" % (r.stderr[-800:],))
    m.wait(lambda: m.listening(port), "postfix e2e smtpd")
    return conf, port, os.path.join(mb, "bench", "new")


def count(d):
    return len(os.listdir(d)) if os.path.isdir(d) else 0


def end_to_end(port, n, newdir):
    """Rate from the first byte until n more messages are in newdir (20 reused connections)."""
    if not os.path.isdir(newdir):  # a first delivery makes it (Postfix's virtual): list, slowly
        have = count(newdir)
        t0 = time.monotonic()
        source(port, n, True)
        m.wait(lambda: count(newdir) >= have + n, "%d messages in %s" % (n, newdir), 900)
        return n / (time.monotonic() - t0)
    a = Arrivals(newdir)  # counted by inotify: a listing per poll would take CPU from the servers
    try:
        have = a.count()
        t0 = time.monotonic()
        source(port, n, True)
        a.wait(have + n, time.monotonic() + 900)
        return n / (time.monotonic() - t0)
    finally:
        a.close()


def pillarbox_queue_up(root):
    """Drops what the accept runs queued, then starts the queue service with 20 local
    deliveries at once (control/concurrency-local; default 10), as Postfix's virtual(8) runs
    20 (virtual_destination_concurrency_limit, its default)."""
    with open(os.path.join(root, "control", "concurrency-local"), "w") as f:
        f.write("20\n")
    for sub in ("mess", "state"):
        d = os.path.join(root, "queue", sub)
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
    svc = os.path.join(root, "service", "queue")
    subprocess.run(["s6-svc", "-u", svc], check=True)
    m.wait(lambda: subprocess.run(["s6-svstat", "-o", "up", svc], capture_output=True,
                                  text=True).stdout.strip() == "true", "the queue service")


def main():
    if os.geteuid() != 0:
        print("smtp_side: needs root; skipped")
        return 0
    settle("smtp_side")
    ceil = Ceiling()  # first: before any instance
    base = tempfile.mkdtemp(prefix="bench-side-", dir="/var/tmp")
    os.chmod(base, 0o755)
    pb = pf = pfe = None
    cgb, cgf, cge = m.CpuGroup("side-pb"), m.CpuGroup("side-pf"), m.CpuGroup("side-pfe")
    try:
        pb = m.pillarbox_start(base, cgb)  # smtp-peermax 50 there, as Postfix's limit
        pf = m.postfix_start(base, cgf)
        with open("/proc/loadavg") as f:
            print("SMTP accept, %d messages of 2 KB, %d sessions at once (smtp-source), best of 2 "
                  "alternating runs, %s, load %s" % (
                      m.N, m.PAR, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                      " ".join(f.read().split()[:3])))
        for reuse in (False, True):
            source(pb[2], 200, reuse)
            source(pf[1], 200, reuse)
            rb, rf = [], []
            for _ in range(2):
                rb.append(cpu_source(pb[2], m.N, reuse, cgb))
                rf.append(cpu_source(pf[1], m.N, reuse, cgf))
            b, f = max(r for r, _ in rb), max(r for r, _ in rf)
            shape = "20 reused connections" if reuse else "one connection per message"
            cpu = ""
            if rb[0][1] is not None and rf[0][1] is not None:
                cpu = "  CPU/msg %.1f / %.1f ms" % (min(c for _, c in rb), min(c for _, c in rf))
            print("%-28s pillarbox %6.0f msg/s  Postfix %6.0f msg/s  ratio %.2f   (runs %s / %s)%s"
                  % (shape, b, f, b / f, " ".join("%.0f" % x for x, _ in rb),
                     " ".join("%.0f" % x for x, _ in rf), cpu))
        for k in (1, 20):
            kb, by = held_session_pss(pb[2], {"smtp-receive", "tls-serve", "tls-engine"}, k)
            print("PSS, %2d held plaintext session(s), pillarbox: %d KB per session (%s)"
                  % (k, kb / k, ", ".join("%s %d" % (c, v / k) for c, v in sorted(by.items()))))
        idle, pool = idle_pool_pss(pb[1])
        if idle or pool:
            print("PSS of the idle pool: %d idle workers, %s KB each; tcp-pool %s KB"
                  % (len(idle), "/".join("%d" % x for x in sorted(idle)) or "-",
                     "/".join("%d" % x for x in pool) or "-"))
        # (Postfix's smtpd processes are reused across sessions: no per-session figure)
        m.postfix_stop(pf[0])
        pf = None
        pillarbox_queue_up(pb[1])
        pfe = postfix_e2e_start(base, cge)
        pbnew = os.path.join(pb[1], "mail", "example.test", "bench", "new")
        end_to_end(pb[2], 200, pbnew)  # warm-up
        end_to_end(pfe[1], 200, pfe[2])
        eb, ef, cpu = [], [], []
        ceil.measure()
        for _ in range(2):
            b0 = cgb.usage_ms()
            eb.append(end_to_end(pb[2], m.N, pbnew))
            b1 = cgb.usage_ms()
            ceil.measure()
            f0 = cge.usage_ms()
            ef.append(end_to_end(pfe[1], m.N, pfe[2]))
            f1 = cge.usage_ms()
            ceil.measure()
            if None not in (b0, f0):
                cpu.append(((b1 - b0) / m.N, (f1 - f0) / m.N))
        b, f = max(eb), max(ef)
        print("end to end, 20 reused connections, into the Maildir: pillarbox %.0f msg/s  "
              "Postfix %.0f msg/s  ratio %.2f (target >= 1.5)  (runs %s / %s)%s"
              % (b, f, b / f, " ".join("%.0f" % x for x in eb), " ".join("%.0f" % x for x in ef),
                 "  CPU/msg %.1f / %.1f ms" % (min(c for c, _ in cpu), min(c for _, c in cpu))
                 if cpu else ""))
        print("end to end / 20-writer ceiling: %.2f of the highest (%.0f commits/s), %.2f of the "
              "median (%.0f) (target >= 0.3); ceilings %s"
              % (b / ceil.highest(), ceil.highest(), b / ceil.median(), ceil.median(),
                 " ".join("%.0f" % x for x in ceil.seen)))
        with open("/proc/loadavg") as f:
            print("load after: %s" % " ".join(f.read().split()[:3]))
    finally:
        if pf:
            m.postfix_stop(pf[0])
        if pfe:
            m.postfix_stop(pfe[0])
        if pb:
            m.pillarbox_stop(pb[0], pb[1])
        time.sleep(1)
        for cg in (cgb, cgf, cge):
            cg.remove()
        remove_tree(base)
        ceil.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
