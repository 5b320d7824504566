"""SMTP accept with one connection per message, under the privilege model, side by side with
Postfix in the same run.

pillarbox: an instance made by `mail-instance create` run as root (system users, owners and
modes of doc/security.md), its services started by s6-svscan as root exactly as the templates
run them: tcp-pool (-u pb-smtpd after binding) -> smtp-receive workers (pb-smtpd, each serving
up to 100 connections in sequence, as Postfix's smtpd with max_use) -> the injection
socket (queue-inject-ipc -l's workers as pb-queue, committing in-process). STARTTLS is offered,
as on any real port 25, through the tls-engine service (keys loaded as root; an engine as
pb-tls only for a session that asks for TLS). The scheduler is stopped (accept only: messages
stay queued).
Postfix: a private instance (its own config and queue directories, Debian's binaries) with
smtpd on loopback, cleanup writing each message to its queue, qmgr disabled so the messages
stay queued too. Both fsync their queue files.
Postfix's in_flow_delay is 0: with qmgr off no delivery hands cleanup its flow-control tokens,
and each smtpd would otherwise wait 1 s before every message (20 msg/s with 20 sessions).
Both sides cap one client address at 50 connections (control/smtp-peermax, Postfix's default).
Load: Postfix's smtp-source, 20 sessions in parallel, one connection per message (no -d),
messages of 2 KB to one local recipient. Each server runs twice, alternating; the best run of
each is kept. Prints both rates and the ratio (target >= 1.0).
CPU: each server's whole process tree runs in a cgroup of its own (cpuacct), so the CPU time
it spends per message is measured exactly, whatever else the machine runs; on a shared,
overloaded machine that is the figure to compare (the rates then mostly measure the share of
the CPU each tree gets).

Needs root (system users, s6-svscan as root, Postfix). Environment: BENCH_MODEL_N (messages
per run, default 400: a short run).
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.join(ROOT, "build", "bin")
N = int(os.environ.get("BENCH_MODEL_N", "400"))
PAR = 20
SOURCE = "/usr/sbin/smtp-source"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait(pred, what, timeout=30):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for " + what)
        time.sleep(0.05)


def smtp_source(port, n):
    args = [SOURCE, "-s", str(PAR), "-m", str(n), "-l", "2048", "-f", "a@b.example",
            "-t", "bench@example.test", "-M", "client.example", "127.0.0.1:%d" % port]
    t0 = time.monotonic()
    r = subprocess.run(args, capture_output=True, timeout=600)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError("smtp-source failed: %r" % (r.stderr[-500:],))
    return n / dt


class CpuGroup:
    """A cgroup counting the CPU time of a process tree (v1 cpuacct, else v2)."""

    def __init__(self, name):
        self.dir = None
        for d, f in (("/sys/fs/cgroup/cpuacct", "cpuacct.usage"), ("/sys/fs/cgroup", "cpu.stat")):
            if os.path.isfile(os.path.join(d, f)):
                p = os.path.join(d, "%s-%d" % (name, os.getpid()))
                try:
                    os.mkdir(p)
                except OSError:
                    continue
                self.dir, self.file = p, f
                break

    def enter(self):
        """For preexec_fn: puts the calling (child) process into the group."""
        if self.dir:
            with open(os.path.join(self.dir, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

    def usage_ms(self):
        if not self.dir:
            return None
        with open(os.path.join(self.dir, self.file)) as f:
            t = f.read()
        if self.file == "cpuacct.usage":
            return int(t) / 1e6
        return int(dict(l.split() for l in t.splitlines())["usage_usec"]) / 1e3

    def remove(self):
        if self.dir:
            try:
                os.rmdir(self.dir)
            except OSError:
                pass


def measure(port, n, cg):
    c0 = cg.usage_ms()
    rate = smtp_source(port, n)
    c1 = cg.usage_ms()
    return rate, (c1 - c0) / n if c0 is not None else None


def pillarbox_start(base, cg):
    root = os.path.join(base, "pillarbox")
    env = dict(os.environ, PATH=BIN + ":" + os.environ.get("PATH", "/usr/bin:/bin"),
               MAILROOT=root)
    subprocess.run([os.path.join(BIN, "mail-instance"), "create", root, "--hostname",
                    "mx.example.test", "--domain", "example.test"], env=env, check=True,
                   capture_output=True)
    subprocess.run([os.path.join(BIN, "mail-user"), "add", "bench@example.test"], env=env,
                   input=b"benchpass\n", check=True, capture_output=True)
    # the per-address cap (control/smtp-peermax) at Postfix's smtpd_client_connection_count_limit
    # (50): every bench session comes from 127.0.0.1
    with open(os.path.join(root, "control", "smtp-peermax"), "w") as f:
        f.write("50\n")
    port = free_port()
    svc = os.path.join(root, "service")
    for name in os.listdir(svc):
        if name not in ("smtpd", "inject", "tls-engine"):
            open(os.path.join(svc, name, "down"), "w").close()  # accept only
    with open(os.path.join(svc, "smtpd", "env", "PORT"), "w") as f:
        f.write("%d\n" % port)
    with open(os.path.join(svc, "smtpd", "env", "IP"), "w") as f:
        f.write("127.0.0.1\n")
    p = subprocess.Popen(["s6-svscan", svc], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=cg.enter)
    try:
        wait(lambda: listening(port), "pillarbox smtpd")
        subprocess.run(["s6-svwait", "-U", "-t", "30000", os.path.join(svc, "inject")], check=True)
    except BaseException:  # the caller never gets p: stop the tree here, not leave it running
        pillarbox_stop(p, root)
        raise
    return p, root, port


def pillarbox_stop(p, root):
    subprocess.run(["s6-svscanctl", "-t", os.path.join(root, "service")], capture_output=True)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {q}
data_directory = {d}
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.example.test
mydomain = example.test
mydestination = example.test
local_recipient_maps =
mynetworks = 127.0.0.0/8
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
smtpd_banner = $myhostname ESMTP
biff = no
master_service_disable = qmgr.unix pickup.unix
maillog_file = {d}/maillog
# qmgr is off, so no delivery returns flow-control tokens to cleanup: without this, each smtpd
# would wait in_flow_delay (1 s) before every message and Postfix would be bound at PAR msg/s
in_flow_delay = 0s
"""

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
pickup    unix  n - n 60 1 pickup
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def postfix_start(base, cg):
    conf = os.path.join(base, "postfix-conf")
    q = os.path.join(base, "postfix-queue")
    d = os.path.join(base, "postfix-data")
    for x in (conf, q, d):
        os.makedirs(x)
    port = free_port()
    with open(os.path.join(conf, "main.cf"), "w") as f:
        f.write(MAIN_CF.format(q=q, d=d))
    with open(os.path.join(conf, "master.cf"), "w") as f:
        f.write(MASTER_CF.format(port=port))
    shutil.chown(d, "postfix")
    r = subprocess.run(["postfix", "-c", conf, "start"], capture_output=True, preexec_fn=cg.enter)
    if r.returncode != 0:
        raise RuntimeError("postfix start: %r" % (r.stderr[-800:],))
    wait(lambda: listening(port), "postfix smtpd")
    return conf, port


def postfix_stop(conf):
    subprocess.run(["postfix", "-c", conf, "stop"], capture_output=True)


def main():
    if os.geteuid() != 0:
        print("smtp_model: needs root (system users, s6-svscan as root, Postfix); skipped")
        return 0
    for need in (SOURCE, "/usr/sbin/postfix"):
        if not os.path.exists(need):
            print("smtp_model: %s not found (Debian package postfix); skipped" % need)
            return 0
    base = tempfile.mkdtemp(prefix="bench-model-", dir="/var/tmp")
    os.chmod(base, 0o755)
    pb = pf = None
    cgb, cgf = CpuGroup("bench-pillarbox"), CpuGroup("bench-postfix")
    with open("/proc/loadavg") as f:
        print("load average before: %s" % " ".join(f.read().split()[:3]))
    try:
        pb = pillarbox_start(base, cgb)
        pf = postfix_start(base, cgf)
        print("SMTP accept, one connection per message: %d messages of 2 KB, %d sessions at "
              "once (smtp-source), best of 2 alternating runs" % (N, PAR))
        smtp_source(pb[2], 40)  # warm-up
        smtp_source(pf[1], 40)
        rb, rf = [], []
        for _ in range(2):
            rb.append(measure(pb[2], N, cgb))
            rf.append(measure(pf[1], N, cgf))
        b, f = max(r for r, _ in rb), max(r for r, _ in rf)
        print("pillarbox (uid model, STARTTLS offered): %8.0f msg/s  runs %s"
              % (b, " ".join("%.0f" % r for r, _ in rb)))
        print("Postfix (same machine, same run):        %8.0f msg/s  runs %s"
              % (f, " ".join("%.0f" % r for r, _ in rf)))
        print("ratio pillarbox / Postfix (rate):        %8.2f  (target >= 1.0)" % (b / f))
        if rb[0][1] is not None and rf[0][1] is not None:
            cb, cf = min(c for _, c in rb), min(c for _, c in rf)
            print("CPU per message (whole tree, cgroup):    pillarbox %.1f ms, Postfix %.1f ms; "
                  "Postfix/pillarbox %.2f" % (cb, cf, cf / cb))
    finally:
        if pf:
            postfix_stop(pf[0])
        if pb:
            pillarbox_stop(pb[0], pb[1])
        time.sleep(1)
        cgb.remove()
        cgf.remove()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
