/* unit: the counting key of a client address (lib/ipkey) and per-address slots (lib/connlimit)
 * and failed-login counting by it (lib/authfail) */
#include <stdlib.h>
#include <string.h>

#include "authfail.h"
#include "connlimit.h"
#include "ipkey.h"
#include "check.h"
char const *PROG = "unit-ipkey";

static char const *key(char const *ip, unsigned int bits)
{
  static char k[IPKEY_MAX];
  ipkey(ip, bits, k);
  return k;
}

int main(void)
{
  char k1[IPKEY_MAX];
  CHECK(!strcmp(key("192.0.2.7", 0), "192.0.2.7"));
  CHECK(!strcmp(key("::ffff:192.0.2.7", 0), "192.0.2.7"));
  CHECK(!strcmp(key("2001:db8:1:2::1", 0), "20010db8000100020000000000000000-64"));
  strcpy(k1, key("2001:db8:1:2:ffff:ffff:ffff:ffff", 64));
  CHECK(!strcmp(k1, key("2001:0db8:0001:0002::", 64)));
  CHECK(strcmp(k1, key("2001:db8:1:3::1", 64)));
  CHECK(!strcmp(key("2001:db8:1:2::1", 48), "20010db8000100000000000000000000-48"));
  CHECK(!strcmp(key("2001:db8:1:2::1", 128), "20010db8000100020000000000000001-128"));
  CHECK(!strcmp(key("2001:db8:1:2::1", 60), "20010db8000100000000000000000000-60"));
  CHECK(!strcmp(key("2001:db8:1:2f::1", 60), "20010db8000100200000000000000000-60"));
  CHECK(!strcmp(key("../etc/x", 0), "x.._etc_x"));
  CHECK(!strcmp(key(0, 0), "xunknown"));
  CHECK(!strchr(key("fe80::1%eth0", 0), '/'));

  /* connlimit: 2 slots per key; the same /64 shares them, released slots come back */
  setenv("MAILROOT", ".", 1);
  {
    connlimit a = CONNLIMIT_ZERO, b = CONNLIMIT_ZERO, c = CONNLIMIT_ZERO, d = CONNLIMIT_ZERO;
    CHECK(connlimit_take(&a, "t", "2001:db8::1", 2, 64, 0) == 1);
    CHECK(connlimit_take(&b, "t", "2001:db8::2", 2, 64, 0) == 1);
    CHECK(connlimit_take(&c, "t", "2001:db8::3", 2, 64, 0) == 0);
    CHECK(connlimit_take(&d, "t", "2001:db9::3", 2, 64, 0) == 1);
    connlimit_release(&a);
    CHECK(connlimit_take(&c, "t", "2001:db8::3", 2, 64, 0) == 1);
    connlimit_release(&b);
    connlimit_release(&c);
    connlimit_release(&d);
  }

  /* authfail: attempts recorded before the check; 10 go through, the 11th is refused; a good
   * login takes one back; IPv6 counts by /64 */
  {
    unsigned int i, ok = 0;
    for (i = 0; i < 30; i++) ok += authfail_attempt_at("2001:db8:5:6::1", 1000000) == 1;
    CHECK(ok == AUTHFAIL_LIMIT + 1);
    CHECK(authfail_blocked_at("2001:db8:5:6:abcd::9", 1000001) == 1);
    CHECK(authfail_blocked_at("2001:db8:5:7::1", 1000001) == 0);
    CHECK(authfail_blocked_at("2001:db8:5:6::1", 1000000 + AUTHFAIL_BLOCK + 10) == 0);
    for (i = 0; i < 20; i++) {
      CHECK(authfail_attempt_at("192.0.2.50", 2000000) == 1);
      CHECK(authfail_forgive_at("192.0.2.50", 2000000) == 0);
    }
    CHECK(authfail_blocked_at("192.0.2.50", 2000000) == 0);
    /* parallel sessions can take the lock in another order than they read the clock: a
     * reading a second behind the window's start counts in that window, it does not restart
     * it (30 at once across a second's turn saw 12 checked) */
    ok = 0;
    for (i = 0; i < 30; i++)
      ok += authfail_attempt_at("192.0.2.60", 3000000 + (i & 1 ? 0 : 1)) == 1;
    CHECK(ok == AUTHFAIL_LIMIT + 1);
    /* a clock stepped back by more than a window starts a new one */
    for (i = 0; i < AUTHFAIL_LIMIT; i++) CHECK(authfail_attempt_at("192.0.2.61", 4000000) == 1);
    CHECK(authfail_attempt_at("192.0.2.61", 4000000 - AUTHFAIL_WINDOW) == 1);
    CHECK(authfail_blocked_at("192.0.2.61", 4000000 - AUTHFAIL_WINDOW) == 0);
    /* the calls without a clock read it under the lock */
    for (i = 0; i < 30; i++) ok += authfail_attempt("192.0.2.62") == 1;
    CHECK(ok == 2 * (AUTHFAIL_LIMIT + 1));
    CHECK(authfail_blocked("192.0.2.62") == 1);
  }
  return CHECK_DONE();
}
