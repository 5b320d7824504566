"""The memory of a waiting session (lib/pagedrop, lib/timedio's rest): once its client has been
quiet for a moment, imap-maildir and pop3-maildir keep almost none of their program text
mapped (and give back spent buffers), and the next command is answered as before."""
import os
import socket
import subprocess

from conftest import base_env, prog, stop_procs, wait_for

MESSAGES = 30


def maildir(path):
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(path, sub))
    for i in range(MESSAGES):
        data = ("From: a%d@example.org\nTo: u@example.test\nSubject: m%d\n\nbody %d\n"
                % (i, i, i)).encode()
        name = "%d.M%dP1Q1.host,S=%d:2,S" % (1700000000 + i, i, len(data))
        with open(os.path.join(path, "cur", name), "wb") as f:
            f.write(data)
    return path


def text_rss(pid, exe):
    """kB of the program's own executable mapping resident in the process."""
    rss, inside = 0, False
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
                inside = len(head) >= 6 and head[5] == exe and "x" in head[1]
            elif inside and head[0] == "Rss:":
                rss += int(head[1])
    return rss


def until(sock, end):
    buf = b""
    while not buf.endswith(end):
        d = sock.recv(65536)
        assert d, buf
        buf += d
    return buf


def tagged(sock, tag):
    """An IMAP command's replies through its tagged line."""
    buf = b""
    while not (buf.startswith(tag + b" ") or (b"\r\n" + tag + b" ") in buf) \
            or not buf.endswith(b"\r\n"):
        d = sock.recv(65536)
        assert d, buf
        buf += d
    return buf


def session(tmp_path, name):
    home = maildir(str(tmp_path / "Maildir"))
    a, b = socket.socketpair()
    a.settimeout(20)
    p = subprocess.Popen([prog(name)], stdin=b, stdout=b, env=base_env(HOME=home, USER="u"))
    b.close()
    return a, p


def rests(p, exe):
    """Waits until the resting session maps at most a few pages of its text."""
    return wait_for(lambda: text_rss(p.pid, exe) <= 24, timeout=10,
                    what="the waiting session to drop its text (%d kB mapped)"
                    % text_rss(p.pid, exe))


def test_imap_session_drops_its_text_while_waiting(tmp_path):
    exe = os.path.realpath(prog("imap-maildir"))
    a, p = session(tmp_path, "imap-maildir")
    try:
        assert b"PREAUTH" in until(a, b"\r\n")
        a.sendall(b"a SELECT INBOX\r\n")
        out = tagged(a, b"a")
        assert b"* %d EXISTS" % MESSAGES in out and b"\r\na OK" in out
        rests(p, exe)
        a.sendall(b"b FETCH 1:* (UID FLAGS)\r\nc SEARCH SUBJECT m29\r\n")
        out = tagged(a, b"c")
        assert out.count(b" FETCH (") == MESSAGES
        assert b"* SEARCH 30\r\n" in out
        assert text_rss(p.pid, exe) > 24  # the command ran on text mapped again
        rests(p, exe)
        a.sendall(b"z LOGOUT\r\n")
        assert b"* BYE" in until(a, b"\r\n")
        assert p.wait(timeout=10) == 0
    finally:
        a.close()
        stop_procs([p])


def test_pop3_session_drops_its_text_while_waiting(tmp_path):
    exe = os.path.realpath(prog("pop3-maildir"))
    a, p = session(tmp_path, "pop3-maildir")
    try:
        assert until(a, b"\r\n") == b"+OK %d messages\r\n" % MESSAGES
        a.sendall(b"UIDL\r\n")
        assert until(a, b"\r\n.\r\n").count(b"\r\n") == MESSAGES + 2
        rests(p, exe)
        a.sendall(b"RETR 30\r\n")
        assert b"Subject: m29\r\n\r\nbody 29\r\n.\r\n" in until(a, b"\r\n.\r\n")
        rests(p, exe)
        a.sendall(b"QUIT\r\n")
        assert until(a, b"\r\n").startswith(b"+OK")
        assert p.wait(timeout=10) == 0
    finally:
        a.close()
        stop_procs([p])


def heap_rss(pid):
    rss, inside = 0, False
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and ":" not in head[0]:
                inside = head[-1] == "[heap]"
            elif inside and head[0] == "Rss:":
                rss += int(head[1])
    return rss


def pop3_cmd(a, line, multi=False):
    a.sendall(line)
    return until(a, b"\r\n.\r\n" if multi else b"\r\n")


def test_pop3_names_from_the_size_cache(tmp_path):
    """pop3-maildir reads the names of the messages its size cache lists from the mapped cache
    file, not from the heap; UIDL, RETR, a message renamed meanwhile (another program set a
    flag), DELE and the renames at QUIT work on them as on names in memory."""
    home = str(tmp_path / "Maildir")
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(home, sub))
    host = "a-long-host-name-of-a-delivering-machine.example.test"
    names = []
    for i in range(1500):
        data = ("Subject: n%d\n\nbody %d\n" % (i, i)).encode()
        uniq = "%d.M%dP%dQ1.%s,S=%d" % (1700000000 + i, i, 4000 + i, host, len(data))
        sub, name = ("new", uniq) if i % 5 == 0 else \
            ("cur", uniq + (":2,S", ":2,", ":2,FS", ":2,Sa")[i % 4])
        with open(os.path.join(home, sub, name), "wb") as f:
            f.write(data)
        names.append((sub, name))
    uidls = []
    for round in range(2):
        a, b = socket.socketpair()
        a.settimeout(20)
        p = subprocess.Popen([prog("pop3-maildir")], stdin=b, stdout=b,
                             env=base_env(HOME=home, USER="u"))
        b.close()
        try:
            assert until(a, b"\r\n") == b"+OK 1500 messages\r\n"
            assert pop3_cmd(a, b"STAT\r\n").startswith(b"+OK 1500 ")
            uidls.append(pop3_cmd(a, b"UIDL\r\n", True))
            if round == 0:
                assert pop3_cmd(a, b"QUIT\r\n").startswith(b"+OK")
                assert p.wait(timeout=10) == 0
                continue
            # 1,500 names of ~95 octets are 140 kB: the resting session's heap holds none
            wait_for(lambda: heap_rss(p.pid) < 100, timeout=10,
                     what="a heap without the names (%d kB)" % heap_rss(p.pid))
            sub, name = names[6]  # cur, ":2,FS" -> renamed by someone else to ":2,FRS"
            os.rename(os.path.join(home, sub, name),
                      os.path.join(home, sub, name.replace(":2,FS", ":2,FRS")))
            assert b"Subject: n6\r\n\r\nbody 6\r\n.\r\n" in pop3_cmd(a, b"RETR 7\r\n", True)
            assert b"body 1499\r\n" in pop3_cmd(a, b"RETR 1500\r\n", True)
            assert pop3_cmd(a, b"DELE 4\r\n").startswith(b"+OK")
            assert pop3_cmd(a, b"QUIT\r\n").startswith(b"+OK")
            assert p.wait(timeout=10) == 0
        finally:
            a.close()
            stop_procs([p])
    assert uidls[0] == uidls[1] and uidls[0].count(b"\r\n") == 1502
    cur = set(os.listdir(os.path.join(home, "cur")))
    uniq = [n.split(":")[0] for _, n in names]
    assert names[3][1] not in cur and not any(c.startswith(uniq[3] + ":") for c in cur)
    assert uniq[6] + ":2,FRS" in cur  # renamed meanwhile, retrieved: found, already seen
    assert names[1499][1].endswith(":2,Sa") and names[1499][1] in cur  # seen, keyword kept
    assert len(cur) + len(os.listdir(os.path.join(home, "new"))) == 1499
