"""The tree's style, checked (doc/hacking.md, "Style"). No formatter is run: the rules below
are the ones a reader notices and a tool can check, each failure names the file and line.

- C sources (bin/, lib/, tests/unit/, fuzz/): lines of at most 100 columns, no tab, no
  trailing white space, a newline at the end.
- Every lib/NAME.c opens with a comment and has lib/NAME.h, whose opening comment says what
  the module owns, under the guard PILLARBOX_NAME_H; a .c that serves another module's header
  (the IMAP command modules under imap_sess.h) is named as lib/NAME.c in that header.
- Every bin/NAME.c opens with a comment, sets PROG to "NAME", has a man page doc/NAME.8 (or .1),
  and its main() is at most 120 lines; the programs issue 11 thinned stay under their sizes
  (PROGRAM_LINES).
- doc/hacking.md names every lib/ module.
- Processes are created in lib/spawn.c alone (no fork() elsewhere), and QUEUE_INJECT is read in
  lib/inject.c alone.
"""
import glob
import os
import re

from conftest import ROOT

COLUMNS = 100
MAIN_LINES = 120
# Issue 11, "Thin programs": the largest programs stay thin once made so
PROGRAM_LINES = {"queue-run": 1000, "smtp-receive": 800}


def rel(p):
    return os.path.relpath(p, ROOT)


def sources():
    pats = ["bin/*.c", "lib/*.c", "lib/*.h", "tests/unit/*.c", "tests/unit/*.h", "fuzz/*.c"]
    files = sorted(f for p in pats for f in glob.glob(os.path.join(ROOT, p)))
    assert len(files) > 100, "the tree is not where conftest says: %s" % ROOT
    return files


def read(p):
    with open(p, encoding="utf-8") as f:
        return f.read()


def opening_comment(text):
    """The comment a file opens with, or None."""
    m = re.match(r"/\*.*?\*/", text, re.S)
    return m.group(0) if m else None


def test_c_lines_are_short_without_tabs_or_trailing_space():
    bad = []
    for p in sources():
        text = read(p)
        if text and not text.endswith("\n"):
            bad.append("%s: no newline at the end" % rel(p))
        for n, line in enumerate(text.split("\n"), 1):
            if len(line) > COLUMNS:
                bad.append("%s:%d: %d columns" % (rel(p), n, len(line)))
            if "\t" in line:
                bad.append("%s:%d: a tab" % (rel(p), n))
            if line != line.rstrip():
                bad.append("%s:%d: trailing white space" % (rel(p), n))
    assert not bad, "\n".join(bad)


def test_every_lib_module_has_a_header_that_says_what_it_owns():
    headers = {os.path.basename(h)[:-2]: read(h)
               for h in glob.glob(os.path.join(ROOT, "lib", "*.h"))}
    bad = []
    for name, text in sorted(headers.items()):
        c = opening_comment(text)
        if not c or len(c) < 40:
            bad.append("lib/%s.h: no opening comment saying what the module owns" % name)
        guard = "PILLARBOX_%s_H" % name.upper()
        if "#ifndef %s\n#define %s\n" % (guard, guard) not in text:
            bad.append("lib/%s.h: not under the guard %s" % (name, guard))
    for p in sorted(glob.glob(os.path.join(ROOT, "lib", "*.c"))):
        name = os.path.basename(p)[:-2]
        if not opening_comment(read(p)):
            bad.append("%s: no opening comment" % rel(p))
        if name in headers:
            continue
        if not any("lib/%s.c" % name in t for t in headers.values()):
            bad.append("%s: no lib/%s.h, and no header says it declares lib/%s.c"
                       % (rel(p), name, name))
    assert not bad, "\n".join(bad)


def main_length(text):
    """Lines from `int main(` to the closing brace in column 0, both counted."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if re.match(r"int main\s*\(", line):
            for j in range(i, len(lines)):
                if lines[j].startswith("}"):
                    return j - i + 1
    return None


def test_every_program_is_thin_and_documented():
    bad = []
    progs = sorted(glob.glob(os.path.join(ROOT, "bin", "*.c")))
    assert progs
    for p in progs:
        name = os.path.basename(p)[:-2]
        text = read(p)
        if not opening_comment(text):
            bad.append("%s: no opening comment saying what the program does" % rel(p))
        if 'char const *PROG = "%s";' % name not in text:
            bad.append('%s: PROG is not "%s"' % (rel(p), name))
        if not (os.path.exists(os.path.join(ROOT, "doc", name + ".8"))
                or os.path.exists(os.path.join(ROOT, "doc", name + ".1"))):
            bad.append("%s: no man page doc/%s.8 or doc/%s.1" % (rel(p), name, name))
        n = main_length(text)
        if n is None:
            bad.append("%s: no `int main(` found" % rel(p))
        elif n > MAIN_LINES:
            bad.append("%s: main() is %d lines (at most %d)" % (rel(p), n, MAIN_LINES))
        if name in PROGRAM_LINES and text.count("\n") >= PROGRAM_LINES[name]:
            bad.append("%s: %d lines (under %d)" % (rel(p), text.count("\n"), PROGRAM_LINES[name]))
    assert not bad, "\n".join(bad)


def grep(pattern, pats):
    rx = re.compile(pattern)
    hits = []
    for pat in pats:
        for p in sorted(glob.glob(os.path.join(ROOT, pat))):
            for n, line in enumerate(read(p).split("\n"), 1):
                code = re.sub(r"/\*.*?\*/|//.*", "", line)
                if rx.search(code) and not code.lstrip().startswith("*"):
                    hits.append("%s:%d: %s" % (rel(p), n, line.strip()))
    return hits


def test_processes_are_created_in_lib_spawn_alone():
    hits = grep(r"\b(v?fork|posix_spawnp?)\s*\(", ["bin/*.c", "lib/*.c"])
    others = [h for h in hits if not h.startswith("lib/spawn.c:")]
    assert any(h.startswith("lib/spawn.c:") for h in hits), "lib/spawn.c creates no process?"
    assert not others, ("fork/posix_spawn outside lib/spawn.c (use lib/spawn.h):\n"
                        + "\n".join(others))


def test_queue_inject_is_read_in_lib_inject_alone():
    hits = grep(r'getenv\("QUEUE_INJECT"\)', ["bin/*.c", "lib/*.c"])
    assert [h.split(":")[0] for h in hits] == ["lib/inject.c"], "\n".join(hits)


def test_every_lib_module_is_on_the_map_in_hacking_md():
    """doc/hacking.md's module list names every lib/ module, so a newcomer finds it."""
    text = read(os.path.join(ROOT, "doc", "hacking.md"))
    names = sorted(os.path.basename(p)[:-2] for p in glob.glob(os.path.join(ROOT, "lib", "*.c")))
    missing = [n for n in names if "`%s`" % n not in text and "`%s.c`" % n not in text]
    assert not missing, "lib/ modules not in doc/hacking.md's module list: %s" % missing
