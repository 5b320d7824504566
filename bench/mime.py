"""bench/mime.py: lib/mime's parse and BODYSTRUCTURE rate on a deterministic 10,000-message
corpus (1-50 KB: plain text, alternative text+HTML, mixed with a base64 attachment, a
forwarded message/rfc822 with its own alternative, RFC 2231 and encoded-word headers).

Measured in the same run, on the same messages held in memory (bench/mime-bench.c):
  scan        counting LFs with memchr: the floor, every byte touched once (the baseline);
  parse       mime_parse alone;
  bodystruct  mime_parse + BODYSTRUCTURE (what FETCH 1:* BODYSTRUCTURE does per message);
  fetch       mime_parse + ENVELOPE + BODYSTRUCTURE + RFC822.SIZE;
  files       reading each file (page cache) + mime_parse + BODYSTRUCTURE.
and, when Dovecot can be started here, Dovecot's own BODYSTRUCTURE of the same Maildir through
`doveadm fetch` with its index in memory (so it parses every message too), as a reference.
Prints messages/s, MB/s and the ratio to the scan. Run: /usr/bin/python3 bench/mime.py
"""
import base64
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
N = int(os.environ.get("BENCH_MIME_MESSAGES", "10000"))
ROUNDS = int(os.environ.get("BENCH_MIME_ROUNDS", "5"))

WORDS = ("the of and to in is that for it as was with be by on not this are or from at which "
         "have an they you were there been one all we their has would when if so no will more "
         "mail server queue message delivery maildir protocol session client Grüße café").split()


def text(rng, size):
    out, n = [], 0
    while n < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 13)))
        out.append(line)
        n += len(line) + 1
    return "\n".join(out) + "\n"


def b64(rng, size):
    b = base64.b64encode(rng.randbytes(size * 3 // 4)).decode()
    return "\n".join(b[i:i + 76] for i in range(0, len(b), 76)) + "\n"


def message(rng, i):
    size = rng.randint(1024, 50 * 1024)
    hdr = ("Return-Path: <s%d@example.org>\nReceived: from mx.example.org (mx.example.org "
           "[192.0.2.%d])\n\tby mx.example.test with ESMTPS; Tue, 14 Nov 2023 22:13:20 +0000\n"
           "From: =?UTF-8?Q?J=C3=B6rg_Sender_%d?= <s%d@example.org>\n"
           "To: Bench <bench@example.test>,"
           " \"Other, Person\" <o@example.net>\nSubject: =?utf-8?b?R3LDvMOfZQ==?= message %d\n"
           "Date: Tue, 14 Nov 2023 22:13:20 +0000\nMessage-ID: <%d@example.org>\n"
           "MIME-Version: 1.0\n"
           % (i % 50, i % 250 + 1, i % 50, i % 50, i, i))
    kind = i % 4
    room = max(300, size - len(hdr))
    if kind == 0:
        return hdr + "Content-Type: text/plain; charset=utf-8; format=flowed\n\n" + text(rng, room)
    if kind == 1:
        return (hdr + 'Content-Type: multipart/alternative; boundary="b%d"\n\n--b%d\n'
                "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n%s\n"
                "--b%d\nContent-Type: text/html; charset=utf-8\n\n<html><body><p>%s</p></body>"
                "</html>\n--b%d--\n" % (i, i, text(rng, room // 2), i,
                                         text(rng, room // 2).replace("\n", "<br>\n"), i))
    if kind == 2:
        return (hdr + 'Content-Type: multipart/mixed; boundary="m%d"\n\nThis is a multi-part '
                "message in MIME format.\n--m%d\nContent-Type: text/plain; charset=utf-8\n\n%s\n"
                "--m%d\nContent-Type: application/pdf; name=\"doc%d.pdf\"\nContent-Disposition: "
                "attachment;\n filename*0*=utf-8''%%E2%%82%%AC%%20doc;\n filename*1=\"%d.pdf\"\n"
                "Content-Transfer-Encoding: base64\n\n%s--m%d--\n"
                % (i, i, text(rng, 400), i, i, i, b64(rng, max(300, room - 700)), i))
    return (hdr + 'Content-Type: multipart/mixed; boundary="f%d"\n\n--f%d\nContent-Type: '
            "text/plain\n\nForwarded message:\n--f%d\nContent-Type: message/rfc822\n\n"
            "From: Original <orig%d@example.net>\nTo: s@example.org\nSubject: the original\n"
            "Date: Mon, 13 Nov 2023 10:00:00 +0100\nMIME-Version: 1.0\nContent-Type: "
            "multipart/alternative; boundary=\"i%d\"\n\n--i%d\nContent-Type: text/plain\n\n%s\n"
            "--i%d\nContent-Type: text/html\n\n<p>%s</p>\n--i%d--\n\n--f%d--\n"
            % (i, i, i, i, i, i, text(rng, room // 2), i, text(rng, room // 2), i, i))


def build(tmp):
    exe = os.path.join(tmp, "mime-bench")
    subprocess.run(["cc", "-O2", "-std=c99", "-D_POSIX_C_SOURCE=200809L",
                    "-D_XOPEN_SOURCE=700", "-I" + os.path.join(ROOT, "lib"), "-o", exe,
                    os.path.join(HERE, "mime-bench.c"), os.path.join(ROOT, "build",
                                                                     "libpillarbox.a"),
                    "-l:libskarnet.a"], check=True, timeout=120)
    return exe


def dovecot_rate(md):
    """Seconds for Dovecot to produce BODYSTRUCTURE of every message of md (doveadm fetch,
    index in memory), or None when Dovecot cannot run here."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    try:
        import dovecot_helpers
    except Exception:
        return None
    if dovecot_helpers.usable():
        return None
    d = dovecot_helpers.Dovecot(extra="mail_location = maildir:~/Maildir:INDEX=MEMORY\n")
    try:
        home = os.path.join(d.dir, "home", d.user)
        os.makedirs(home)
        shutil.copytree(md, os.path.join(home, "Maildir"))
        subprocess.run(["chown", "-R", "nobody:nogroup", os.path.join(d.dir, "home")], check=True)
        d.start()  # doveadm asks the running auth service for the user
        best = None
        for _ in range(3):
            t0 = time.monotonic()
            r = subprocess.run(["doveadm", "-c", d.conf, "fetch", "-u", d.user,
                                "imap.bodystructure", "mailbox", "INBOX", "all"],
                               capture_output=True, timeout=600)
            t = time.monotonic() - t0
            if r.returncode != 0:
                sys.stderr.write(r.stderr.decode(errors="replace")[-500:])
                return None
            best = t if best is None or t < best else best
        return best
    finally:
        d.stop()


def main():
    tmp = tempfile.mkdtemp(prefix="pb-mime-bench-")
    try:
        exe = build(tmp)
        md = os.path.join(tmp, "Maildir")
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(md, sub))
        rng = random.Random(20261204)
        for i in range(N):
            with open(os.path.join(md, "cur", "%d.M%dP1.bench:2,S" % (1700000000 + i, i)),
                      "wb") as f:
                f.write(message(rng, i).encode())
        out = subprocess.run([exe, os.path.join(md, "cur"), str(ROUNDS)], check=True,
                             capture_output=True, timeout=600).stdout.decode().split("\n")
        res = {}
        for line in out:
            if line:
                name, secs, n, total = line.split()
                res[name] = (float(secs), int(n), int(total))
        scan = res["scan"][0]
        print("mime: %d messages, %.1f MB, best of %d rounds (in memory)" % (
            res["scan"][1], res["scan"][2] / 1e6, ROUNDS))
        for name in ("scan", "parse", "bodystruct", "fetch", "files"):
            secs, n, total = res[name]
            print("  %-10s %8.3f s  %9.0f msg/s  %7.0f MB/s  %5.1fx the scan" % (
                name, secs, n / secs, total / secs / 1e6, secs / scan))
        dv = dovecot_rate(md)
        if dv is None:
            print("  dovecot: not measured (Dovecot cannot be started here)")
        else:
            n = res["bodystruct"][1]
            print("  dovecot   %8.3f s  %9.0f msg/s  (doveadm fetch bodystructure, index in "
                  "memory, process start and Maildir listing included)" % (dv, n / dv))
            print("  ratio pillarbox files / dovecot time: %.3f (files: read from the page cache "
                  "+ parse + BODYSTRUCTURE, no process start)" % (res["files"][0] / dv))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
