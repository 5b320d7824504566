/* unit: msgcache (entries written and read back, name check, torn tail, bad hash, a new
 * UIDVALIDITY, a file replaced by another session). Runs in an empty directory. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "msgcache.h"
#include "check.h"
char const *PROG = "unit-msgcache";

static msgcache_ent ent(char const *env, char const *hdr)
{
  msgcache_ent e;
  memset(&e, 0, sizeof e);
  e.wsize = 1234;
  e.mtime = 1700000000;
  e.flags = MSGCACHE_F_HDR;
  e.env = env;
  e.envlen = strlen(env);
  e.bs = "(\"text\" \"plain\")";
  e.bslen = strlen(e.bs);
  e.body = "(body)";
  e.bodylen = 6;
  e.hdr = hdr;
  e.hdrlen = strlen(hdr);
  return e;
}

static off_t fsize(void)
{
  struct stat st;
  return stat(MSGCACHE_FILE, &st) < 0 ? -1 : st.st_size;
}

int main(void)
{
  msgcache c = MSGCACHE_ZERO, d = MSGCACHE_ZERO;
  msgcache_ent e = ent("(\"env one\")", "Subject: one\n\n"), g;
  msgcache_ent e2 = ent("(\"env\ntwo\")", "Subject: two\n\n");
  off_t good;
  int fd;
  CHECK(msgcache_sum("abcdefghijk", 11, 1) == msgcache_sum("abcdefghijk", 11, 1));
  CHECK(msgcache_sum("abcdefghijk", 11, 1) != msgcache_sum("abcdefghijl", 11, 1));
  CHECK(msgcache_sum("abcdefghijk", 11, 1) != msgcache_sum("bbcdefghijk", 11, 1));
  CHECK(msgcache_sum("a", 1, 1) != msgcache_sum("a\0", 2, 1));
  msgcache_init(&c, ".", 77);
  CHECK(msgcache_get(&c, 1, "1.M1.h,S=5:2,S", &g) == 0);
  CHECK(msgcache_put(&c, 1, "1.M1.h,S=5:2,S", &e) == 1);
  CHECK(msgcache_put(&c, 2, "2.M2.h,S=5", &e2) == 1);
  CHECK(msgcache_done(&c, 2) == 1);
  /* read back; the flags part of the name does not matter, the unique part does */
  CHECK(msgcache_get(&c, 1, "1.M1.h,S=5:2,FS", &g) == 1);
  CHECK(g.envlen == e.envlen && !memcmp(g.env, e.env, e.envlen));
  CHECK(g.hdrlen == e.hdrlen && !memcmp(g.hdr, "Subject: one\n\n", g.hdrlen));
  CHECK(g.wsize == 1234 && g.mtime == 1700000000 && g.flags == MSGCACHE_F_HDR);
  CHECK(msgcache_get(&c, 2, "2.M2.h,S=5:2,", &g) == 1);
  CHECK(g.envlen == e2.envlen && !memcmp(g.env, e2.env, g.envlen));
  CHECK(msgcache_get(&c, 1, "9.M9.h,S=5:2,S", &g) == 0); /* another file, same UID */
  CHECK(msgcache_get(&c, 3, "1.M1.h,S=5:2,S", &g) == 0);
  msgcache_done(&c, 2);
  good = fsize();
  /* another session sees the same */
  msgcache_init(&d, ".", 77);
  CHECK(msgcache_get(&d, 2, "2.M2.h,S=5", &g) == 1);
  msgcache_done(&d, 2);
  /* a torn tail: not used, and cut off by the next writer */
  fd = open(MSGCACHE_FILE, O_WRONLY | O_APPEND);
  CHECK(fd >= 0);
  CHECK(write(fd, "E 0123456789 3 17000", 20) == 20);
  close(fd);
  msgcache_close(&d);
  msgcache_init(&d, ".", 77);
  CHECK(msgcache_get(&d, 1, "1.M1.h,S=5", &g) == 1);
  CHECK(msgcache_get(&d, 3, "3.M3.h", &g) == 0);
  CHECK(msgcache_put(&d, 3, "3.M3.h", &e) == 1);
  CHECK(msgcache_done(&d, 3) == 1);
  CHECK(fsize() > good);
  CHECK(msgcache_get(&d, 3, "3.M3.h", &g) == 1);
  CHECK(msgcache_get(&c, 3, "3.M3.h", &g) == 1); /* c reads what d appended */
  msgcache_done(&c, 3);
  msgcache_done(&d, 3);
  /* a changed byte: that entry no longer checks out; the others still do */
  fd = open(MSGCACHE_FILE, O_RDWR);
  {
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf);
    char *p = 0;
    ssize_t k;
    for (k = 0; k + 7 <= n && !p; k++)
      if (!memcmp(buf + k, "env one", 7)) p = buf + k;
    CHECK(p != 0);
    if (p) {
      CHECK(pwrite(fd, "E", 1, p - buf) == 1);
    }
  }
  close(fd);
  msgcache_close(&d);
  msgcache_init(&d, ".", 77);
  CHECK(msgcache_get(&d, 1, "1.M1.h,S=5", &g) == 0);
  CHECK(msgcache_get(&d, 1, "1.M1.h,S=5", &g) == 0); /* (remembered as bad) */
  CHECK(msgcache_get(&d, 3, "3.M3.h", &g) == 1);
  msgcache_done(&d, 3);
  /* a new UIDVALIDITY: the file starts afresh (a new file: c keeps its old one mapped) */
  msgcache_close(&d);
  msgcache_init(&d, ".", 78);
  CHECK(msgcache_get(&d, 2, "2.M2.h,S=5", &g) == 0);
  CHECK(msgcache_put(&d, 2, "2.M2.h", &e2) == 1);
  CHECK(msgcache_done(&d, 1) == 1);
  CHECK(msgcache_get(&d, 2, "2.M2.h", &g) == 1);
  msgcache_done(&d, 1);
  {
    char buf[16];
    int f = open(MSGCACHE_FILE, O_RDONLY);
    CHECK(f >= 0 && read(f, buf, 11) == 11 && !memcmp(buf, "PBC2 V78 K", 10));
    close(f);
  }
  /* c (UIDVALIDITY 77) sees that the file was replaced and finds nothing of its own */
  CHECK(msgcache_get(&c, 1, "1.M1.h,S=5", &g) == 0);
  msgcache_done(&c, 1);
  /* names with a space or a newline are not cached */
  CHECK(msgcache_put(&d, 5, "5 M5", &e) == 0);
  msgcache_close(&c);
  msgcache_close(&d);
  /* the mark: once a quarter MB of entries is appended, they are hashed (those others
   * wrote), the file is synced and the header's mark moves to the end; entries before it
   * are used without their hash. A torn mark is not believed. */
  {
    static char big[100001];
    char head[64];
    msgcache_ent b;
    int f;
    ssize_t n;
    memset(big, 'x', sizeof big - 1);
    memcpy(big, "(\"big", 5);
    b = ent(big, "Subject: big\n\n");
    msgcache_init(&d, ".", 79);
    CHECK(msgcache_put(&d, 1, "1.M1.h", &e) == 1);
    CHECK(msgcache_done(&d, 1) == 1); /* small: the mark stays after the header */
    f = open(MSGCACHE_FILE, O_RDONLY);
    n = read(f, head, sizeof head);
    close(f);
    CHECK(n > 34 && !memcmp(head, "PBC2 V79 K0000000032 ", 21) && head[31] == '\n');
    CHECK(msgcache_put(&d, 2, "2.M2.h", &b) == 1 && msgcache_put(&d, 3, "3.M3.h", &b) == 1 &&
          msgcache_put(&d, 4, "4.M4.h", &b) == 1);
    CHECK(msgcache_done(&d, 4) == 1);
    f = open(MSGCACHE_FILE, O_RDWR);
    n = read(f, head, sizeof head);
    {
      char want[16];
      snprintf(want, sizeof want, "%010lld", (long long)fsize());
      CHECK(n > 32 && !memcmp(head + 10, want, 10));
    }
    /* an entry before the mark is believed without its hash: change a byte of entry 1 */
    {
      char buf[200];
      ssize_t k, m = pread(f, buf, sizeof buf, 0);
      for (k = 0; k + 7 <= m; k++)
        if (!memcmp(buf + k, "env one", 7)) break;
      CHECK(k + 7 <= m && pwrite(f, "ENV", 3, k) == 3);
    }
    msgcache_close(&d);
    msgcache_init(&d, ".", 79);
    CHECK(msgcache_get(&d, 1, "1.M1.h", &g) == 1 && !memcmp(g.env, "(\"ENV one", 9));
    CHECK(msgcache_get(&d, 3, "3.M3.h", &g) == 1 && g.envlen == sizeof big - 1);
    msgcache_done(&d, 4);
    msgcache_close(&d);
    /* that session walked the entries before the mark: it wrote their index, which the
     * next one reads (the same answers); an index that does not check out is ignored */
    {
      struct stat st;
      int x;
      char b;
      CHECK(stat(MSGCACHE_INDEX, &st) == 0 && st.st_size > 32 + 4 * 8);
      msgcache_init(&d, ".", 79);
      CHECK(msgcache_get(&d, 4, "4.M4.h", &g) == 1 && g.envlen == sizeof big - 1);
      CHECK(msgcache_get(&d, 1, "1.M1.h", &g) == 1);
      CHECK(msgcache_get(&d, 2, "3.M3.h", &g) == 0); /* UID and name both */
      msgcache_done(&d, 4);
      msgcache_close(&d);
      x = open(MSGCACHE_INDEX, O_RDWR);
      CHECK(x >= 0 && pread(x, &b, 1, st.st_size - 3) == 1);
      b ^= 1;
      CHECK(pwrite(x, &b, 1, st.st_size - 3) == 1);
      close(x);
      msgcache_init(&d, ".", 79);
      CHECK(msgcache_get(&d, 4, "4.M4.h", &g) == 1 && msgcache_get(&d, 2, "2.M2.h", &g) == 1);
      msgcache_done(&d, 4);
      msgcache_close(&d);
    }
    /* a torn mark (one digit changed, its hash no longer matches): every entry is hashed */
    CHECK(pwrite(f, head[19] == '9' ? "8" : "9", 1, 19) == 1);
    msgcache_init(&d, ".", 79);
    CHECK(msgcache_get(&d, 1, "1.M1.h", &g) == 0);
    CHECK(msgcache_get(&d, 3, "3.M3.h", &g) == 1);
    msgcache_done(&d, 4);
    msgcache_close(&d);
    close(f);
  }
  return CHECK_DONE();
}
