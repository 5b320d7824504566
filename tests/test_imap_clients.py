"""IMAP end to end with real clients: Python's imaplib (STARTTLS and IMAP4_SSL), curl
(imap:// with STARTTLS and imaps://: list, fetch, search, APPEND by upload), mbsync (isync)
syncing both ways, and fetchmail with IDLE, through
tcpserver -> tls-serve [-S] -> imap-serve -> auth-check -> imap-maildir on loopback; and the
service templates (imap, imaps, login-imap, auth) as an instance gets them."""
import imaplib
import os
import re
import shutil
import signal
import socket
import subprocess

import pytest

from access_helpers import (PASSWORD, USER, Servers, copy_service, listening,
                            mailbox, put, start_listening_service,  # noqa: F401 (mailbox)
                            start_notifying_services, tls_context, wire)
from conftest import free_port, stop_procs, wait_for
from tls_helpers import make_cert


@pytest.fixture
def servers(mailbox):
    with Servers(mailbox, "imap", log="imap-servers.log") as s:
        yield s


def files(instance, folder=""):
    d = instance.maildir(USER)
    if folder:
        d = os.path.join(d, "." + folder)
    return sorted(os.listdir(os.path.join(d, "new")) + os.listdir(os.path.join(d, "cur")))


# ---- imaplib ----

def close(m):
    """Closes an imaplib connection whatever state it is in (logout() closes it already)."""
    try:
        m.shutdown()
    except OSError:
        pass


def test_imaplib_starttls(servers):
    _, m1 = put(servers.instance, 1)
    m = imaplib.IMAP4("127.0.0.1", servers.port, timeout=30)
    try:
        assert "STARTTLS" in m.capabilities and "LOGINDISABLED" in m.capabilities
        with pytest.raises(imaplib.IMAP4.error):
            m.login(USER, PASSWORD)  # refused in plaintext
        assert m.starttls(ssl_context=tls_context())[0] == "OK"
        assert "STARTTLS" not in m.capabilities and "AUTH=PLAIN" in m.capabilities
        typ, data = m.login(USER, PASSWORD)
        assert typ == "OK"
        caps = m.capability()[1][0].split()  # imaplib keeps the pre-login list: ask again
        assert b"IDLE" in caps and b"UIDPLUS" in caps and b"STARTTLS" not in caps
        assert m.select("INBOX") == ("OK", [b"1"])
        typ, data = m.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK" and data[0][1] == wire(m1)
        assert m.logout()[0] == "BYE"
    finally:
        close(m)


def test_imaplib_ssl_list_search_store_append(servers):
    put(servers.instance, 1)
    put(servers.instance, 2)
    m = imaplib.IMAP4_SSL("127.0.0.1", servers.sport, ssl_context=tls_context(), timeout=30)
    try:
        assert "LOGINDISABLED" not in m.capabilities and "AUTH=PLAIN" in m.capabilities
        with pytest.raises(imaplib.IMAP4.error) as e:
            m.login(USER, "wrong")
        assert "AUTHENTICATIONFAILED" in str(e.value)
        assert m.login(USER, PASSWORD)[0] == "OK"
        typ, boxes = m.list()
        names = [b.split(b' "." ')[-1] for b in boxes]
        for want in (b"INBOX", b"Sent", b"Drafts", b"Trash", b"Junk", b"Archive"):
            assert any(n.strip(b'"') == want for n in names), boxes
        assert m.select("INBOX")[0] == "OK"
        assert m.search(None, "SUBJECT", '"message 2"') == ("OK", [b"2"])
        assert m.store("1", "+FLAGS", "(\\Flagged)")[0] == "OK"
        typ, data = m.append("Sent", "(\\Seen)", None, b"Subject: sent\r\n\r\nsent body\r\n")
        assert typ == "OK" and b"APPENDUID" in data[0]
        assert m.logout()[0] == "BYE"
    finally:
        close(m)
    inbox = files(servers.instance)
    assert any(re.search(r":2,[A-Z]*F", n) for n in inbox), inbox
    assert len(files(servers.instance, "Sent")) == 1


def test_imaplib_authenticate_plain(servers):
    m = imaplib.IMAP4_SSL("127.0.0.1", servers.sport, ssl_context=tls_context(), timeout=30)
    try:
        typ, _ = m.authenticate("PLAIN", lambda _: b"\0" + USER.encode() + b"\0" +
                                PASSWORD.encode())
        assert typ == "OK"
        assert m.select("INBOX")[0] == "OK"
        m.logout()
    finally:
        close(m)


def test_starttls_injection_through_tls_serve(servers):
    """A command pipelined behind STARTTLS in plaintext is never answered inside TLS."""
    s = socket.create_connection(("127.0.0.1", servers.port), timeout=20)
    try:
        f = s.makefile("rb")
        assert f.readline().startswith(b"* OK [CAPABILITY")
        s.sendall(b"a STARTTLS\r\nb LOGOUT\r\n")
        assert f.readline() == b"a OK Begin TLS negotiation now.\r\n"
        t = tls_context().wrap_socket(s, server_hostname="mx.example.test")
        t.sendall(b"c NOOP\r\n")
        got = b""
        while b"\r\n" not in got:
            chunk = t.recv(4096)
            assert chunk, got
            got += chunk
        assert got.startswith(b"c OK NOOP completed.\r\n"), got  # not the LOGOUT's BYE
        t.sendall(b"d LOGOUT\r\n")
        t.close()
    finally:
        s.close()


# ---- curl ----

def curl(*args, input=None):
    return subprocess.run(["curl", "-sS", "--max-time", "30", "-u", "%s:%s" % (USER, PASSWORD)] +
                          list(args), capture_output=True, timeout=60, input=input)


def test_curl_imaps_list_fetch_search_append(servers, tmp_path):
    s = servers
    _, m1 = put(s.instance, 1)
    put(s.instance, 2)
    base = "imaps://127.0.0.1:%d/" % s.sport
    r = curl("-k", base)
    assert r.returncode == 0, r.stderr
    assert b'"." "INBOX"' in r.stdout and b'\\Trash) "." "Trash"' in r.stdout, r.stdout
    r = curl("-k", base + "INBOX;UID=1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == wire(m1)
    r = curl("-k", base + "INBOX?SUBJECT%20%22message%202%22")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == b"* SEARCH 2"
    msg = tmp_path / "up.eml"
    msg.write_bytes(b"From: me@example.test\r\nSubject: uploaded\r\n\r\nup body\r\n")
    r = curl("-k", "-T", str(msg), base + "Drafts")
    assert r.returncode == 0, r.stderr
    drafts = files(s.instance, "Drafts")
    assert len(drafts) == 1
    d = s.instance.maildir(USER)
    sub = "new" if os.path.exists(os.path.join(d, ".Drafts", "new", drafts[0])) else "cur"
    with open(os.path.join(d, ".Drafts", sub, drafts[0]), "rb") as f:
        assert b"Subject: uploaded" in f.read()


def test_curl_imap_starttls_required(servers):
    s = servers
    _, m1 = put(s.instance, 1)
    url = "imap://127.0.0.1:%d/INBOX;UID=1" % s.port
    r = curl(url)  # no TLS: LOGINDISABLED, curl cannot log in
    assert r.returncode != 0 and wire(m1) not in r.stdout
    r = curl("--ssl-reqd", "-k", url)
    assert r.returncode == 0, r.stderr
    assert r.stdout == wire(m1)


# ---- mbsync ----

def mbsync(tmp_path, port, cert, *args):
    rc = tmp_path / "mbsyncrc"
    local = tmp_path / "local"
    local.mkdir(exist_ok=True)
    rc.write_text(
        "IMAPAccount pb\nHost 127.0.0.1\nPort %d\nUser %s\nPass \"%s\"\nSSLType IMAPS\n"
        "CertificateFile %s\n\n"
        "IMAPStore pb-remote\nAccount pb\n\n"
        "MaildirStore pb-local\nPath %s/\nInbox %s/INBOX\nSubFolders Verbatim\n\n"
        "Channel pb\nFar :pb-remote:\nNear :pb-local:\nPatterns *\nCreate Both\n"
        "Expunge Both\nSyncState *\n" % (port, USER, PASSWORD, cert, local, local))
    return subprocess.run(["mbsync", "-c", str(rc)] + list(args) + ["pb"],
                          capture_output=True, timeout=120, env=dict(os.environ, HOME=str(tmp_path)))


def local_files(tmp_path, box="INBOX"):
    d = tmp_path / "local" / box
    return sorted(os.listdir(d / "new") + os.listdir(d / "cur"))


@pytest.mark.skipif(not shutil.which("mbsync"), reason="needs mbsync (isync)")
def test_mbsync_two_way(servers, tmp_path):
    s = servers
    # mbsync checks the certificate's name against Host: a certificate for 127.0.0.1 (tls-serve
    # loads tls/ at each connection)
    cert, _ = make_cert(s.instance.path("tls"), "127.0.0.1")
    put(s.instance, 1)
    put(s.instance, 2)
    r = mbsync(tmp_path, s.sport, cert)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(local_files(tmp_path)) == 2
    assert (tmp_path / "local" / "Sent").is_dir()  # the folders came too ('.' separator)
    # a flag set on the server reaches the local store
    m = imaplib.IMAP4_SSL("127.0.0.1", s.sport, ssl_context=tls_context(), timeout=30)
    try:
        m.login(USER, PASSWORD)
        m.select("INBOX")
        assert m.store("1", "+FLAGS", "(\\Flagged)")[0] == "OK"
        m.logout()
    finally:
        close(m)
    r = mbsync(tmp_path, s.sport, cert)
    assert r.returncode == 0, r.stdout + r.stderr
    flagged = [n for n in local_files(tmp_path) if re.search(r",[A-Z]*F[A-Z]*$", n)]
    assert len(flagged) == 1, local_files(tmp_path)
    # and a flag set locally reaches the server
    d = tmp_path / "local" / "INBOX"
    other = [n for n in local_files(tmp_path) if n not in flagged][0]
    sub = "cur" if (d / "cur" / other).exists() else "new"
    newname = other + ("S" if ":2," in other else ":2,S")
    os.rename(str(d / sub / other), str(d / "cur" / newname))
    local = tmp_path / "local" / "Drafts"
    os.makedirs(local / "tmp", exist_ok=True)
    (local / "cur" / "1700000099.M1P1.local:2,D").write_bytes(b"Subject: local draft\n\nx\n")
    r = mbsync(tmp_path, s.sport, cert)
    assert r.returncode == 0, r.stdout + r.stderr
    server = files(s.instance)
    assert sum(1 for n in server if re.search(r":2,[A-Z]*S", n)) == 1, server
    assert sum(1 for n in server if re.search(r":2,[A-Z]*F", n)) == 1, server
    assert len(files(s.instance, "Drafts")) == 1
    # a further sync transfers nothing: it only looks (its IMAP dialogue, -Dn), and neither
    # side changes
    before = (local_files(tmp_path), files(s.instance))
    r = mbsync(tmp_path, s.sport, cert, "-Dn")
    assert r.returncode == 0, r.stdout + r.stderr
    out = (r.stdout + r.stderr).decode()
    sent = re.findall(r"^>>> \d+ (.*)$", out, re.M)
    assert sent and any(c.startswith("SELECT") for c in sent), out
    for c in sent:
        assert c.split()[0] in ("AUTHENTICATE", "COMPRESS", "NAMESPACE", "LIST", "SELECT",
                                "CLOSE", "LOGOUT", "UID"), c
        assert "APPEND" not in c and "STORE" not in c and "BODY" not in c, c
    assert (local_files(tmp_path), files(s.instance)) == before


# ---- fetchmail with IDLE ----

@pytest.mark.skipif(not shutil.which("fetchmail"), reason="needs fetchmail")
def test_fetchmail_idle_gets_a_delivery_pushed(servers, tmp_path):
    s = servers
    put(s.instance, 1)
    home = tmp_path / "fmhome"
    home.mkdir()
    out = tmp_path / "fetched"
    out.mkdir()
    rc = home / ".fetchmailrc"
    rc.write_text(
        "set no syslog\nset no bouncemail\n"
        "poll 127.0.0.1 with proto IMAP port %d and options no dns\n"
        "  user \"%s\" there with password \"%s\" is \"%s\" here\n"
        "  options keep idle ssl no sslcertck\n"
        # written whole, then renamed: a file in out/ is a complete message
        "  mda \"/bin/sh -c 'cat > %s/.tmp$$ && mv %s/.tmp$$ %s/$$'\"\n" % (
            s.sport, USER, PASSWORD, os.environ.get("USER", "root"), out, out, out))
    os.chmod(rc, 0o600)
    env = dict(os.environ, HOME=str(home), FETCHMAILHOME=str(home))
    logpath = tmp_path / "fetchmail.log"
    logf = open(logpath, "wb")
    p = subprocess.Popen(["fetchmail", "-v", "-f", str(rc), "-d", "600", "--nodetach",
                          "--nosyslog",
                          "-i", str(home / "fetchids"), "--pidfile", str(home / "fetchmail.pid")],
                         stdout=logf, stderr=subprocess.STDOUT, env=env,
                         start_new_session=True)
    logf.close()

    def idling():
        with open(logpath, "rb") as f:
            return re.search(rb"IMAP> A\d+ IDLE", f.read())

    def fetched():
        got = []
        for n in os.listdir(out):
            if n.startswith("."):
                continue
            with open(out / n, "rb") as f:
                got.append(f.read())
        return got
    try:
        wait_for(lambda: len(fetched()) == 1, timeout=30, what="the first message")
        assert b"Subject: message 1" in fetched()[0]
        # fetchmail stays connected in IDLE: a delivery reaches it at once, not at the next poll
        # (600 s away). Delivered once it has said IDLE (before, its post-fetch look would find
        # the message without IDLE: the race a loaded machine lost)
        wait_for(idling, timeout=30, what="fetchmail's IDLE")
        put(s.instance, 2)
        wait_for(lambda: len(fetched()) == 2, timeout=30, what="the pushed message")
        assert any(b"Subject: message 2" in m for m in fetched()), fetched()
    finally:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        with open(logpath, "rb") as f:
            log = f.read()
    # it was told of the new message in IDLE (its log of the dialogue, -v)
    assert re.search(rb"IMAP> A\d+ IDLE", log), log


# ---- the service templates ----

def test_service_templates(mailbox, tmp_path):
    """services/imap (STARTTLS) and services/imaps (implicit TLS) with login-imap and auth, as
    an instance gets them; each run script must bring up a working server."""
    put(mailbox, 1)
    ports, procs = {}, []
    try:
        start_notifying_services(tmp_path, ("auth", "tls-engine", "login-imap"), mailbox.env,
                                 procs)
        for name in ("imap", "imaps"):
            d = copy_service(tmp_path, name)
            assert (d / "env" / "PORT").read_text().strip() == {"imap": "143", "imaps": "993"}[name]
            ports[name] = free_port()
            (d / "env" / "IP").write_text("127.0.0.1\n")
            start_listening_service(d, ports[name], mailbox.env, procs)
        wait_for(lambda: all(listening(p) for p in ports.values()), what="services")
        m = imaplib.IMAP4("127.0.0.1", ports["imap"], timeout=20)
        try:
            assert "STARTTLS" in m.capabilities
            m.starttls(ssl_context=tls_context())
            assert m.login(USER, PASSWORD)[0] == "OK"
            assert m.select("INBOX") == ("OK", [b"1"])
            m.logout()
        finally:
            close(m)
        m = imaplib.IMAP4_SSL("127.0.0.1", ports["imaps"], ssl_context=tls_context(), timeout=20)
        try:
            assert m.login(USER, PASSWORD)[0] == "OK"
            assert m.select("INBOX") == ("OK", [b"1"])
            m.logout()
        finally:
            close(m)
    finally:
        stop_procs(procs)


# ---- neomutt, driven in tmux ----

@pytest.mark.skipif(not (shutil.which("neomutt") and shutil.which("tmux")),
                    reason="needs neomutt and tmux")
def test_neomutt_reads_and_sees_new_mail(servers, tmp_path):
    s = servers
    put(s.instance, 1)
    rc = tmp_path / "muttrc"
    rc.write_text(
        'set folder="imaps://%s@127.0.0.1:%d/"\n'
        'set spoolfile="+INBOX"\nset imap_pass="%s"\n'
        'set certificate_file="%s"\nset ssl_verify_host=no\n'  # the instance's self-signed one
        'set imap_idle=yes\nset mail_check=1\nset timeout=1\n'
        'set header_cache=""\nset message_cachedir=""\nset sort=date\n'
        % (USER.replace("@", "%40"), s.sport, PASSWORD, s.instance.path("tls", "cert.pem")))
    sock = "pb-%d" % os.getpid()
    env = dict(os.environ, HOME=str(tmp_path), TERM="xterm")

    def tmux(*args):
        return subprocess.run(["tmux", "-L", sock] + list(args), capture_output=True,
                              timeout=30, env=env)

    def screen():
        return tmux("capture-pane", "-p", "-t", "pb").stdout.decode(errors="replace")
    r = tmux("new-session", "-d", "-s", "pb", "-x", "160", "-y", "40",
             "neomutt -n -F %s" % rc)
    assert r.returncode == 0, r.stderr
    try:
        wait_for(lambda: "message 1" in screen(), timeout=30, what="the index")
        # a delivery shows up without a keystroke (IDLE / mail_check)
        put(s.instance, 2)
        wait_for(lambda: "message 2" in screen(), timeout=30, what="the new message")
        # open the older one and read its body
        tmux("send-keys", "-t", "pb", "End", "")
        tmux("send-keys", "-t", "pb", "Enter", "")
        wait_for(lambda: "Hello 1." in screen() or "Hello 2." in screen(), timeout=30,
                 what="a message body")
        tmux("send-keys", "-t", "pb", "q", "")
        tmux("send-keys", "-t", "pb", "q", "")
        # the message read is \Seen on the server once neomutt has quit
        wait_for(lambda: any(re.search(r":2,[A-Z]*S", n) for n in files(s.instance)),
                 timeout=30, what="the \\Seen flag in the Maildir")
    finally:
        tmux("kill-server")
