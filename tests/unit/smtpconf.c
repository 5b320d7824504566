/* unit: smtp-receive's settings, and a pool worker's copy kept while control/ is unchanged */
#include <stdlib.h>
#include <string.h>
#include "smtpconf.h"
#include "check.h"
#include "ctlfile.h"
char const *PROG = "unit-smtpconf";

int main(void)
{
  static smtpconf c;
  mkdir("control", 0755);
  setenv("MAILROOT", ".", 1);
  unsetenv("SMTP_RDNS");
  setenv("TCPREMOTEIP", "127.0.0.1", 1);
  setenv("TCPLOCALHOST", "local.example", 1);
  setenv("SMTPAUTH_PLAINTEXT", "", 1);
  put("domains", "First.example\nsecond.example\n");
  put("databytes", "0\n");
  smtpconf_session(&c, 1);
  CHECK(!strcmp(c.me, "local.example"));            /* no control/me: TCPLOCALHOST */
  CHECK(c.firstdomain.len == 13 && !memcmp(c.firstdomain.s, "First.example", 13));
  CHECK(c.databytes == 36700160 && c.hoplimit == 100 && c.linemax == 2048);
  CHECK(c.v6prefix == 64 && c.sessionmax == 3600 && c.peermax == 10);
  CHECK(!strcmp(c.remoteip, "127.0.0.1") && !c.remotehost);
  CHECK(c.plainok && !c.service && c.offer_auth && !c.local && !c.relayclient);
  CHECK(c.loaded);
  /* the environment is the session's: port 25 offers no AUTH; a foreign peer no plaintext */
  setenv("TCPLOCALPORT", "25", 1);
  setenv("TCPREMOTEIP", "192.0.2.1", 1);
  setenv("RELAYCLIENT", "", 1);
  smtpconf_session(&c, 1);
  CHECK(!strcmp(c.service, "smtpd") && !c.offer_auth && !c.plainok && c.relayclient);
  setenv("SMTP_OFFER_AUTH", "1", 1);
  setenv("SMTP_SERVICE", "local", 1);
  smtpconf_session(&c, 1);
  CHECK(c.local && c.offer_auth && c.defdomain.len == 13 &&
        !memcmp(c.defdomain.s, "first.example", 13));
  /* kept while the stamp vouches for the files (aged here: past the racy window) */
  tick_control();
  smtpconf_session(&c, 1);
  c.stamp.taken.tv_sec += 60;
  c.loaded = 1;
  c.databytes = 1;
  smtpconf_session(&c, 1);
  CHECK(c.databytes == 1);
  /* a change: read again */
  tick_control();
  put("me", "mx.example\n");
  smtpconf_session(&c, 1);
  CHECK(c.databytes == 36700160 && !strcmp(c.me, "mx.example"));
  /* not kept: read each time */
  c.stamp.taken.tv_sec += 60;
  c.databytes = 1;
  smtpconf_session(&c, 0);
  CHECK(c.databytes == 36700160 && !c.loaded);
  return CHECK_DONE();
}
