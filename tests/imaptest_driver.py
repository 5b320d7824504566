#!/usr/bin/python3
"""A driver for Dovecot imaptest's scripted tests (the files in ../shared/suites/imaptest/tests).

It follows imaptest's own rules (src/test-parser.c and src/test-exec.c of imaptest, read, not
copied): the header keys (capabilities, connections, state, messages, ignore_extra_untagged,
user N), the two command forms ("[conn] ok|no|bad|"" command" and the tagged pipelined form),
"{{{ ... }}}" multi-line literals, "* " / "! " / "? " untagged expectations matched in any order,
$variables bound from the first server reply they meet, "$" and "$]" wildcards, "$N" relative
sequence numbers that follow EXPUNGEs, the $!unordered[=N] / $!noextra / $!extra / $!ignore= /
$!ban= list directives and the default directives for LIST, LSUB, STATUS and FETCH replies,
prefix matching of tagged and OK/NO/BAD/BYE replies, and the start-up states (nonauth, auth,
created, appended, selected) with the test mailbox deleted, created and filled from the .mbox
file. It prints imaptest's summary lines:

    N test groups: F failed, S skipped due to missing capabilities
    base protocol: x/y individual commands failed
    extensions: x/y individual commands failed

Usage: imaptest_driver.py HOST PORT USER PASSWORD TESTDIR_OR_FILE [BOX]
Every wait on the server is bounded (TIMEOUT seconds); a stuck test fails, it never hangs.
"""
import os
import re
import socket
import sys
import time

TIMEOUT = 10.0
MAX_CONNECTIONS = 100


class Arg:
    __slots__ = ("kind", "value")

    def __init__(self, kind, value=None):
        self.kind = kind  # atom, string, literal, nil, list
        self.value = value

    def astring(self):
        return self.value if self.kind in ("atom", "string", "literal") else None

    def __repr__(self):
        if self.kind == "list":
            return "(" + " ".join(repr(a) for a in self.value) + ")"
        if self.kind == "nil":
            return "NIL"
        if self.kind == "string":
            return '"%s"' % self.value
        if self.kind == "literal":
            return "{%d}%s" % (len(self.value), self.value[:40])
        return self.value


class ParseError(Exception):
    pass


def parse_args(text):
    """Parses IMAP arguments the way imaptest's parser is set up (atoms take any character;
    an atom ends at a space, a line end, or ')' inside a list; literals are inline as
    "{N}\\r\\n" + N bytes). Returns a list of Arg."""
    pos = 0
    n = len(text)
    stack = [[]]
    while pos < n:
        c = text[pos]
        if c == " ":
            pos += 1
            continue
        if c in "\r\n":
            pos += 1
            continue
        if c == "(":
            stack.append([])
            pos += 1
            continue
        if c == ")":
            if len(stack) == 1:
                # imaptest's parser takes a stray ')' as part of an atom
                stack[-1].append(Arg("atom", ")"))
                pos += 1
                continue
            lst = stack.pop()
            stack[-1].append(Arg("list", lst))
            pos += 1
            continue
        if c == '"':
            pos += 1
            out = []
            while pos < n and text[pos] != '"':
                if text[pos] == "\\" and pos + 1 < n:
                    pos += 1
                out.append(text[pos])
                pos += 1
            if pos >= n:
                raise ParseError("unterminated string")
            pos += 1
            stack[-1].append(Arg("string", "".join(out)))
            continue
        m = re.match(r"~?\{(\d+)\+?\}\r\n", text[pos:pos + 40])
        if m:
            size = int(m.group(1))
            start = pos + m.end()
            if start + size > n:
                raise ParseError("short literal")
            stack[-1].append(Arg("literal", text[start:start + size]))
            pos = start + size
            continue
        start = pos
        while pos < n and text[pos] not in " \r\n":
            if text[pos] == ")" and len(stack) > 1:
                break
            pos += 1
        atom = text[start:pos]
        stack[-1].append(Arg("nil") if atom.upper() == "NIL" else Arg("atom", atom))
    if len(stack) != 1:
        raise ParseError("unbalanced list")
    return stack[0]


def parse_status_args(text):
    """OK/NO/BAD/BYE/PREAUTH replies: free text after the status word, split on spaces (the
    human-readable text may hold quotes or parentheses that are not IMAP syntax)."""
    return [Arg("atom", w) for w in text.split(" ") if w != ""]


# --- directives -------------------------------------------------------------------------

def _is_directive(a):
    return a.kind == "atom" and a.value.startswith("$!")


def add_default_directives(args, reply_name, parent_ctx):
    """Inserts imaptest's default directives into the lists of an expected untagged reply.
    parent_ctx is a tuple chain describing where a list sits (see test-parser.c)."""
    def walk(lst, ctx):
        has = bool(lst) and _is_directive(lst[0])
        chain = 1
        for a in lst:
            if _is_directive(a) and a.value.startswith("$!unordered="):
                chain = int(a.value.split("=", 1)[1])
        if not has and ctx is not None:
            defaults = default_for(reply_name, ctx)
            if defaults:
                lst[0:0] = [Arg("atom", d) for d in defaults]
                for d in defaults:
                    if d.startswith("$!unordered="):
                        chain = int(d.split("=", 1)[1])
        body = [a for a in lst if not _is_directive(a)]
        prev_atom = None
        for i, a in enumerate(body):
            if a.kind == "atom":
                prev_atom = a.value.lower()
            if a.kind != "list":
                continue
            idx = i if chain == 1 else i % chain
            walk(a.value, (ctx, idx, prev_atom))
    walk(args, None)


def default_for(reply_name, ctx):
    # ctx = (parent_ctx, idx_in_parent, prev_atom); the top level is parent_ctx None
    parent, idx, prev_atom = ctx
    if reply_name in ("list", "lsub"):
        if parent is None and idx == 1:
            return ["$!unordered"]
    elif reply_name == "status":
        if parent is None and idx == 2:
            return ["$!unordered=2"]
    elif reply_name == "fetch":
        if parent is None and idx == 2:
            return ["$!unordered=2"]
        if parent is not None and parent[0] is None and parent[1] == 2 and prev_atom == "flags":
            return ["$!unordered", "$!noextra", "$!ignore=\\recent",
                    "$!ignore=$HasAttachment", "$!ignore=$HasNoAttachment"]
    return None


# --- test files -------------------------------------------------------------------------

class Command:
    def __init__(self, text, reply, tag, linenum):
        self.text = text
        self.reply = reply  # list of Arg, or None while pending
        self.tag = tag
        self.linenum = linenum


class Group:
    def __init__(self):
        self.commands = []
        self.untagged = []  # (existence, args)
        self.conn = 0
        self.replies_pending = 0
        self.ordered = False
        self.have_bye = False


class Test:
    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path)
        self.capabilities = None
        self.connections = 1
        self.ignore_extra_untagged = True
        self.messages = 0
        self.state = "selected"
        self.groups = []
        self.users = {}
        mbox = path + ".mbox"
        self.mbox = mbox if os.path.exists(mbox) else os.path.join(os.path.dirname(path),
                                                                    "default.mbox")


REPLY_WORDS = {"ok": "ok", "no": "no", "bad": "bad", '""': ""}


def get_cmd_reply(line):
    """Optional "tagN " then ok/no/bad/"": returns (reply args or None, tag, rest)."""
    tag = 0
    words = line.split(" ", 1)
    m = re.match(r"(?i)tag(\d+)$", words[0])
    if m and len(words) > 1 and int(m.group(1)) > 0:
        tag = int(m.group(1))
        line = words[1]
        words = line.split(" ", 1)
    w = words[0].lower()
    if w in REPLY_WORDS:
        rest = words[1] if len(words) > 1 else ""
        return [Arg("atom", REPLY_WORDS[w])], tag, rest
    return None, tag, line


def parse_untagged(test, group, line, existence):
    args = parse_args(line)
    name = ""
    if args and args[0].kind == "atom":
        name = args[0].value
        if name.startswith("$") or name[:1].isdigit():
            name = args[1].value if len(args) > 1 and args[1].kind == "atom" else ""
    name = name.lower()
    add_default_directives(args, name, None)
    if name.startswith("bye") and existence == "*":
        group.have_bye = True
    group.untagged.append((existence, args))


def parse_test(path):
    test = Test(path)
    with open(path, "rb") as f:
        raw = f.read().decode("utf-8", "surrogateescape")
    lines = raw.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    header = True
    group = None
    ifstack = []
    skip = False
    i = 0
    while i < len(lines):
        line = lines[i]
        linenum = i + 1
        i += 1
        if line.endswith("\r"):
            line = line[:-1]
        if line == "" and header is not None:
            header = False
            continue
        if line.startswith("#"):
            continue
        if line.endswith("{{{"):
            # multi-line literal(s): "...{{{" lines "}}}rest" (rest may open another)
            built = ""
            cur = line
            while True:
                binary = cur.endswith("~{{{")
                built += cur[:-4] if binary else cur[:-3]
                body = []
                while i < len(lines) and not lines[i].startswith("}}}"):
                    body.append(lines[i])
                    i += 1
                if i >= len(lines):
                    raise ParseError("%s: multiline not ended" % path)
                data = ("\n" if binary else "\r\n").join(body)
                built += "%s{%d}\r\n%s" % ("~" if binary else "", len(data.encode("utf-8",
                                           "surrogateescape")), data)
                cur = lines[i][3:]
                i += 1
                if not cur.endswith("{{{"):
                    built += cur
                    break
            line = built
        if header:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            value = value.strip()
            if key == "capabilities":
                test.capabilities = value.split()
            elif key == "connections":
                test.connections = int(value)
            elif key == "ignore_extra_untagged":
                test.ignore_extra_untagged = value[:1] == "y"
            elif key.startswith("user "):
                test.users[int(key[5:])] = value
            elif key == "messages":
                test.messages = 10 ** 9 if value == "all" else int(value)
            elif key == "state":
                test.state = value.lower()
            else:
                raise ParseError("%s: unknown setting %s" % (path, key))
            continue
        if line.startswith("!ifenv ") or line.startswith("!ifnenv "):
            env = line.split(" ", 1)[1]
            have = os.environ.get(env) is None
            if line.startswith("!ifnenv "):
                have = not have
            ifstack.append(skip)
            if have:
                skip = True
            continue
        if line == "!else":
            if not ifstack[-1]:
                skip = not skip
            continue
        if line == "!endif":
            skip = ifstack.pop()
            continue
        if skip:
            continue
        if group is not None:
            if line.startswith("!sleep ") or line.startswith("!output "):
                continue
            if line == "!ordered":
                group.ordered = True
                continue
            if line[:2] in ("* ", "! ", "? "):
                parse_untagged(test, group, line[2:], line[0])
                continue
            if group.replies_pending > 0:
                l2 = line
                if test.connections > 1:
                    w = l2.split(" ", 1)
                    if w[0].isdigit() and int(w[0]) > 0 and len(w) > 1:
                        l2 = w[1]
                reply, tag, rest = get_cmd_reply(l2)
                if reply is not None:
                    cmd = next((c for c in group.commands if c.tag == tag), None)
                    if cmd is None or cmd.reply is not None:
                        raise ParseError("%s line %d: reply for unknown tag" % (path, linenum))
                    args = parse_args(l2)
                    cmd.reply = args[1:] if tag else args
                    group.replies_pending -= 1
                    continue
        if group is None or group.replies_pending == 0:
            group = Group()
            test.groups.append(group)
        conn = 0
        if test.connections > 1:
            w = line.split(" ", 1)
            if not w[0].isdigit() or int(w[0]) == 0:
                raise ParseError("%s line %d: missing client index" % (path, linenum))
            conn = int(w[0]) - 1
            line = w[1] if len(w) > 1 else ""
            test.connections = max(test.connections, conn + 1)
        reply, tag, rest = get_cmd_reply(line)
        if not group.commands and rest[:2] in ("* ", "! ", "? "):
            group.conn = conn
            parse_untagged(test, group, rest[2:], rest[0])
            continue
        group.conn = conn
        if reply is None:
            group.replies_pending += 1
        group.commands.append(Command(rest, reply, tag, linenum))
    has_logout = any(c.text.lower() == "logout" or g.have_bye
                     for g in test.groups for c in g.commands)
    if not has_logout:
        g = Group()
        g.commands.append(Command("logout", [Arg("atom", "ok")], 0, 0))
        test.groups.append(g)
    return test


FROM_LINE = re.compile(r"^From \S+\s+\w{3} (\w{3})\s+(\d+) (\d+:\d+(?::\d+)?) (\d{4})(?: ([+-]\d{4}))?")


def mbox_messages(path):
    """The messages of an mbox as imaptest's source reads them: every line between two From_
    lines (the blank line before the next From_ included), CRLF line ends, and the From_
    line's date as the INTERNALDATE of the APPEND."""
    with open(path, "rb") as f:
        data = f.read().decode("utf-8", "surrogateescape")
    lines = data.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    msgs = []
    cur = None
    date = None
    for line in lines:
        m = FROM_LINE.match(line)
        if m and (cur is None or cur):
            if cur is not None:
                msgs.append((cur, date))
            mon, day, hms, year, tz = m.groups()
            if hms.count(":") == 1:
                hms += ":00"
            date = "%02d-%s-%s %s %s" % (int(day), mon, year, hms, tz or "+0000")
            cur = []
            continue
        if cur is not None:
            cur.append(line)
    if cur:
        msgs.append((cur, date))
    return [("".join(l.rstrip("\r") + "\r\n" for l in m), d) for m, d in msgs]


# --- the client -------------------------------------------------------------------------

class Closed(Exception):
    pass


class Client:
    def __init__(self, host, port, gid):
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.buf = b""
        self.gid = gid
        self.next_tag = 1
        self.count = 0  # messages this session knows of (EXISTS, EXPUNGE)
        self.caps = []
        self.closed = False
        self.greeting = self.read_response()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self, deadline):
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply within %.0fs" % TIMEOUT)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("no reply within %.0fs" % TIMEOUT)
            except OSError as e:
                raise Closed(str(e))
            if not chunk:
                self.closed = True
                raise Closed("connection closed")
            self.buf += chunk
            return

    def read_response(self, deadline=None):
        """One logical response line with its literals inline, decoded (surrogateescape)."""
        if deadline is None:
            deadline = time.monotonic() + TIMEOUT
        out = b""
        while True:
            while b"\n" not in self.buf:
                self._fill(deadline)
            line, self.buf = self.buf.split(b"\n", 1)
            line += b"\n"
            out += line
            m = re.search(rb"~?\{(\d+)\+?\}\r?\n$", line)
            if not m:
                break
            size = int(m.group(1))
            while len(self.buf) < size:
                self._fill(deadline)
            out += self.buf[:size]
            self.buf = self.buf[size:]
        return out.decode("utf-8", "surrogateescape").rstrip("\r\n")

    def send_command(self, text):
        """Sends "TAG text", waiting for '+' before each synchronising literal. Returns the tag
        and any responses that arrived while waiting for a continuation."""
        tag = "%d.%d" % (self.gid, self.next_tag)
        self.next_tag += 1
        data = (tag + " " + text).encode("utf-8", "surrogateescape")
        early = []
        pos = 0
        while True:
            m = re.compile(rb"~?\{(\d+)(\+?)\}\r\n").search(data, pos)
            if not m:
                self.sock.sendall(data[pos:] + b"\r\n")
                break
            self.sock.sendall(data[pos:m.end()])
            if not m.group(2):
                deadline = time.monotonic() + TIMEOUT
                while True:
                    r = self.read_response(deadline)
                    if r.startswith("+"):
                        break
                    early.append(r)
                    if r.startswith(tag + " "):
                        # refused before the literal: do not send it
                        return tag, early, True
            size = int(m.group(1))
            self.sock.sendall(data[m.end():m.end() + size])
            pos = m.end() + size
        return tag, early, False


def split_response(line):
    """('untagged', args) | ('tagged', tag, args) | ('cont', None)."""
    if line.startswith("+"):
        return ("cont", None)
    if line.startswith("* "):
        rest = line[2:]
        word = rest.split(" ", 1)[0].upper()
        if word in ("OK", "NO", "BAD", "BYE", "PREAUTH"):
            return ("untagged", parse_status_args(rest))
        try:
            return ("untagged", parse_args(rest))
        except ParseError:
            return ("untagged", parse_status_args(rest))
    tag, _, rest = line.partition(" ")
    return ("tagged", tag, parse_status_args(rest))


# --- matching ---------------------------------------------------------------------------

VARCHARS = re.compile(r"[A-Za-z0-9_]*")


class Exec:
    def __init__(self, test, host, port, user, password, box, counters):
        self.test = test
        self.host, self.port = host, port
        self.user, self.password, self.box = user, password, box
        self.c = counters
        self.vars = {}
        self.added = []
        self.failed = False
        self.skipped = False
        self.seqmap = []
        self.clients = []
        self.messages = mbox_messages(test.mbox)
        self.next_msg = 0

    # imaptest's test_fail: one failure per call, base or extension
    def fail(self, msg):
        self.failed = True
        if self.test.capabilities is None:
            self.c["base_failures"] += 1
        else:
            self.c["ext_failures"] += 1
        self.c["log"].append("*** Test %s: %s" % (self.test.name, msg))

    def count_group(self):
        if self.test.capabilities is None:
            self.c["base_tests"] += 1
        else:
            self.c["ext_tests"] += 1

    def rel_seq(self, n):
        if n == 0:
            return "<zero seq>"
        if n > len(self.seqmap):
            return "<out of range>"
        if self.seqmap[n - 1] == 0:
            return "<expunged>"
        return str(self.seqmap[n - 1])

    def expand_all(self, s, skip_uninit=False):
        out = []
        i = 0
        while i < len(s):
            ch = s[i]
            if ch != "$" or i + 1 == len(s):
                out.append(ch)
                i += 1
                continue
            i += 1
            if s[i] == "$":
                out.append("$")
                i += 1
                continue
            if s[i] == "!":
                while i + 1 < len(s) and s[i + 1] != " ":
                    i += 1
                i += 1
                continue
            if s[i] == "{":
                j = s.index("}", i)
                name = s[i + 1:j]
                i = j + 1
            else:
                name = VARCHARS.match(s, i).group(0)
                i += len(name)
            if name.isdigit():
                out.append(self.rel_seq(int(name)))
            elif name in self.vars:
                out.append(self.vars[name])
            elif skip_uninit:
                out.append("$")
            else:
                raise KeyError(name)
        return "".join(out)

    def expand_input(self, pat, inp):
        """imaptest's test_expand_input: binds unset variables from the input. Returns the
        expanded pattern, or None on an early mismatch; icase tells the comparison."""
        out = []
        icase = True
        i = 0
        k = 0
        while i < len(pat):
            if pat[i] != "$" or pat[i + 1:i + 2] == "$":
                if pat[i] == "$":
                    i += 1
                if k >= len(inp) or pat[i].upper() != inp[k].upper():
                    return None, icase
                out.append(pat[i])
                i += 1
                k += 1
                continue
            i += 1
            if pat[i:i + 1] == "{":
                j = pat.find("}", i)
                if j < 0:
                    return "", icase
                name = pat[i + 1:j]
                i = j + 1
            else:
                name = VARCHARS.match(pat, i).group(0)
                i += len(name)
            if name.isdigit():
                value = self.rel_seq(int(name))
            elif name.startswith("case:"):
                icase = False
                value = ""
            else:
                value = self.vars.get(name) if name else None
                if value is None:
                    rest = pat[i:]
                    if rest.startswith("$"):
                        rest, _ = self.expand_input(rest, inp[k:])
                        rest = rest or ""
                    stop = rest[:1]
                    p = k
                    while p < len(inp) and (not stop or inp[p].upper() != stop.upper()):
                        p += 1
                    value = inp[k:p]
                    if name:
                        self.vars[name] = value
                        self.added.append(name)
            out.append(value)
            if inp[k:k + len(value)] != value:
                return None, icase
            k += len(value)
        return "".join(out), icase

    def match_args(self, match, args, maxn=None, prefix=False):
        """Returns True for a full match, else the count of matched arguments."""
        ret = 0
        mi = 0
        ai = 0
        limit = len(match) if maxn is None else min(len(match), maxn)
        while mi < limit:
            m = match[mi]
            a = args[ai] if ai < len(args) else None
            if m.kind == "nil":
                if a is None or a.kind != "nil":
                    return ret
            elif m.kind in ("atom", "string", "literal"):
                if m.value == "$" and a is not None and a.kind == "list":
                    pass
                elif m.value == "$]":
                    while a is not None and a.kind == "atom" and "]" not in a.value:
                        ai += 1
                        a = args[ai] if ai < len(args) else None
                else:
                    astr = a.astring() if a is not None else None
                    if astr is None:
                        return ret
                    mstr, icase = self.expand_input(m.value, astr)
                    if mstr is None:
                        return ret
                    if prefix and mi == len(match) - 1:
                        ok = (astr[:len(mstr)].lower() == mstr.lower()) if icase else \
                            astr.startswith(mstr)
                    else:
                        ok = (astr.lower() == mstr.lower()) if icase else astr == mstr
                    if not ok:
                        return ret
            elif m.kind == "list":
                if a is None or a.kind != "list":
                    return ret
                sub = self.match_list(m.value, a.value)
                if sub is not True:
                    return ret + sub
            ret += 1
            mi += 1
            ai += 1
        if prefix or ai >= len(args) or maxn is not None:
            return True
        return ret

    def match_list(self, match, args):
        unordered = False
        chain = 1
        noextra = None
        ignores = []
        bans = []
        i = 0
        while i < len(match) and _is_directive(match[i]):
            d = match[i].value[2:]
            if d.startswith("unordered"):
                unordered = True
                if noextra is None:
                    noextra = False
                if d[9:10] == "=":
                    chain = int(d[10:])
            elif d == "ordered":
                unordered = False
            elif d == "extra":
                noextra = False
            elif d == "noextra":
                noextra = True
            elif d.startswith("ignore="):
                ignores.append(d[7:].lower())
            elif d.startswith("ban="):
                bans.append(d[4:].lower())
            i += 1
        match = match[i:]
        if noextra is None:
            noextra = True
        if not unordered:
            return self.match_args(match, args)
        if len(args) % chain:
            return 0
        matched = [False] * len(args)
        ret = 0
        for mi in range(0, len(match), chain):
            for ai in range(0, len(args), chain):
                if self.match_args(match[mi:mi + chain], args[ai:ai + chain], chain) is True:
                    matched[ai] = True
                    break
            else:
                return ret
            ret += 1
        for ai in range(0, len(args), chain):
            if matched[ai]:
                continue
            s = args[ai].astring()
            if s is None:
                continue
            if noextra and s.lower() not in ignores:
                return ret
            if not noextra and s.lower() in bans:
                return ret
        return True

    # --- running ----------------------------------------------------------------------

    def connect(self, idx):
        return Client(self.host, self.port, len(self.c["log"]) * 1000 + idx + 1)

    def simple(self, cl, text, okwords=("OK",), literal=None):
        """Runs one set-up command on cl and returns (status word, untagged lines)."""
        if literal is not None:
            text = "%s {%d}\r\n%s" % (text, len(literal.encode("utf-8", "surrogateescape")),
                                      literal)
        tag, early, refused = cl.send_command(text)
        untagged = []
        lines = early
        deadline = time.monotonic() + TIMEOUT
        while True:
            for r in lines:
                kind = split_response(r)
                if kind[0] == "tagged" and kind[1] == tag:
                    word = kind[2][0].value.upper() if kind[2] else ""
                    return word, untagged
                if kind[0] == "untagged":
                    self.track(cl, kind[1])
                    untagged.append(kind[1])
            lines = [cl.read_response(deadline)]

    def track(self, cl, args):
        if len(args) >= 2 and args[0].kind == "atom" and args[0].value.isdigit() \
                and args[1].kind == "atom":
            w = args[1].value.upper()
            if w == "EXISTS":
                cl.count = int(args[0].value)
            elif w == "EXPUNGE":
                cl.count = max(0, cl.count - 1)
        if args and args[0].kind == "atom" and args[0].value.upper() == "CAPABILITY":
            cl.caps = [a.value.upper() for a in args[1:] if a.kind == "atom"]
        if args and args[0].kind == "atom" and args[0].value.upper() in ("OK", "PREAUTH") \
                and len(args) > 1 and args[1].value.upper() == "[CAPABILITY":
            cl.caps = [a.value.upper().rstrip("]") for a in args[2:] if a.kind == "atom"]

    def login(self, cl, idx):
        user = self.test.users.get(idx + 1, self.user)
        if user in ("$user2", "${user2}"):
            return False
        self.vars["user" if idx == 0 else "user%d" % (idx + 1)] = user
        self.vars["username" if idx == 0 else "username%d" % (idx + 1)] = user.split("@")[0]
        self.vars["domain" if idx == 0 else "domain%d" % (idx + 1)] = \
            user.split("@")[1] if "@" in user else self.host
        self.vars["password" if idx == 0 else "password%d" % (idx + 1)] = self.password
        word, _ = self.simple(cl, 'LOGIN "%s" "%s"' % (user, self.password))
        if word != "OK":
            raise RuntimeError("LOGIN failed")
        word, _ = self.simple(cl, "CAPABILITY")
        return True

    def have_caps(self, cl):
        if not self.test.capabilities:
            return True
        return all(c.upper() in cl.caps for c in self.test.capabilities)

    def next_message(self):
        m = self.messages[self.next_msg % len(self.messages)]
        self.next_msg += 1
        return m

    def setup(self):
        t = self.test
        for idx in range(t.connections):
            self.clients.append(self.connect(idx))
        if t.state == "nonauth":
            first = self.clients[0]
            caps = " ".join(a.value for a in parse_status_args(first.greeting[2:]))
            first.caps = [w.strip("[]").upper() for w in caps.split()]
            if not self.have_caps(first):
                word, _ = self.simple(first, "CAPABILITY")
            if not self.have_caps(first):
                self.skipped = True
            return
        for idx, cl in enumerate(self.clients):
            self.login(cl, idx)
        if not self.have_caps(self.clients[0]):
            self.skipped = True
            return
        cl = self.clients[0]
        box = self.box
        word, lists = self.simple(cl, 'LIST "" "%s*"' % box)
        word2, lsubs = self.simple(cl, 'LSUB "" "%s*"' % box)
        names = sorted({a[3].astring() for a in lists if len(a) >= 4
                        and a[0].value.upper() == "LIST" and a[3].astring()},
                       key=lambda s: s.lower(), reverse=True)
        subs = sorted({a[3].astring() for a in lsubs if len(a) >= 4
                       and a[0].value.upper() == "LSUB" and a[3].astring()},
                      key=lambda s: s.lower(), reverse=True)
        for n in names:
            self.simple(cl, 'DELETE "%s"' % n)
        for n in subs:
            self.simple(cl, 'UNSUBSCRIBE "%s"' % n)
        if t.state == "auth":
            return
        if box.upper() != "INBOX":
            word, _ = self.simple(cl, 'CREATE "%s"' % box)
            if word != "OK":
                raise RuntimeError("CREATE %s failed" % box)
        if t.state == "created":
            return
        count = len(self.messages) if t.messages >= 10 ** 9 else t.messages
        for _ in range(count):
            msg, date = self.next_message()
            word, _ = self.simple(cl, 'APPEND "%s" "%s"' % (box, date) if date else
                                  'APPEND "%s"' % box, literal=msg)
            if word != "OK":
                raise RuntimeError("APPEND failed")
        if t.state == "appended":
            return
        for c in self.clients:
            word, _ = self.simple(c, 'SELECT "%s"' % box)
            if word != "OK":
                raise RuntimeError("SELECT failed")

    def command_text(self, cmd):
        text = self.expand_all(cmd.text)
        low = text.lower()
        if low == "append":
            return 'APPEND "%s" {%d}\r\n%s' % (self.box, *self._lit())
        if low.startswith("append ") and not self._append_has_body(text[7:]):
            return "%s {%d}\r\n%s" % (text, *self._lit())
        return text

    def _lit(self):
        m, _ = self.next_message()
        return len(m.encode("utf-8", "surrogateescape")), m

    def _append_has_body(self, rest):
        try:
            args = parse_args(rest)
        except ParseError:
            return True
        if not args:
            return False
        i = 0
        if i + 1 < len(args) and args[i + 1].kind == "list":
            i += 1
        if i + 1 < len(args) and args[i + 1].kind == "string":
            i += 1
        return i + 1 < len(args) and (args[i + 1].kind == "literal" or (
            args[i + 1].kind == "atom" and args[i + 1].value.lower() == "catenate"))

    def run_group(self, g):
        cl = self.clients[g.conn]
        self.seqmap = list(range(1, cl.count + 1))
        found = [False] * len(g.untagged)
        best = [None] * len(g.untagged)
        extra = None
        pending = {}
        lines = []
        if not g.commands:
            lines = [cl.greeting]
        for c in g.commands:
            try:
                text = self.command_text(c)
            except KeyError as e:
                self.fail("line %d: uninitialized variable %s" % (c.linenum, e))
                return False
            tag, early, refused = cl.send_command(text)
            pending[tag] = c
            lines.extend(early)
        deadline = time.monotonic() + TIMEOUT
        while True:
            for r in lines:
                kind = split_response(r)
                if kind[0] == "untagged":
                    ok = self.match_untagged(g, kind[1], found, best)
                    if ok is None:
                        return False
                    if not ok and extra is None:
                        extra = r
                    self.track(cl, kind[1])
                    if len(kind[1]) >= 2 and kind[1][1].kind == "atom" and \
                            kind[1][1].value.upper() == "EXPUNGE" and kind[1][0].value.isdigit():
                        self.on_expunge(int(kind[1][0].value))
                elif kind[0] == "tagged" and kind[1] in pending:
                    c = pending.pop(kind[1])
                    self.vars["tag"] = kind[1]
                    res = self.match_args(c.reply, kind[2], prefix=True)
                    self.vars.pop("tag", None)
                    if res is not True:
                        self.fail("line %d: expected tagged reply '%s', got '%s'" % (
                            c.linenum, " ".join(map(repr, c.reply)), r))
            lines = []
            if not pending and g.commands:
                break
            if not g.commands:
                break
            try:
                lines = [cl.read_response(deadline)]
            except Closed:
                if g.have_bye:
                    break
                self.fail("unexpected disconnection (group at line %d)" % g.commands[0].linenum)
                return False
            except TimeoutError as e:
                self.fail("line %d: %s" % (g.commands[0].linenum, e))
                return False
        missing = [i for i, (ex, _) in enumerate(g.untagged) if ex == "*" and not found[i]]
        if missing:
            ex, args = g.untagged[missing[0]]
            self.fail("line %d: missing %d untagged replies; first: %s; best match: %s" % (
                g.commands[0].linenum if g.commands else 0, len(missing),
                " ".join(map(repr, args)), best[missing[0]]))
        if extra is not None and not self.test.ignore_extra_untagged:
            self.fail("unexpected untagged reply: %s" % extra)
        return True

    def on_expunge(self, seq):
        if seq > len(self.seqmap):
            return
        for i in range(seq - 1, len(self.seqmap)):
            if self.seqmap[i] >= seq:
                if self.seqmap[i] == seq:
                    self.seqmap[i] = 0
                else:
                    self.seqmap[i] -= 1

    def match_untagged(self, g, args, found, best):
        prefix = bool(args) and args[0].kind == "atom" and \
            args[0].value.lower() in ("ok", "no", "bad", "bye")
        found_some = False
        for i, (ex, pat) in enumerate(g.untagged):
            if found[i]:
                continue
            self.added = []
            res = self.match_args(pat, args, prefix=prefix)
            if res is True:
                if ex == "!":
                    self.fail("unexpected untagged match: %s / reply %s" % (
                        " ".join(map(repr, pat)), " ".join(map(repr, args))))
                    return None
                found[i] = True
                found_some = True
                if g.ordered:
                    break
                continue
            if best[i] is None or best[i][0] < res:
                best[i] = (res, " ".join(map(repr, args)))
            for v in self.added:
                self.vars.pop(v, None)
            if g.ordered and ex == "*":
                break
        return found_some

    def run(self):
        try:
            self.vars["mailbox"] = self.box
            self.vars["mailbox_url"] = self.box
            self.setup()
        except (RuntimeError, Closed, TimeoutError, OSError) as e:
            self.fail("initialization failed: %s" % e)
            self.close()
            return
        if self.skipped:
            self.close()
            return
        for g in self.test.groups:
            try:
                ok = self.run_group(g)
            except (Closed, TimeoutError, OSError) as e:
                self.fail("group failed: %s" % e)
                ok = False
            self.count_group()
            if not ok:
                break
        self.close()

    def close(self):
        for c in self.clients:
            c.close()


def run_tests(host, port, user, password, path, box="imaptest", names=None):
    """Runs every test under path (a directory or one file). Returns the counters dict with
    groups, group_failures, group_skips, base/ext tests and failures, per-test results and a
    log of failure messages."""
    c = {"groups": 0, "group_failures": 0, "group_skips": 0, "base_tests": 0,
         "base_failures": 0, "ext_tests": 0, "ext_failures": 0, "log": [], "results": {}}
    if os.path.isdir(path):
        files = sorted(os.path.join(path, n) for n in os.listdir(path)
                       if not n.startswith(".") and not n.endswith(".mbox")
                       and not os.path.isdir(os.path.join(path, n)))
    else:
        files = [path]
    for f in files:
        if names is not None and os.path.basename(f) not in names:
            continue
        test = parse_test(f)
        c["groups"] += 1
        ex = Exec(test, host, port, user, password, box, c)
        ex.run()
        if ex.failed:
            c["group_failures"] += 1
            c["results"][test.name] = "failed"
        elif ex.skipped:
            c["group_skips"] += 1
            c["results"][test.name] = "skipped"
        else:
            c["results"][test.name] = "ok"
    return c


def summary(c):
    return ("%d test groups: %d failed, %d skipped due to missing capabilities\n"
            "base protocol: %d/%d individual commands failed\n"
            "extensions: %d/%d individual commands failed" % (
                c["groups"], c["group_failures"], c["group_skips"], c["base_failures"],
                c["base_tests"], c["ext_failures"], c["ext_tests"]))


if __name__ == "__main__":
    if len(sys.argv) < 6:
        sys.stderr.write("usage: imaptest_driver.py HOST PORT USER PASSWORD TESTS [BOX]\n")
        sys.exit(100)
    res = run_tests(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5],
                    sys.argv[6] if len(sys.argv) > 6 else "imaptest")
    for line in res["log"]:
        print(line)
    for name, r in sorted(res["results"].items()):
        print("%-40s %s" % (name, r))
    print(summary(res))
    sys.exit(0 if res["group_failures"] == 0 else 1)
