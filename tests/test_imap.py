"""imap-maildir, the IMAP session after login, driven through pipes: the program runs on a
Maildir made here (HOME), greets with PREAUTH as it does without $IMAP_TAG (a tunnel), and each
case reads like a session: the bytes sent, the replies expected, what is on disk afterwards.
Also: two sessions on one folder, IDLE pushing a delivery, the mailbox record across crashes
(SIGKILL during APPEND, MOVE and EXPUNGE), and migration from Dovecot's and Courier's UID files.
The login front (imap-serve) and real clients are in test_imap_serve.py / test_imap_clients.py.
"""
import os
import re
import select
import signal
import subprocess
import time

import pytest

from access_helpers import end
from conftest import base_env, prog, wait_for

MSG1 = (b"From: Alice <alice@example.org>\nTo: joe@example.test\nSubject: hello there\n"
        b"Date: Sat, 24 Mar 2007 23:00:00 +0200\nMessage-ID: <1@example.org>\n\nbody one\n")
MSG2 = b"From: bob@example.org\nSubject: second\n\nbody two\nline\n"


class Box:
    def __init__(self, tmp_path):
        self.dir = str(tmp_path / "Maildir")
        for sub in ("new", "cur", "tmp"):
            os.makedirs(os.path.join(self.dir, sub))
        self.seq = 0

    def add(self, data, sub="new", folder=None, info=""):
        self.seq += 1
        d = self.dir if not folder else os.path.join(self.dir, "." + folder)
        name = "%d.M%dP1.host%s" % (1700000000 + self.seq, self.seq, info)
        with open(os.path.join(d, "tmp", "x"), "wb") as f:
            f.write(data)
        os.rename(os.path.join(d, "tmp", "x"), os.path.join(d, sub, name))
        return name

    def files(self, folder=None):
        d = self.dir if not folder else os.path.join(self.dir, "." + folder)
        return sorted(os.listdir(os.path.join(d, "new")) + os.listdir(os.path.join(d, "cur")))

    def record(self, folder=None):
        d = self.dir if not folder else os.path.join(self.dir, "." + folder)
        with open(os.path.join(d, "pillarbox-uidlist")) as f:
            lines = f.read().splitlines()
        # S<sec>.<nsec>,<sec>.<nsec>: the stamps of new/ and cur/ (when the record has them)
        head = dict((w[0], w[1:] if w[0] == "S" else int(w[1:])) for w in lines[0].split()[1:])
        uids = {}
        for line in lines[1:]:
            if line.startswith("x "):  # an expunge remembered for QRESYNC
                continue
            uid, modseq, wsize, where, name = line.split(" ", 4)
            uids[name.split(":")[0]] = int(uid)
        return head, uids

    def session(self, *args, env=None):
        return Session(self.dir, args, env)


class Session:
    def __init__(self, home, args=(), env=None):
        e = base_env(HOME=home)
        e.pop("IMAP_TAG", None)
        e.update(env or {})
        self.p = subprocess.Popen([prog("imap-maildir")] + list(args), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
        self.buf = b""
        self.greeting = self.line()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def line(self, timeout=10):
        deadline = time.monotonic() + timeout
        while b"\r\n" not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0, "no reply line; got %r" % self.buf
            r, _, _ = select.select([self.p.stdout], [], [], left)
            if r:
                b = os.read(self.p.stdout.fileno(), 65536)
                assert b, "connection closed; got %r" % self.buf
                self.buf += b
        line, self.buf = self.buf.split(b"\r\n", 1)
        m = re.search(rb"\{(\d+)\}$", line)
        if m:  # a literal: take its octets and the rest of the line
            n = int(m.group(1))
            while len(self.buf) < n:
                r, _, _ = select.select([self.p.stdout], [], [], 10)
                assert r, "literal cut short"
                self.buf += os.read(self.p.stdout.fileno(), 65536)
            lit, self.buf = self.buf[:n], self.buf[n:]
            rest = self.line(timeout)
            return line + b"\r\n" + lit + rest
        return line

    def cmd(self, tag, text):
        """Sends 'tag text' and returns (untagged lines, tagged line)."""
        self.send("%s %s\r\n" % (tag, text) if isinstance(text, str) else
                  tag.encode() + b" " + text + b"\r\n")
        return self.until(tag)

    def until(self, tag):
        untagged = []
        while True:
            line = self.line()
            if line.startswith(tag.encode() + b" "):
                return untagged, line
            untagged.append(line)

    def ok(self, tag, text):
        u, t = self.cmd(tag, text)
        assert t.startswith(tag.encode() + b" OK"), (t, u)
        return u

    def close(self):
        end(self.p, close_outputs=True)


@pytest.fixture
def box(tmp_path):
    return Box(tmp_path)


@pytest.fixture
def sess(box):
    s = box.session()
    yield s
    s.close()


def test_preauth_greeting_and_first_login_folders(box, sess):
    assert sess.greeting.startswith(b"* PREAUTH [CAPABILITY IMAP4rev1 ")
    caps = sess.greeting.split(b"]")[0].split()
    for c in (b"IDLE", b"UIDPLUS", b"MOVE", b"SPECIAL-USE", b"LITERAL+", b"NAMESPACE"):
        assert c in caps
    u = sess.ok("a1", 'LIST "" "*"')
    assert b'* LIST (\\HasNoChildren) "." "INBOX"' in u
    for name, use in (("Sent", "Sent"), ("Drafts", "Drafts"), ("Trash", "Trash"),
                      ("Junk", "Junk"), ("Archive", "Archive")):
        assert ('* LIST (\\HasNoChildren \\%s) "." "%s"' % (use, name)).encode() in u
        assert os.path.isdir(os.path.join(box.dir, "." + name, "cur"))
    u = sess.ok("a2", 'LSUB "" "*"')
    assert len(u) == 5
    u = sess.ok("a3", 'LIST "" ""')
    assert u == [b'* LIST (\\Noselect) "." ""']
    assert sess.ok("a4", "NAMESPACE") == [b'* NAMESPACE (("" ".")) NIL NIL']
    sess.send("a5 LOGOUT\r\n")
    assert sess.until("a5") == ([b"* BYE Logging out"], b"a5 OK Logout completed.")


def test_commands_in_the_wrong_state(sess):
    for tag, text in (("b1", "FETCH 1 FLAGS"), ("b2", "STORE 1 +FLAGS (\\Seen)"),
                      ("b3", "SEARCH ALL"), ("b4", "EXPUNGE"), ("b5", "CLOSE"),
                      ("b6", "UID FETCH 1 FLAGS"), ("b7", "CHECK"), ("b8", "COPY 1 Sent"),
                      ("b9", "UNSELECT"), ("b10", "MOVE 1 Sent")):
        assert sess.cmd(tag, text) == ([], tag.encode() + b" BAD No mailbox selected.")
    assert sess.cmd("c1", 'LOGIN joe secret')[1] == b"c1 BAD Already logged in."
    assert sess.cmd("c2", "AUTHENTICATE PLAIN")[1] == b"c2 BAD Already logged in."
    assert sess.cmd("c3", "STARTTLS")[1].startswith(b"c3 BAD")
    assert sess.cmd("c4", "FROBNICATE")[1].startswith(b"c4 BAD")
    sess.send("* NOOP\r\n")
    assert sess.line().startswith(b"* BAD")
    sess.send("\r\n")
    assert sess.line().startswith(b"* BAD")
    assert sess.cmd("c5", "NOOP") == ([], b"c5 OK NOOP completed.")


def test_select_fetch_store_search_expunge(box, sess):
    box.add(MSG1)
    box.add(MSG2)
    u, t = sess.cmd("s1", "SELECT INBOX")
    assert t == b"s1 OK [READ-WRITE] Select completed."
    assert b"* 2 EXISTS" in u and b"* 2 RECENT" in u and b"* OK [UNSEEN 1] First unseen." in u
    uv = int(re.search(rb"UIDVALIDITY (\d+)", b" ".join(u)).group(1))
    assert b"* OK [UIDNEXT 3] Predicted next UID" in u
    # new/ moved to cur/ by the read-write session
    assert all(":2," in n for n in os.listdir(os.path.join(box.dir, "cur")))
    assert os.listdir(os.path.join(box.dir, "new")) == []
    u = sess.ok("s2", "FETCH 1:* (UID FLAGS RFC822.SIZE)")
    assert u == [b"* 1 FETCH (UID 1 FLAGS (\\Recent) RFC822.SIZE %d)" % len(MSG1.replace(b"\n", b"\r\n")),
                 b"* 2 FETCH (UID 2 FLAGS (\\Recent) RFC822.SIZE %d)" % len(MSG2.replace(b"\n", b"\r\n"))]
    u = sess.ok("s3", "FETCH 1 ENVELOPE")
    assert u == [b'* 1 FETCH (ENVELOPE ("Sat, 24 Mar 2007 23:00:00 +0200" "hello there" '
                 b'(("Alice" NIL "alice" "example.org")) (("Alice" NIL "alice" "example.org")) '
                 b'(("Alice" NIL "alice" "example.org")) ((NIL NIL "joe" "example.test")) NIL NIL '
                 b'NIL "<1@example.org>"))']
    u = sess.ok("s4", "FETCH 2 BODY.PEEK[TEXT]")
    assert u == [b"* 2 FETCH (BODY[TEXT] {16}\r\nbody two\r\nline\r\n)"]
    u = sess.ok("s5", "FETCH 2 BODY[HEADER.FIELDS (Subject)]")
    assert u == [b"* 2 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {19}\r\nSubject: second\r\n\r\n "
                 b"FLAGS (\\Seen \\Recent))"]
    u = sess.ok("s6", "FETCH 2 BODY.PEEK[]<6.4>")
    assert u == [b"* 2 FETCH (BODY[]<6> {4}\r\nbob@)"]
    assert sess.ok("s7", "SEARCH UNSEEN") == [b"* SEARCH 1"]
    assert sess.ok("s8", "SEARCH SUBJECT HELLO") == [b"* SEARCH 1"]
    assert sess.ok("s9", 'SEARCH OR FROM bob BODY "one"') == [b"* SEARCH 1 2"]
    assert sess.ok("s10", "UID SEARCH NOT SEEN") == [b"* SEARCH 1"]
    assert sess.ok("s11", "SEARCH SENTON 24-Mar-2007") == [b"* SEARCH 1"]
    assert sess.ok("s12", "SEARCH LARGER 60 SMALLER 1000") == [b"* SEARCH 1"]
    assert sess.ok("s13", "SEARCH RETURN (MIN MAX COUNT) ALL") == \
        [b'* ESEARCH (TAG "s13") MIN 1 MAX 2 COUNT 2']
    assert sess.cmd("s14", "SEARCH CHARSET KOI8-R ALL")[1] == \
        b"s14 NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset"
    assert sess.cmd("s15", "SEARCH FOO")[1].startswith(b"s15 BAD")
    u = sess.ok("s16", "STORE 1 +FLAGS (\\Deleted $Label1)")
    assert u == [b"* 1 FETCH (FLAGS (\\Deleted $Label1 \\Recent))"]
    assert sess.ok("s17", "STORE 2 -FLAGS.SILENT (\\Seen)") == []
    u = sess.ok("s18", "UID STORE 2 FLAGS (\\Flagged)")
    assert u == [b"* 2 FETCH (UID 2 FLAGS (\\Flagged \\Recent))"]
    cur = sorted(os.listdir(os.path.join(box.dir, "cur")))
    assert cur[0].endswith(":2,Ta") and cur[1].endswith(":2,F")
    with open(os.path.join(box.dir, "dovecot-keywords")) as f:
        assert f.read() == "0 $Label1\n"
    assert sess.ok("s19", "EXPUNGE") == [b"* 1 EXPUNGE"]
    assert sess.ok("s20", "FETCH 1 UID") == [b"* 1 FETCH (UID 2)"]
    assert len(os.listdir(os.path.join(box.dir, "cur"))) == 1
    head, uids = box.record()
    assert head["V"] == uv and head["N"] == 3 and list(uids.values()) == [2]
    assert sess.cmd("s21", "FETCH 2 FLAGS")[1].startswith(b"s21 BAD")
    assert sess.ok("s22", "CLOSE") == []


def test_uids_survive_sessions_and_new_mail(box):
    box.add(MSG1)
    s = box.session()
    s.ok("a", "SELECT INBOX")
    s.close()
    box.add(MSG2, sub="cur", info=":2,S")
    s = box.session()
    u = s.ok("b", "EXAMINE INBOX")
    assert b"* 2 EXISTS" in u and b"* 1 RECENT" in u  # the new one, not yet claimed
    assert s.ok("c", "UID FETCH 1:* FLAGS") == [b"* 1 FETCH (UID 1 FLAGS ())",
                                                b"* 2 FETCH (UID 2 FLAGS (\\Seen \\Recent))"]
    s.close()
    head, uids = box.record()
    assert sorted(uids.values()) == [1, 2] and head["N"] == 3


def test_append_copy_move_uidplus(box, sess):
    box.add(MSG1)
    sess.ok("a", "SELECT INBOX")
    # synchronising literal: the continuation comes first
    sess.send("b APPEND Drafts (\\Draft $Todo) \"05-Jan-2024 10:00:00 +0100\" {%d}\r\n" % len(MSG2))
    assert sess.line() == b"+ OK"
    sess.send(MSG2 + b"\r\n")
    u, t = sess.until("b")
    m = re.match(rb"b OK \[APPENDUID (\d+) 1\] Append completed.", t)
    assert m, t
    (name,) = box.files("Drafts")
    assert name.endswith(",S=%d:2,Da" % len(MSG2))
    st = os.stat(os.path.join(box.dir, ".Drafts", "cur", name))
    assert int(st.st_mtime) == 1704445200
    # non-synchronising (LITERAL+): no continuation
    sess.send(b"c APPEND INBOX {5+}\r\nhello d APPEND INBOX {3+}\r\nabc\r\n")
    u, t = sess.until("c")
    assert t.startswith(b"c BAD")
    sess.send(b"e APPEND INBOX {5+}\r\nhello\r\n")
    u, t = sess.until("e")
    assert re.match(rb"e OK \[APPENDUID \d+ 2\]", t), t
    assert b"* 2 EXISTS" in u
    u, t = sess.cmd("f", "COPY 1:2 Trash")
    assert re.match(rb"f OK \[COPYUID \d+ 1:2 1:2\] Copy completed.", t), t
    assert len(box.files("Trash")) == 2
    u, t = sess.cmd("g", "UID MOVE 1 Archive")
    assert re.match(rb"\* OK \[COPYUID \d+ 1 1\] Moved UIDs.", u[0]), u
    assert b"* 1 EXPUNGE" in u and t == b"g OK Move completed."
    assert len(box.files("Archive")) == 1 and len(box.files()) == 1
    assert sess.cmd("h", "COPY 1 Nowhere")[1] == b"h NO [TRYCREATE] Mailbox doesn't exist"
    assert sess.cmd("i", "APPEND Nowhere {1+}\r\nx")[1] == b"i NO [TRYCREATE] Mailbox doesn't exist"
    sess.ok("j", "STORE 1 +FLAGS (\\Deleted)")
    assert sess.ok("k", "UID EXPUNGE 1:1") == []
    assert sess.ok("l", "UID EXPUNGE 2") == [b"* 1 EXPUNGE"]
    assert box.files() == []


def test_literal_limits_and_bad_input(box):
    s = box.session(env={"IMAP_APPEND_MAX": "1000"})
    # an APPEND literal over the limit is refused before any octet is read
    s.send("a APPEND INBOX {1001}\r\n")
    assert s.line() == b"a NO [TOOBIG] Literal too big"
    assert s.cmd("b", "NOOP")[1] == b"b OK NOOP completed."
    # a non-synchronising one over the limit ends the session
    s.send("c APPEND INBOX {1001+}\r\n")
    assert s.line() == b"* BYE [TOOBIG] Literal too big"
    assert s.p.wait(timeout=10) == 0
    s.close()
    assert os.listdir(os.path.join(box.dir, "tmp")) == []
    s = box.session()
    s.send("d LIST {5-}\r\n")
    assert s.line() == b"d BAD Error in IMAP command: Invalid literal"
    s.send("e X " + "x" * 70000 + "\r\n")
    assert s.line() == b"e BAD Error in IMAP command: Too long argument."
    assert s.cmd("f", "LIST " + "(" * 20 + ")" * 20)[1] == \
        b"f BAD Error in IMAP command: Too deep nesting"
    s.ok("g", "SELECT INBOX")
    assert s.cmd("h", "FETCH " + ",".join(["1"] * 5000) + " UID")[1].startswith(b"h BAD")
    assert s.cmd("i", "FETCH 1 UID")[1].startswith(b"i BAD")  # no message 1
    assert s.cmd("j", "FETCH 0:4294967296 UID")[1].startswith(b"j BAD")
    assert s.cmd("k", "FETCH 1 (FLAGS")[1].startswith(b"k BAD")
    assert s.cmd("l", 'STATUS INBOX (BOGUS)')[1].startswith(b"l BAD")
    assert s.cmd("m", "NOOP")[1] == b"m OK NOOP completed."
    s.close()


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "a..b", "..", "../../etc",
                                  "&AC8-etc", "tmp/../x"])
def test_mailbox_names_never_escape(box, tmp_path, name):
    s = box.session()
    u, t = s.cmd("a", 'CREATE "%s"' % name)
    assert t.startswith(b"a NO") or t.startswith(b"a BAD"), t
    for cmd in ('SELECT "%s"', 'DELETE "%s"', 'RENAME INBOX "%s"', 'STATUS "%s" (MESSAGES)'):
        t = s.cmd("b", cmd % name)[1]
        assert t.startswith(b"b NO") or t.startswith(b"b BAD"), (cmd, t)
    # a NUL inside a literal name
    s.send(b"c CREATE {3+}\r\na\x00b\r\n")
    t = s.until("c")[1]
    assert t.startswith(b"c NO") or t.startswith(b"c BAD")
    s.close()
    outside = sorted(os.listdir(tmp_path))
    assert outside == ["Maildir"]
    assert sorted(n for n in os.listdir(box.dir) if n.startswith(".")) == \
        [".Archive", ".Drafts", ".Junk", ".Sent", ".Trash"]


def test_folders_create_rename_delete_utf7(box, sess):
    sess.ok("a", 'CREATE "Entw&APw-rfe"')
    sess.ok("b", "CREATE Projects.2026")
    assert os.path.isdir(os.path.join(box.dir, ".Entw&APw-rfe", "cur"))
    assert os.path.isdir(os.path.join(box.dir, ".Projects.2026", "cur"))
    u = sess.ok("c", 'LIST "" "%"')
    assert b'* LIST (\\NonExistent \\HasChildren) "." "Projects"' not in u
    assert any(b'"Projects"' in x and b"\\Noselect" in x for x in u), u
    assert sess.cmd("d", 'CREATE "Entw&APw-rfe"')[1] == b"d NO [ALREADYEXISTS] Mailbox already exists"
    sess.ok("e", "RENAME Projects.2026 Projects.Done")
    assert os.path.isdir(os.path.join(box.dir, ".Projects.Done"))
    sess.ok("f", "ENABLE UTF8=ACCEPT")
    u = sess.ok("g", 'LIST "" "Entw*"')
    assert u == [b'* LIST (\\HasNoChildren) "." {9}\r\nEntw\xc3\xbcrfe']
    sess.ok("h", b'SELECT {9+}\r\nEntw\xc3\xbcrfe')
    sess.ok("i", "DELETE Projects.Done")
    assert not os.path.exists(os.path.join(box.dir, ".Projects.Done"))
    assert sess.cmd("j", "DELETE INBOX")[1].startswith(b"j NO")
    sess.ok("k", "UNSUBSCRIBE Junk")
    with open(os.path.join(box.dir, "subscriptions")) as f:
        assert "Junk" not in f.read().split()
    assert sess.ok("l", "STATUS Sent (MESSAGES UNSEEN UIDNEXT)") == \
        [b'* STATUS "Sent" (MESSAGES 0 UNSEEN 0 UIDNEXT 1)']


def test_two_sessions_see_each_other(box):
    for _ in range(3):
        box.add(MSG1)
    a, b = box.session(), box.session()
    try:
        a.ok("a1", "SELECT INBOX")
        b.ok("b1", "SELECT INBOX")
        a.ok("a2", "STORE 2 +FLAGS.SILENT (\\Flagged)")
        assert b.ok("b2", "NOOP") == [b"* 2 FETCH (FLAGS (\\Flagged))"]
        a.ok("a3", "STORE 1 +FLAGS.SILENT (\\Deleted)")
        a.ok("a4", "EXPUNGE")
        # no EXPUNGE during FETCH: the number stays; at NOOP it comes
        u, t = b.cmd("b3", "FETCH 1:3 UID")
        assert (u, t) == ([b"* 2 FETCH (UID 2)", b"* 3 FETCH (UID 3)"],
                          b"b3 NO [EXPUNGEISSUED] Some of the requested messages no longer exist")
        u = b.ok("b4", "NOOP")
        assert b"* 1 EXPUNGE" in u
        assert b.ok("b5", "FETCH 1:* UID") == [b"* 1 FETCH (UID 2)", b"* 2 FETCH (UID 3)"]
        # under IDLE: a move by the other session and a delivery are pushed
        b.send("b6 IDLE\r\n")
        assert b.line() == b"+ idling"
        a.ok("a5", "MOVE 1 Trash")
        assert b.line(timeout=5) == b"* 1 EXPUNGE"
        t0 = time.monotonic()
        box.add(MSG2)
        lines = [b.line(timeout=5)]
        assert time.monotonic() - t0 < 1.0, "delivery not pushed within 1 s"
        assert lines[0] == b"* 2 EXISTS"
        b.send("DONE\r\n")
        u, t = b.until("b6")
        assert t == b"b6 OK Idle completed."
    finally:
        a.close()
        b.close()


def test_idle_polls_when_no_event_comes(box):
    """The polling fallback (-P: no inotify, as on NFS): the folder is looked at every -p
    seconds, so a delivery still shows up under IDLE."""
    s = box.session("-P", "-p", "1")
    try:
        s.ok("a", "SELECT INBOX")
        s.send("b IDLE\r\n")
        assert s.line() == b"+ idling"
        t0 = time.monotonic()
        box.add(MSG1)
        assert s.line(timeout=5) == b"* 1 EXISTS"
        assert time.monotonic() - t0 < 3
        s.send("DONE\r\n")
        assert s.until("b")[1] == b"b OK Idle completed."
    finally:
        s.close()


def test_autologout(box):
    s = box.session("-t", "1")
    assert s.line(timeout=10) == b"* BYE Disconnected for inactivity."
    assert s.p.wait(timeout=10) == 0
    s.close()


def test_broken_record_gets_new_uidvalidity_never_reused_uids(box):
    box.add(MSG1)
    s = box.session()
    u = s.ok("a", "SELECT INBOX")
    uv1 = int(re.search(rb"UIDVALIDITY (\d+)", b" ".join(u)).group(1))
    s.close()
    with open(os.path.join(box.dir, "pillarbox-uidlist"), "r+b") as f:
        data = f.read()
        f.seek(0)
        f.write(data.replace(b" 1 1 ", b" x 1 ", 1)[:-3])  # a damaged line
        f.truncate()
    s = box.session()
    u = s.ok("b", "SELECT INBOX")
    uv2 = int(re.search(rb"UIDVALIDITY (\d+)", b" ".join(u)).group(1))
    assert uv2 > uv1
    s.close()
    # the record gone altogether: again a new UIDVALIDITY
    os.unlink(os.path.join(box.dir, "pillarbox-uidlist"))
    s = box.session()
    u = s.ok("c", "SELECT INBOX")
    uv3 = int(re.search(rb"UIDVALIDITY (\d+)", b" ".join(u)).group(1))
    assert uv3 != uv2
    s.close()


def test_dovecot_uidlist_and_keywords_are_taken_over(box):
    n1 = box.add(MSG1, sub="cur", info=":2,Sa")
    n2 = box.add(MSG2, sub="cur", info=":2,")
    with open(os.path.join(box.dir, "dovecot-uidlist"), "w") as f:
        f.write("3 V1234567 N43 G0123456789abcdef0123456789abcdef\n"
                "17 W%d :%s\n41 :%s\n" % (len(MSG1), n1.split(":")[0], n2.split(":")[0]))
    with open(os.path.join(box.dir, "dovecot-keywords"), "w") as f:
        f.write("0 $Important\n")
    s = box.session()
    u = s.ok("a", "EXAMINE INBOX")
    assert b"* OK [UIDVALIDITY 1234567] UIDs valid" in u
    assert b"* OK [UIDNEXT 43] Predicted next UID" in u
    assert s.ok("b", "UID FETCH 1:* FLAGS") == [b"* 1 FETCH (UID 17 FLAGS (\\Seen $Important))",
                                               b"* 2 FETCH (UID 41 FLAGS ())"]
    s.close()
    # a message Dovecot never saw gets a UID above N
    box.add(MSG2)
    s = box.session()
    s.ok("c", "SELECT INBOX")
    assert s.ok("d", "UID SEARCH ALL") == [b"* SEARCH 17 41 43"]
    s.close()


def test_courier_uid_file_is_taken_over(box):
    n1 = box.add(MSG1, sub="cur", info=":2,S")
    with open(os.path.join(box.dir, "courierimapuiddb"), "w") as f:
        f.write("1 999 8\n%s 7\n" % n1.split(":")[0])
    s = box.session()
    u = s.ok("a", "EXAMINE INBOX")
    assert b"* OK [UIDVALIDITY 999] UIDs valid" in u
    assert s.ok("b", "UID FETCH 1:* UID") == [b"* 1 FETCH (UID 7)"]
    s.close()


def test_crash_during_append_move_expunge_keeps_uids(box):
    """SIGKILL sessions in the middle of APPEND, MOVE and EXPUNGE, in a loop; afterwards no
    UID changed or was reused, no message lost or duplicated (by content)."""
    box.add(MSG1)
    body = b"Subject: crash\n\n" + b"x" * 20000 + b"\n"
    seen = {}  # (folder, uid) -> content id, for every UID ever reported
    expect = {"MSG1"}
    for i in range(12):
        s = box.session()
        s.ok("a", "SELECT INBOX")
        tag = "m%d" % i
        msg = b"X-Id: %d\n" % i + body
        op = i % 3
        if op == 0:
            s.send("%s APPEND INBOX {%d+}\r\n" % (tag, len(msg)))
            s.send(msg + b"\r\n")
            expect.add("id%d" % i)  # may or may not land; checked below
        elif op == 1:
            s.send("%s MOVE 1 Archive\r\n" % tag)
        else:
            s.send("%s STORE 1 +FLAGS.SILENT (\\Deleted)\r\n%s EXPUNGE\r\n" % (tag, tag))
        time.sleep(0.002 * (i % 5))  # vary the moment of the kill, not a synchronisation
        s.p.send_signal(signal.SIGKILL)
        s.close()
        # every folder's record must be consistent with what is on disk
        for folder in (None, "Archive"):
            v = box.session()
            v.ok("v", "EXAMINE %s" % (folder or "INBOX"))
            u = v.ok("w", "UID FETCH 1:* BODY.PEEK[HEADER.FIELDS (X-Id)]")
            v.close()
            for line in u:
                uid = int(re.search(rb"UID (\d+)", line).group(1))
                m = re.search(rb"X-Id: (\d+)", line)
                cid = m.group(1) if m else b"MSG1"
                key = (folder, uid)
                assert seen.setdefault(key, cid) == cid, "UID %s changed its message" % (key,)
        # no content twice anywhere
        ids = []
        for folder in (None, "Archive"):
            for n in box.files(folder):
                d = box.dir if not folder else os.path.join(box.dir, "." + folder)
                sub = "cur" if os.path.exists(os.path.join(d, "cur", n)) else "new"
                with open(os.path.join(d, sub, n), "rb") as f:
                    head = f.read(30)
                m = re.match(rb"X-Id: (\d+)", head)
                ids.append(m.group(1) if m else b"MSG1")
        assert len(ids) == len(set(ids)), ids
    # UIDs only grow: for each folder, a UID seen is never given to another message
    for folder in (None, "Archive"):
        head, uids = box.record(folder)
        assert all(u < head["N"] for u in uids.values())


def steady_box(box, n, body=lambda i: MSG1):
    """n messages already in cur/, new/ and cur/ untouched for an hour: the first SELECT writes
    a stamped record that later sessions neither list nor rewrite."""
    for i in range(n):
        box.add(body(i), sub="cur", info=":2,")
    old = time.time() - 3600
    for sub in ("new", "cur"):
        os.utime(os.path.join(box.dir, sub), (old, old))


def journal_of(box):
    p = os.path.join(box.dir, "pillarbox-uidlist.log")
    return open(p, "rb").read() if os.path.exists(p) else None


def flags_modseqs(s, tag, extra=""):
    """{uid: (flags, modseq[, X-Id])} from UID FETCH 1:* (FLAGS MODSEQ ...)."""
    out = {}
    for line in s.ok(tag, "UID FETCH 1:* (FLAGS MODSEQ%s)" % extra):
        if b" FETCH (" not in line:  # the HIGHESTMODSEQ that CONDSTORE's first use sends
            continue
        uid = int(re.search(rb"UID (\d+)", line).group(1))
        flags = re.search(rb"FLAGS \(([^)]*)\)", line).group(1).split()
        v = (b" ".join(f for f in flags if f != b"\\Recent"),  # the session's own
             int(re.search(rb"MODSEQ \((\d+)\)", line).group(1)))
        m = re.search(rb"X-Id: (\d+)", line)
        out[uid] = v + (int(m.group(1)),) if m else v
    return out


def test_store_appends_to_the_journal_and_other_sessions_see_its_modseqs(box):
    """A STORE of a few messages appends a line per message to pillarbox-uidlist.log instead
    of rewriting the record; a session open meanwhile, and a new one, see the flags with the
    very modseqs the storing session gave (not fresh ones of their own: the second STORE
    touches a lower UID, so numbering the changes in UID order would differ)."""
    steady_box(box, 4)
    rec = os.path.join(box.dir, "pillarbox-uidlist")
    a, b = box.session(), box.session()
    try:
        a.ok("a1", "SELECT INBOX")
        b.ok("b1", "SELECT INBOX")
        record = open(rec, "rb").read()
        assert journal_of(box) is None
        a.ok("a2", "UID STORE 2 +FLAGS (\\Flagged)")
        a.ok("a3", "UID STORE 1 +FLAGS (\\Seen)")
        mine = flags_modseqs(a, "a4")
        assert mine[2][0] == b"\\Flagged" and mine[1][0] == b"\\Seen"
        assert mine[1][1] > mine[2][1] > max(mine[3][1], mine[4][1])
        assert open(rec, "rb").read() == record  # not rewritten
        j = journal_of(box)
        assert j.startswith(b"PBJ1 V") and j.count(b"\n") == 3 and j.endswith(b"\n"), j
        u = b.ok("b2", "NOOP")
        assert any(x.startswith(b"* 1 FETCH (") and b"\\Seen" in x for x in u), u
        assert flags_modseqs(b, "b3") == mine
    finally:
        a.close()
        b.close()
    c = box.session()
    u = c.ok("c1", "EXAMINE INBOX (CONDSTORE)")
    assert b"* OK [HIGHESTMODSEQ %d] Highest" % mine[1][1] in u, u
    assert flags_modseqs(c, "c2") == mine
    c.close()


def test_a_torn_journal_tail_is_ignored_then_cut_off(box):
    """A crash in the middle of an append leaves part of a line at the journal's end: readers
    stop before it (its modseq counts for nothing), and the next STORE cuts it off before
    appending."""
    steady_box(box, 4)
    s = box.session()
    s.ok("a1", "SELECT INBOX")
    s.ok("a2", "UID STORE 2 +FLAGS (\\Flagged)")
    s.ok("a3", "UID STORE 1 +FLAGS (\\Seen)")
    mine = flags_modseqs(s, "a4")
    s.close()
    valid = journal_of(box)
    top = max(m for _, m in mine.values())
    torn = b"3 %d 1700000003.M3P1.host:2,T" % (top + 100)  # no newline: torn
    with open(os.path.join(box.dir, "pillarbox-uidlist.log"), "ab") as f:
        f.write(torn)
    # cur/ stamped in the future: no session rewrites (folds) the record for its stamps here
    future = time.time() + 3600
    os.utime(os.path.join(box.dir, "cur"), (future, future))
    v = box.session()
    u = v.ok("v1", "SELECT INBOX (CONDSTORE)")
    assert b"* OK [HIGHESTMODSEQ %d] Highest" % top in u, u
    assert flags_modseqs(v, "v2") == mine
    v.ok("v3", "UID STORE 3 +FLAGS (\\Answered)")
    v.close()
    j = journal_of(box)
    assert j.startswith(valid) and j.endswith(b"\n") and j.count(b"\n") == 4, j
    # the torn text itself (its modseq alone can occur in the header's UIDVALIDITY)
    assert torn not in j and b" %d " % (top + 100) not in j, j
    w = box.session()
    w.ok("w1", "EXAMINE INBOX")
    got = flags_modseqs(w, "w2")
    w.close()
    assert got[3] == (b"\\Answered", top + 1)
    assert {k: got[k] for k in (1, 2, 4)} == {k: mine[k] for k in (1, 2, 4)}


def test_crash_during_store_keeps_uids_flags_and_modseqs(box):
    """SIGKILL sessions in the middle of STOREs (bulk ones that fold the journal into the
    record, and runs of single ones that append to it), in a loop; afterwards every UID
    still names its message, the flags are those of the file names, and no modseq a reader
    has seen ever goes back."""
    n = 300
    steady_box(box, n, body=lambda i: b"X-Id: %d\n\nbody\n" % i)
    s = box.session()
    s.ok("a", "SELECT INBOX")
    first = flags_modseqs(s, "b", " BODY.PEEK[HEADER.FIELDS (X-Id)]")
    s.close()
    assert len(first) == n
    content = {uid: v[2] for uid, v in first.items()}
    seen = {uid: v[1] for uid, v in first.items()}
    highest = 0
    for i in range(16):
        s = box.session()
        s.ok("a", "SELECT INBOX")
        if i % 2 == 0:
            s.send("b STORE 1:* %sFLAGS.SILENT (\\Flagged)\r\n" % "+-"[(i // 2) % 2])
        else:
            s.send("".join("c%d STORE %d +FLAGS.SILENT (\\Seen $K%d)\r\n" % (k, k * 7 + i, k % 3)
                           for k in range(1, 40)))
        time.sleep(0.001 * (i % 7))  # vary the moment of the kill, not a synchronisation
        s.p.send_signal(signal.SIGKILL)
        s.close()
        v = box.session()
        u = v.ok("v", "EXAMINE INBOX (CONDSTORE)")
        hms = int(re.search(rb"HIGHESTMODSEQ (\d+)", b" ".join(u)).group(1))
        got = flags_modseqs(v, "w", " BODY.PEEK[HEADER.FIELDS (X-Id)]")
        v.close()
        assert {uid: g[2] for uid, g in got.items()} == content, "a UID changed its message"
        assert hms >= highest
        highest = hms
        on_disk = {}
        for name in os.listdir(os.path.join(box.dir, "cur")):
            with open(os.path.join(box.dir, "cur", name), "rb") as f:
                xid = int(re.match(rb"X-Id: (\d+)", f.read(20)).group(1))
            on_disk[xid] = b"F" in name.split(":2,")[1].encode()
        assert len(on_disk) == n
        for uid, (flags, modseq, xid) in got.items():
            assert (b"\\Flagged" in flags) == on_disk[xid], (uid, flags)
            assert seen[uid] <= modseq <= hms, (uid, seen[uid], modseq, hms)
            seen[uid] = modseq


def test_condstore_qresync_resync_reports_exactly_what_changed(box):
    for _ in range(4):
        box.add(MSG1)
    a = box.session()
    try:
        assert a.ok("a1", "ENABLE QRESYNC") == [b"* ENABLED CONDSTORE QRESYNC"]
        u = a.ok("a2", "SELECT INBOX")
        uv = int(re.search(rb"UIDVALIDITY (\d+)", b" ".join(u)).group(1))
        hms = int(re.search(rb"HIGHESTMODSEQ (\d+)", b" ".join(u)).group(1))
    finally:
        a.close()
    b = box.session()
    try:
        b.ok("b1", "SELECT INBOX")
        b.ok("b2", "STORE 2 +FLAGS.SILENT (\\Flagged)")
        b.ok("b3", "STORE 3 +FLAGS.SILENT (\\Deleted)")
        b.ok("b4", "EXPUNGE")
    finally:
        b.close()
    c = box.session()
    try:
        c.ok("c1", "ENABLE QRESYNC")
        u = c.ok("c2", "SELECT INBOX (QRESYNC (%d %d))" % (uv, hms))
        changes = [x for x in u if b"VANISHED" in x or b"FETCH" in x]
        m = re.match(rb"\* 2 FETCH \(UID 2 FLAGS \(\\Flagged\) MODSEQ \((\d+)\)\)", changes[1])
        assert changes[0] == b"* VANISHED (EARLIER) 3" and m and len(changes) == 2, changes
        assert int(m.group(1)) > hms
        u = c.ok("c3", "UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % hms)
        assert u[0] == b"* VANISHED (EARLIER) 3" and len(u) == 2 and b"UID 2 " in u[1], u
        # nothing changed since the newest modseq: nothing reported
        st = c.ok("c3b", "STATUS INBOX (HIGHESTMODSEQ)")
        newest = int(re.search(rb"HIGHESTMODSEQ (\d+)", st[0]).group(1))
        assert c.ok("c4", "UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % newest) == []
        # an expunge in this session is told as VANISHED, not EXPUNGE
        c.ok("c5", "STORE 1 +FLAGS.SILENT (\\Deleted)")
        assert c.ok("c6", "EXPUNGE") == [b"* VANISHED 1"]
        # a STORE that lost the race: UNCHANGEDSINCE older than the message's modseq
        u, t = c.cmd("c7", "STORE 1 (UNCHANGEDSINCE %d) +FLAGS (\\Seen)" % hms)
        assert t == b"c7 OK [MODIFIED 1] Conditional store failed", (u, t)
    finally:
        c.close()


def test_append_literal_mailbox_name_and_multiappend(box, sess):
    # the mailbox name as a literal, a small message kept in memory, a large one spooled
    big = b"Subject: big\n\n" + b"y" * 10000 + b"\n"
    sess.send(b"a APPEND {4+}\r\nSent (\\Seen) {6+}\r\nsmall\n {%d+}\r\n" % len(big) + big + b"\r\n")
    u, t = sess.until("a")
    assert re.match(rb"a OK \[APPENDUID \d+ 1:2\] Append completed.", t), t
    names = box.files("Sent")
    assert len(names) == 2
    sizes = sorted(int(re.search(r",S=(\d+)", n).group(1)) for n in names)
    assert sizes == [6, len(big)]
    # twenty messages in one MULTIAPPEND
    sess.send(b"b APPEND Trash" + b"".join(b" {3+}\r\nm%02d" % i for i in range(20)) + b"\r\n")
    u, t = sess.until("b")
    assert re.match(rb"b OK \[APPENDUID \d+ 1:20\] Append completed.", t), t
    assert len(box.files("Trash")) == 20
    assert os.listdir(os.path.join(box.dir, "tmp")) == []


def test_maildir_made_by_dovecot_keeps_uidvalidity_and_uids(tmp_path):
    """Debian's Dovecot writes a Maildir (APPEND, flags, a keyword, a folder, an expunge);
    pillarbox then serves a copy of it with the same UIDVALIDITY, UIDs and flags."""
    import imaplib
    import shutil
    import dovecot_helpers
    why = dovecot_helpers.usable()
    if why:
        pytest.skip(why)
    d = dovecot_helpers.Dovecot().start()
    try:
        c = imaplib.IMAP4("127.0.0.1", d.port)
        c.login(d.user, d.password)
        for i in range(4):
            c.append("INBOX", None, None, b"Subject: m%d\r\n\r\nbody %d\r\n" % (i, i))
        c.create("Work")
        c.append("Work", "(\\Flagged)", None, b"Subject: w\r\n\r\nwork\r\n")
        c.select("INBOX")
        c.store("1", "+FLAGS", "(\\Seen)")
        c.store("2", "+FLAGS", "($Important)")
        c.store("3", "+FLAGS", "(\\Deleted)")
        c.expunge()
        want = {}
        for box in ("INBOX", "Work"):
            typ, data = c.select(box)
            uv = c.response("UIDVALIDITY")[1][0]
            typ, data = c.uid("FETCH", "1:*", "(FLAGS)")
            want[box] = (int(uv), sorted(
                (int(re.search(rb"UID (\d+)", x).group(1)),
                 sorted(re.search(rb"FLAGS \(([^)]*)\)", x).group(1).replace(b"\\Recent", b"").split()))
                for x in data))
        c.logout()
        shutil.copytree(d.maildir(), str(tmp_path / "Maildir"), symlinks=True)
    finally:
        d.stop()
    home = str(tmp_path / "Maildir")
    assert os.path.exists(os.path.join(home, "dovecot-uidlist"))
    for box in ("INBOX", "Work"):
        s = Session(home)
        try:
            u = s.ok("a", "EXAMINE %s" % box)
            uv = int(re.search(rb"UIDVALIDITY (\d+)", b" ".join(u)).group(1))
            got = sorted((int(re.search(rb"UID (\d+)", x).group(1)),
                          sorted(re.search(rb"FLAGS \(([^)]*)\)", x).group(1).replace(b"\\Recent", b"").split()))
                         for x in s.ok("b", "UID FETCH 1:* FLAGS"))
        finally:
            s.close()
        assert (uv, got) == want[box], box
    assert want["INBOX"][1][0][0] == 1 and [u for u, f in want["INBOX"][1]] == [1, 2, 4]


def test_imap4rev2_after_enable(box, sess):
    """RFC 9051 once ENABLE IMAP4rev2: no RECENT and no \\Recent, SEARCH answers ESEARCH,
    the selected name comes back in a LIST response, names are UTF-8; SEARCHRES's "$"."""
    caps = sess.greeting.split(b"]")[0].split()
    assert b"IMAP4rev2" in caps and b"IMAP4rev1" in caps and b"SEARCHRES" in caps
    for _ in range(3):
        box.add(MSG1)
    box.add(MSG2)
    assert sess.ok("a", "ENABLE IMAP4rev2") == [b"* ENABLED IMAP4rev2"]
    u = sess.ok("b", "SELECT INBOX")
    assert b"* 4 EXISTS" in u and b'* LIST () "." "INBOX"' in u
    assert not any(b"RECENT" in x or b"UNSEEN" in x for x in u), u
    assert sess.ok("c", "FETCH 1 FLAGS") == [b"* 1 FETCH (FLAGS ())"]
    assert sess.ok("d", "SEARCH SUBJECT second") == [b'* ESEARCH (TAG "d") ALL 4']
    assert sess.ok("e", "UID SEARCH SUBJECT nothing-like-this") == [b'* ESEARCH (TAG "e") UID']
    assert sess.ok("f", "SEARCH RETURN (SAVE) SUBJECT hello") == []
    assert sess.ok("g", "FETCH $ UID") == [b"* 1 FETCH (UID 1)", b"* 2 FETCH (UID 2)",
                                          b"* 3 FETCH (UID 3)"]
    sess.ok("h", "STORE $ +FLAGS.SILENT (\\Deleted)")
    assert sess.ok("i", "EXPUNGE") == [b"* 3 EXPUNGE", b"* 2 EXPUNGE", b"* 1 EXPUNGE"]
    assert sess.ok("j", "UID FETCH $ UID") == []  # the saved UIDs are gone
    sess.ok("k", 'CREATE "Entw\xc3\xbcrfe"'.encode("latin-1"))
    assert os.path.isdir(os.path.join(box.dir, ".Entw&APw-rfe"))


def test_maildir_quota_kept_and_enforced(box, sess):
    """APPEND, COPY and EXPUNGE keep maildirsize right (as deliver-maildir does); APPEND over
    the quota is refused with OVERQUOTA; GETQUOTAROOT reports it."""
    with open(os.path.join(box.dir, "maildirsize"), "w") as f:
        f.write("20480S,10C\n0 0\n")
    big = b"Subject: big\n\n" + b"z" * 30000 + b"\n"
    sess.send(b"a APPEND INBOX {%d+}\r\n" % len(big) + big + b"\r\n")
    assert sess.until("a")[1] == b"a NO [OVERQUOTA] Quota exceeded (mailbox full)"
    assert box.files() == []
    sess.send(b"b APPEND INBOX {%d+}\r\n" % len(MSG1) + MSG1 + b"\r\n")
    assert sess.until("b")[1].startswith(b"b OK [APPENDUID ")
    sess.ok("c", "SELECT INBOX")
    sess.ok("d", "COPY 1 Trash")
    u = sess.ok("e", "GETQUOTAROOT INBOX")
    assert u == [b'* QUOTAROOT "INBOX" ""', b'* QUOTA "" (STORAGE %d 20 MESSAGE 2 10)' % (2 * len(MSG1) // 1024)]
    sess.ok("f", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    sess.ok("g", "EXPUNGE")
    with open(os.path.join(box.dir, "maildirsize")) as f:
        lines = f.read().splitlines()
    assert lines[1:] == ["0 0", "%d 1" % len(MSG1), "%d 1" % len(MSG1), "-%d -1" % len(MSG1)]
    sess.ok("h", "DELETE Trash")
    with open(os.path.join(box.dir, "maildirsize")) as f:
        assert f.read().splitlines()[-1] == "-%d -1" % len(MSG1)


MIME3 = (b"From: =?utf-8?q?J=C3=B6rg?= <joerg@example.org>\nTo: a@example.test, b@example.test\n"
         b"Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?= third\nDate: Sun, 25 Mar 2007 10:00:00 +0000\n"
         b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"\n\n--b\n"
         b"Content-Type: text/plain; charset=utf-8\n\nhello\n--b\nContent-Type: text/html\n\n"
         b"<p>x</p>\n--b--\n")
ITEMS = "(UID RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE INTERNALDATE FLAGS)"


def fetch_all(box, text=ITEMS, search='SUBJECT "grüße" FROM joerg'):
    s = box.session()
    try:
        s.ok("a1", "SELECT INBOX")
        f = s.ok("a2", "FETCH 1:* " + text)
        u = s.ok("a3", "SEARCH CHARSET UTF-8 " + search if search else "NOOP")
        u += s.ok("a4", "SEARCH LARGER 60 SENTSINCE 25-Mar-2007")
        # \\Recent belongs to the first session only
        return [x.replace(b"FLAGS (\\Recent)", b"FLAGS ()") for x in f], u
    finally:
        s.close()


def test_cache_answers_like_the_files(box):
    """The per-folder cache (pillarbox-cache) gives the same ENVELOPE, BODY, BODYSTRUCTURE,
    sizes, dates and SEARCH results as parsing the files; it is filled by the first FETCH."""
    for data in (MSG1, MSG2, MIME3):
        box.add(data)
    cache = os.path.join(box.dir, "pillarbox-cache")
    first = fetch_all(box)
    assert first[0][0].startswith(b"* 1 FETCH (UID 1 RFC822.SIZE 157 ENVELOPE (")
    assert b'* SEARCH 3' in first[1] and b"* SEARCH 3" in first[1][1:]
    assert os.path.getsize(cache) > 500
    size = os.path.getsize(cache)
    again = fetch_all(box)
    assert again == first
    assert os.path.getsize(cache) == size  # answered from the cache: nothing appended
    os.unlink(cache)  # without the cache: the files again, the same answers
    assert fetch_all(box) == first


def test_cache_torn_tail_and_bad_entries_are_not_used(box):
    for data in (MSG1, MSG2, MIME3):
        box.add(data)
    cache = os.path.join(box.dir, "pillarbox-cache")
    first = fetch_all(box)
    good = open(cache, "rb").read()
    # a crash in the middle of an append: half an entry at the end
    with open(cache, "ab") as f:
        f.write(good[good.index(b"\nE ") + 1:][:40])
    assert fetch_all(box) == first
    box.add(MSG2)  # the next writer cuts the torn tail off before appending
    fetch_all(box, search=None)
    now = open(cache, "rb").read()
    assert now.startswith(good) and now[len(good):].startswith(b"E ")
    assert now.count(b"\nE ") == good.count(b"\nE ") + 1
    good = now
    first = fetch_all(box)
    # an entry whose bytes changed (the hash no longer matches) is not believed
    bad = bytearray(good)
    i = bad.index(b"joerg")
    bad[i:i + 5] = b"JOERG"
    open(cache, "wb").write(bytes(bad))
    assert fetch_all(box) == first
    # garbage instead of the header: started afresh
    open(cache, "wb").write(b"\0" * 100)
    assert fetch_all(box) == first
    assert open(cache, "rb").read().startswith(b"PBC2 V")


def test_cache_follows_renamed_and_expunged_messages(box):
    for data in (MSG1, MSG2, MIME3):
        box.add(data)
    first = fetch_all(box)
    s = box.session()
    s.ok("b1", "SELECT INBOX")
    s.ok("b2", "STORE 2 +FLAGS (\\Deleted)")
    s.ok("b3", "EXPUNGE")
    s.close()
    box.add(MSG2)
    f, _ = fetch_all(box, search=None)
    assert f[0] == first[0][0]
    assert f[1].replace(b"* 2 FETCH (UID 3", b"* 3 FETCH (UID 3") == first[0][2]
    assert f[2].startswith(b"* 3 FETCH (UID 4 ") and b'"second"' in f[2]


def test_record_stamps_let_a_session_skip_the_listing_but_not_a_change(box):
    """A record made from a listing of steady directories carries their stamps (S); the next
    session opens from it without listing, and any change to new/ or cur/ (a delivery, a
    flag set by another program, a deleted file) moves a stamp and is seen."""
    for data in (MSG1, MSG2):
        box.add(data, sub="cur", info=":2,S")
    old = time.time() - 3600
    for sub in ("new", "cur"):
        os.utime(os.path.join(box.dir, sub), (old, old))
    s = box.session()
    assert b"* 2 EXISTS" in s.ok("a1", "SELECT INBOX")
    s.close()
    with open(os.path.join(box.dir, "pillarbox-uidlist")) as f:
        head = f.readline()
    assert re.search(r" S\d+\.\d+,\d+\.\d+ J\d+$", head.strip()), head
    record = open(os.path.join(box.dir, "pillarbox-uidlist")).read()
    s = box.session()  # from the stamped record: same messages, record untouched
    u = s.ok("a1", "SELECT INBOX")
    assert b"* 2 EXISTS" in u
    assert s.ok("a2", "UID FETCH 1:* FLAGS") == [b"* 1 FETCH (UID 1 FLAGS (\\Seen))",
                                                 b"* 2 FETCH (UID 2 FLAGS (\\Seen))"]
    s.close()
    assert open(os.path.join(box.dir, "pillarbox-uidlist")).read() == record
    name = box.add(b"Subject: third\n\nx\n")  # a delivery: new/ moves
    s = box.session()
    assert b"* 3 EXISTS" in s.ok("a1", "EXAMINE INBOX")
    s.close()
    # another program flags a message (a rename in cur/) and removes one
    cur = os.path.join(box.dir, "cur")
    first = sorted(os.listdir(cur))[0]
    os.rename(os.path.join(cur, first), os.path.join(cur, first.split(":")[0] + ":2,FS"))
    os.unlink(os.path.join(box.dir, "new", name))
    s = box.session()
    u = s.ok("a1", "SELECT INBOX")
    assert b"* 2 EXISTS" in u
    assert s.ok("a2", "UID FETCH 1 FLAGS") == [b"* 1 FETCH (UID 1 FLAGS (\\Seen \\Flagged))"]
    s.close()
