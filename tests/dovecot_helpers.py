"""Debian's Dovecot 2.3 (dovecot-imapd) as a reference IMAP server for tests: started with its
own configuration in a temporary directory, on a loopback high port, plaintext login allowed,
one passwd-file user whose Maildir the test fills. When run as root Dovecot runs as `nobody`
(it refuses uid 0 for mail), otherwise as the invoking user."""
import imaplib
import os
import pwd
import grp
import shutil
import subprocess
import tempfile

from conftest import free_port, wait_for, stop_procs

DOVECOT = shutil.which("dovecot") or (os.path.exists("/usr/sbin/dovecot") and "/usr/sbin/dovecot")

CONF = """
base_dir = {tmp}/run
state_dir = {tmp}/state
log_path = {tmp}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
first_valid_uid = {uid}
last_valid_uid = {uid}
mail_location = maildir:{tmp}/Maildir:INDEX=MEMORY
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {tmp}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={tmp}/home
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0
  }}
  unix_listener stats-writer {{
    mode = 0
  }}
}}
"""

USER = "ref@example.test"
PASSWORD = "ref password"


class Dovecot:
    """A running Dovecot over tmp/Maildir; messages put into tmp/Maildir/cur in sorted name order
    get sequence numbers 1..n."""

    def __init__(self, tmp):
        # As root Dovecot runs as nobody, which must reach the directory: pytest's temporary
        # directories are 0700 root, so a directory of our own under /tmp is used (and removed).
        self.own = os.geteuid() == 0
        self.tmp = tempfile.mkdtemp(prefix="pb-dovecot-") if self.own else str(tmp)
        self.proc = None
        self.port = None

    def maildir(self):
        return os.path.join(self.tmp, "Maildir")

    def put(self, messages):
        """Writes the messages (bytes, stored as deliver-maildir stores them) into the Maildir."""
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(self.maildir(), sub), exist_ok=True)
        for i, m in enumerate(messages):
            with open(os.path.join(self.maildir(), "cur", "%010d.M1P1.ref:2," % (i + 1)), "wb") as f:
                f.write(m)

    def start(self):
        if os.geteuid() == 0:
            pw = pwd.getpwnam("nobody")
        else:
            pw = pwd.getpwuid(os.geteuid())
        group = grp.getgrgid(pw.pw_gid).gr_name
        for d in ("run", "state", "home"):
            os.makedirs(os.path.join(self.tmp, d), exist_ok=True)
        with open(os.path.join(self.tmp, "passwd"), "w") as f:
            f.write("%s:{PLAIN}%s::::::\n" % (USER, PASSWORD))
        self.port = free_port()
        conf = os.path.join(self.tmp, "dovecot.conf")
        with open(conf, "w") as f:
            f.write(CONF.format(tmp=self.tmp, user=pw.pw_name, group=group, uid=pw.pw_uid,
                                gid=pw.pw_gid, port=self.port))
        if os.geteuid() == 0:
            for dirpath, dirnames, filenames in os.walk(self.tmp):
                os.chown(dirpath, pw.pw_uid, pw.pw_gid)
                for n in filenames:
                    os.chown(os.path.join(dirpath, n), pw.pw_uid, pw.pw_gid)
            os.chmod(self.tmp, 0o755)
            cmd = ["s6-setuidgid", pw.pw_name, DOVECOT, "-F", "-c", conf]
        else:
            cmd = [DOVECOT, "-F", "-c", conf]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.tmp, "dovecot.err"), "w"))

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("dovecot exited: " + self.log())
            try:
                c = imaplib.IMAP4("127.0.0.1", self.port, timeout=5)
            except OSError:
                return False
            c.logout()
            return True
        wait_for(up, timeout=20, what="dovecot listening")

    def log(self):
        out = ""
        for n in ("dovecot.err", "dovecot.log"):
            try:
                out += open(os.path.join(self.tmp, n)).read()
            except OSError:
                pass
        return out

    def login(self):
        c = imaplib.IMAP4("127.0.0.1", self.port, timeout=30)
        typ, _ = c.login(USER, PASSWORD)
        assert typ == "OK"
        typ, _ = c.select("INBOX", readonly=True)
        assert typ == "OK"
        return c

    def stop(self):
        if self.proc:
            stop_procs([self.proc])
            self.proc = None
        if self.own:
            shutil.rmtree(self.tmp, ignore_errors=True)


def fetch_raw(client, seq, item):
    """FETCH seq (item) and returns the reply's bytes after "* seq FETCH (" with the literals
    inlined as {n}\\r\\n<bytes> and without the final ")": exactly what the server sent; for a
    tagged NO, "NO [CODE]"."""
    client.untagged_responses.pop("FETCH", None)
    typ, data = client.fetch(str(seq), "(%s)" % item)
    if typ == "NO":
        # the response code only ("NO [UNKNOWN-CTE]"): the text is the server's own
        return b"NO " + data[-1].split(b"]")[0] + b"]"
    assert typ == "OK", data
    out = b""
    for d in data:
        if isinstance(d, tuple):
            out += d[0] + b"\r\n" + d[1]
        else:
            out += d
    prefix = b"%d (" % seq
    assert out.startswith(prefix), out
    assert out.endswith(b")"), out
    return out[len(prefix):-1]
