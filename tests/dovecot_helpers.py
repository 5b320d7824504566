"""Debian's Dovecot started on loopback for the tests and benchmarks that compare with it.

The instance lives in a directory of its own under /tmp (mode 0755: Dovecot's login and mail
processes run as dovenull and nobody and must reach it), listens on one high port, has one
passwd-file user and Maildir storage, and is stopped by stop().
"""
import os
import shutil
import subprocess
import tempfile
import time

import conftest

DOVECOT = "/usr/sbin/dovecot"

CONF = """base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = {protocols}
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = {d}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}/home/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
default_login_user = dovenull
default_internal_user = dovecot
{extra}
"""


def usable():
    """The reason Dovecot cannot be started here, or None."""
    if not os.path.exists(DOVECOT):
        return "Debian's dovecot-core is not installed"
    if os.geteuid() != 0:
        return "Dovecot's master process must start as root"
    return None


class Dovecot:
    def __init__(self, user="tuser", password="tpass", protocols="imap", extra=""):
        self.dir = tempfile.mkdtemp(prefix="pb-dovecot-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        for sub in ("run", "state", "home"):
            os.mkdir(os.path.join(self.dir, sub))
        shutil.chown(os.path.join(self.dir, "home"), "nobody", "nogroup")
        with open(os.path.join(self.dir, "passwd"), "w") as f:
            f.write("%s:{PLAIN}%s\n" % (user, password))
        self.user, self.password = user, password
        self.port = conftest.free_port()
        self.pop3_port = conftest.free_port() if "pop3" in protocols else 0
        self.conf = os.path.join(self.dir, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write(CONF.format(d=self.dir, protocols=protocols, imap_port=self.port,
                                pop3_port=self.pop3_port, extra=extra))

    def maildir(self):
        return os.path.join(self.dir, "home", self.user, "Maildir")

    def start(self):
        # the daemon keeps its stdout/stderr: give it files, not pipes we would wait on
        with open(os.path.join(self.dir, "start.log"), "wb") as log:
            r = subprocess.run([DOVECOT, "-c", self.conf], stdin=subprocess.DEVNULL,
                               stdout=log, stderr=log, timeout=30)
        assert r.returncode == 0, open(os.path.join(self.dir, "start.log")).read()
        conftest.wait_for(lambda: self._listening(), timeout=15, what="dovecot listening")
        return self

    def _listening(self):
        import socket
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self):
        subprocess.run([DOVECOT, "-c", self.conf, "stop"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        pidfile = os.path.join(self.dir, "run", "master.pid")
        deadline = time.monotonic() + 15
        while os.path.exists(pidfile) and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(self.dir, ignore_errors=True)
