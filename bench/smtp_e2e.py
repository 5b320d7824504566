"""End to end alone, against the 20-writer ceiling measured between the runs.

The end-to-end phase of bench/smtp_side.py without the accept runs and without Postfix (which
smtp_side measures beside it): pillarbox made by `mail-instance create` as root, its smtpd,
tls-engine, inject and queue services under s6-svscan, 20 reused connections (smtp-source),
2 KB messages to one local recipient, from the first byte until the last message is in the
Maildir. The 20-writer durable-commit ceiling (bench/_benchlib.Ceiling: a directory of its
own, made before the instance, that the runs never touch) is measured before the first run
and after each one. Prints each run (rate, CPU a message from the tree's cgroup, the ceilings
around it) and the best rate against the highest ceiling seen (the conservative ratio) and
against the median ceiling.

Needs root. Environment: BENCH_E2E_N (messages per run, default 2000), BENCH_E2E_RUNS
(default 3).
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import smtp_model as m  # noqa: E402
import smtp_side as side  # noqa: E402
from _benchlib import Ceiling, remove_tree, settle  # noqa: E402

N = int(os.environ.get("BENCH_E2E_N", "2000"))
RUNS = int(os.environ.get("BENCH_E2E_RUNS", "3"))


def load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    if os.geteuid() != 0:
        print("smtp_e2e: needs root; skipped")
        return 0
    settle("smtp_e2e")
    ceil = Ceiling()  # first: before any instance
    base = tempfile.mkdtemp(prefix="bench-e2e-", dir="/var/tmp")
    os.chmod(base, 0o755)
    pb = None
    cg = m.CpuGroup("e2e-pb")
    try:
        print("end to end, %d messages of 2 KB, 20 reused connections, %d runs, %s, load %s, "
              "ceiling dir %s" % (N, RUNS, time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                                  load(), "+T" if ceil.top else "without +T"))
        pb = m.pillarbox_start(base, cg)
        side.pillarbox_queue_up(pb[1])
        new = os.path.join(pb[1], "mail", "example.test", "bench", "new")
        side.end_to_end(pb[2], 200, new)  # warm-up
        rates = []
        ceil.measure()
        for _ in range(RUNS):
            c0 = cg.usage_ms()
            r = side.end_to_end(pb[2], N, new)
            c1 = cg.usage_ms()
            rates.append(r)
            before = ceil.seen[-1]
            after = ceil.measure()
            print("run: %6.0f msg/s  CPU/msg %s ms  ceiling before %6.0f  after %6.0f  load %s"
                  % (r, "%.2f" % ((c1 - c0) / N) if c0 is not None else "-", before, after,
                     load()))
        b = max(rates)
        print("end to end %.0f msg/s (runs %s); ceiling highest %.0f, median %.0f commits/s "
              "(%s); / highest %.2f, / median %.2f (target >= 0.3)"
              % (b, " ".join("%.0f" % x for x in rates), ceil.highest(), ceil.median(),
                 " ".join("%.0f" % x for x in ceil.seen), b / ceil.highest(), b / ceil.median()))
        print("load after: %s" % load())
    finally:
        if pb:
            m.pillarbox_stop(pb[0], pb[1])
        time.sleep(1)
        cg.remove()
        remove_tree(base)
        ceil.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
