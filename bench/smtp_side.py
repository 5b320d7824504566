"""SMTP in, side by side with Postfix in the same run, under the privilege model: accept rate
with one connection per message and with 20 reused connections, and the PSS of a held
plaintext session.

Both servers as in bench/smtp_model.py (which this reuses): pillarbox made by `mail-instance
create` as root, its smtpd and inject services under s6-svscan (tcpserver -> tls-serve -S ->
smtp-receive as pb-smtpd -> the injection socket -> queue-inject as pb-queue), the scheduler
stopped; Postfix private (smtpd -> cleanup -> queue, qmgr off). Load: smtp-source, 20 sessions
at once, 2 KB messages, one local recipient; one connection per message (no -d) and reused
connections (-d). The per-address connection cap (control/smtp-peermax) is set to 50, as
Postfix's smtpd_client_connection_count_limit, since every session comes from 127.0.0.1.
Each shape runs twice per server, alternating; the best run is kept.
PSS: smaps_rollup of the processes holding one plaintext session after EHLO (smtp-receive and
its tls-serve relay for pillarbox; smtpd for Postfix).

Needs root. Environment: BENCH_MODEL_N (messages per run, default 3000).
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


def held_session_pss(port, names):
    """PSS (KB) of the new processes named in names while one session is held after EHLO."""
    before = set(p for p, _ in procs_by_name(names))
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.recv(512)
        s.sendall(b"EHLO client.example\r\n")
        buf = b""
        while b"\r\n250 " not in buf:
            buf += s.recv(4096)
        time.sleep(0.3)  # let the fork settle (a measurement, not a synchronisation)
        new = [(p, c) for p, c in procs_by_name(names) if p not in before]
        return sum(pss_kb(p) for p, _ in new), new
    finally:
        s.close()


def main():
    if os.geteuid() != 0:
        print("smtp_side: needs root; skipped")
        return 0
    base = tempfile.mkdtemp(prefix="bench-side-", dir="/var/tmp")
    os.chmod(base, 0o755)
    pb = pf = None
    try:
        pb = m.pillarbox_start(base)
        with open(os.path.join(pb[1], "control", "smtp-peermax"), "w") as f:
            f.write("50\n")
        pf = m.postfix_start(base)
        print("SMTP accept, %d messages of 2 KB, %d sessions at once (smtp-source), best of 2 "
              "alternating runs, %s" % (m.N, m.PAR, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
        for reuse in (False, True):
            source(pb[2], 200, reuse)
            source(pf[1], 200, reuse)
            rb, rf = [], []
            for _ in range(2):
                rb.append(source(pb[2], m.N, reuse))
                rf.append(source(pf[1], m.N, reuse))
            b, f = max(rb), max(rf)
            shape = "20 reused connections" if reuse else "one connection per message"
            print("%-28s pillarbox %6.0f msg/s  Postfix %6.0f msg/s  ratio %.2f   (runs %s / %s)"
                  % (shape, b, f, b / f, " ".join("%.0f" % x for x in rb),
                     " ".join("%.0f" % x for x in rf)))
        kb, procs = held_session_pss(pb[2], {"smtp-receive", "tls-serve"})
        print("PSS of a held plaintext session, pillarbox: %d KB (%s)"
              % (kb, ", ".join("%s %d" % (c, pss_kb(p)) for p, c in procs)))
        kb, procs = held_session_pss(pf[1], {"smtpd"})
        print("PSS of a held plaintext session, Postfix:   %d KB (%s)"
              % (kb, ", ".join("%s %d" % (c, pss_kb(p)) for p, c in procs)))
    finally:
        if pf:
            m.postfix_stop(pf[0])
        if pb:
            m.pillarbox_stop(pb[0], pb[1])
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
