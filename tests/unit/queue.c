/* unit: queue file encode/decode, envelope parsing, state files, injection */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>
#include <skalibs/stralloc.h>
#include "queue.h"
#include "check.h"
char const *PROG = "unit-queue";

#define E(s) s, sizeof(s) - 1

static int count(char const *dir)
{
  DIR *d = opendir(dir);
  struct dirent *de;
  int n = 0;
  if (!d) return -1;
  while ((de = readdir(d)))
    if (de->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

int main(void)
{
  queue_env e;
  queue_hdr h;
  stralloc sa = STRALLOC_ZERO, id = STRALLOC_ZERO, env = STRALLOC_ZERO;

  /* envelopes */
  CHECK(queue_env_parse(E("Fa@b\0Tc@d\0Te@f\0\0"), 256, 10, &e) == QX_OK);
  CHECK(e.nrcpt == 2 && e.senderlen == 3 && !memcmp(e.sender, "a@b", 3));
  {
    char const s[] = "Fa@b\0Tc@d\0Te@f\0\0", *r;
    size_t pos = e.rcptoff, rl;
    CHECK(queue_env_next(s, sizeof s - 1, &pos, &r, &rl) == 1 && rl == 3 && !memcmp(r, "c@d", 3));
    CHECK(queue_env_next(s, sizeof s - 1, &pos, &r, &rl) == 1 && rl == 3 && !memcmp(r, "e@f", 3));
    CHECK(queue_env_next(s, sizeof s - 1, &pos, &r, &rl) == 0);
  }
  CHECK(queue_env_parse(E("F\0Tc@d\0\0"), 256, 10, &e) == QX_OK && e.senderlen == 0);
  CHECK(queue_env_parse(E("Tc@d\0\0"), 256, 10, &e) == QX_ENVELOPE);      /* no F */
  CHECK(queue_env_parse(E("Fa@b\0\0"), 256, 10, &e) == QX_ENVELOPE);      /* no T */
  CHECK(queue_env_parse(E("Fa@b\0Tc@d\0"), 256, 10, &e) == QX_ENVELOPE);  /* truncated */
  CHECK(queue_env_parse(E("Fa@b\0Tc@d"), 256, 10, &e) == QX_ENVELOPE);    /* truncated */
  CHECK(queue_env_parse(E("Fa@b"), 256, 10, &e) == QX_ENVELOPE);
  CHECK(queue_env_parse("", 0, 256, 10, &e) == QX_ENVELOPE);
  CHECK(queue_env_parse(E("Fa@b\0Tc\0d\0\0"), 256, 10, &e) == QX_ENVELOPE); /* NUL inside */
  CHECK(queue_env_parse(E("Fa@b\0Tc\r@d\0\0"), 256, 10, &e) == QX_ENVELOPE);
  CHECK(queue_env_parse(E("Fa\n@b\0Tc@d\0\0"), 256, 10, &e) == QX_ENVELOPE);
  CHECK(queue_env_parse(E("Fa@b\0T\0\0"), 256, 10, &e) == QX_ENVELOPE);     /* empty rcpt */
  CHECK(queue_env_parse(E("Fa@b\0Tc@d\0\0x"), 256, 10, &e) == QX_ENVELOPE); /* trailing */
  CHECK(queue_env_parse(E("Fa@b\0Tcc@dd\0\0"), 4, 10, &e) == QX_ADDRLONG);
  CHECK(queue_env_parse(E("Faaa@bbb\0Tc@d\0\0"), 4, 10, &e) == QX_ADDRLONG);
  CHECK(queue_env_parse(E("Fa@b\0Tc@d\0Te@f\0\0"), 256, 1, &e) == QX_REFUSED);

  /* header lines */
  CHECK(queue_hdr_fmt(&sa, 1700000000, 17, 12345));
  CHECK(sa.len == strlen("PBQ1 1700000000 17 12345\n") &&
        !memcmp(sa.s, "PBQ1 1700000000 17 12345\n", sa.len));
  CHECK(queue_hdr_parse(sa.s, sa.len, &h) == 1);
  CHECK(h.arrival == 1700000000 && h.envlen == 17 && h.msglen == 12345 && h.linelen == sa.len);
  CHECK(h.offset == sa.len + 17);
  CHECK(queue_hdr_parse(E("PBQ1 1 2 3"), &h) == 0);      /* no newline */
  CHECK(queue_hdr_parse(E("PBQ2 1 2 3\n"), &h) == 0);
  CHECK(queue_hdr_parse(E("PBQ1 1 2\n"), &h) == 0);
  CHECK(queue_hdr_parse(E("PBQ1 1 02 3\n"), &h) == 0);   /* leading zero */
  CHECK(queue_hdr_parse(E("PBQ1 1 -2 3\n"), &h) == 0);
  CHECK(queue_hdr_parse(E("PBQ1 1 99999999999999999999 3\n"), &h) == 0);
  CHECK(queue_hdr_parse(E("PBQ1 1 2 3 \n"), &h) == 0);

  /* ids */
  CHECK(queue_id_ok(E("1700000000.000001.123")));
  CHECK(!queue_id_ok(E("../x")) && !queue_id_ok(E("")) && !queue_id_ok(E(".1")));
  CHECK(!queue_id_ok(E("1/2")));

  /* state files */
  {
    queue_target t[2], *u = 0;
    size_t n = 0;
    memset(t, 0, sizeof t);
    t[0].state = QUEUE_T_LOCAL;
    t[0].attempts = 3;
    t[0].next = 1700000100;
    t[0].rcpt = 0;
    t[0].addr = "bob@example.test";
    t[0].diag = "x-pillarbox; over quota";
    t[1].state = QUEUE_T_DONE;
    t[1].rcpt = 1;
    t[1].addr = "x@remote.test";
    t[1].diag = "";
    sa.len = 0;
    CHECK(queue_state_fmt(&sa, t, 2));
    CHECK(queue_state_parse(sa.s, sa.len, &u, &n) == 1 && n == 2);
    CHECK(u[0].state == 'L' && u[0].attempts == 3 && u[0].next == 1700000100 && u[0].rcpt == 0);
    CHECK(!strcmp(u[0].addr, "bob@example.test") && !strcmp(u[0].diag, "x-pillarbox; over quota"));
    CHECK(u[1].state == 'D' && !strcmp(u[1].addr, "x@remote.test") && !strcmp(u[1].diag, ""));
    CHECK(queue_target_setdiag(&u[1], E("a\nb\tc\rd")) && !strcmp(u[1].diag, "a b c d"));
    queue_targets_free(u, n);
    free(u);
    CHECK(queue_state_parse(sa.s, sa.len - 1, &u, &n) == 0); /* truncated */
    CHECK(queue_state_parse(E("PBS1 1\nL 0 0 0 a@b\tx\nextra"), &u, &n) == 0);
    CHECK(queue_state_parse(E("PBS1 1\nQ 0 0 0 a@b\tx\n"), &u, &n) == 0);
    CHECK(queue_state_parse(E("PBS1 2\nL 0 0 0 a@b\tx\n"), &u, &n) == 0);
    CHECK(queue_state_parse(E("PBS1 1\nL 0 0 0 \tx\n"), &u, &n) == 0);
    CHECK(queue_state_parse(E("PBS1 0\n"), &u, &n) == 1 && n == 0);
    free(u);
  }

  /* injection: one complete file in mess/, nothing in tmp/, readable back */
  CHECK(queue_init("q") == 1);
  CHECK(count("q/tmp") == 0 && count("q/mess") == 0);
  CHECK(queue_inject_mem("q", E("Fa@b\0Tc@d\0\0"), E("Subject: x\n\nbody\n"), &id) == QX_OK);
  CHECK(count("q/mess") == 1 && count("q/tmp") == 0);
  CHECK(queue_id_ok(id.s, id.len - 1));
  {
    uint64_t size;
    char buf[64];
    int fd = queue_open("q", id.s, &h, &env, &size);
    CHECK(fd >= 0);
    CHECK(env.len == 11 && !memcmp(env.s, "Fa@b\0Tc@d\0\0", 11));
    CHECK(h.msglen == 17 && size == h.offset + 17);
    CHECK(read(fd, buf, sizeof buf) == 17 && !memcmp(buf, "Subject: x\n\nbody\n", 17));
    close(fd);
  }
  {
    /* a second injection from the same process gets another id */
    stralloc id2 = STRALLOC_ZERO;
    CHECK(queue_inject_mem("q", E("Fa@b\0Tc@d\0\0"), E("x\n"), &id2) == QX_OK);
    CHECK(strcmp(id.s, id2.s) != 0 && count("q/mess") == 2);
    /* a truncated file is reported as corrupt */
    {
      stralloc p = STRALLOC_ZERO;
      CHECK(stralloc_cats(&p, "q/mess/") && stralloc_cats(&p, id2.s) && stralloc_0(&p));
      CHECK(truncate(p.s, 20) == 0);
      errno = 0;
      CHECK(queue_open("q", id2.s, &h, &env, 0) < 0 && errno == EPROTO);
      CHECK(queue_remove("q", id2.s) == 1 && count("q/mess") == 1);
      stralloc_free(&p);
    }
    /* a message without a state file goes with one unlink; gone already is fine */
    CHECK(queue_inject_mem("q", E("Fa@b\0Tc@d\0\0"), E("x\n"), &id2) == QX_OK);
    CHECK(count("q/mess") == 2);
    CHECK(queue_remove_mess("q", id2.s) == 1 && count("q/mess") == 1);
    CHECK(queue_remove_mess("q", id2.s) == 1);
    stralloc_free(&id2);
  }
  CHECK(queue_open("q", "1.000000.1", &h, &env, 0) < 0 && errno == ENOENT);
  /* state names for people */
  CHECK(!strcmp(queue_t_name(QUEUE_T_LOCAL), "pending-local"));
  CHECK(!strcmp(queue_t_name(QUEUE_T_BOUNCED), "bounced"));
  CHECK(!strcmp(queue_t_name('?'), "unknown"));
  return CHECK_DONE();
}
