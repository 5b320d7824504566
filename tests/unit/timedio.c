/* unit: lib/timedio: lines, the too-long rule, pipelined input, EOF, timeouts, STARTTLS switch */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <skalibs/tai.h>

#include "timedio.h"
#include "check.h"
char const *PROG = "unit-timedio";

static timedio t;
static char ib[TIMEDIO_IBUF], ob[TIMEDIO_OBUF];

static int wr(int fd, char const *s)
{
  size_t n = strlen(s);
  return write(fd, s, n) == (ssize_t)n;
}

static int nrest;
static void rested(void)
{
  nrest++;
}

/* the line timedio_getline returns, as a C string ("" when it returned something else) */
static int getl(char *out, size_t max)
{
  static char line[TIMEDIO_IBUF + 1];
  size_t len = 0;
  int r = timedio_getline(&t, line, max, &len);
  out[0] = 0;
  if (r == 1) {
    memcpy(out, line, len);
    out[len] = 0;
  }
  return r;
}

int main(void)
{
  int a[2], b[2];
  char got[TIMEDIO_IBUF + 1];
  static char big[3 * TIMEDIO_IBUF];

  CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, a) == 0);
  CHECK(timedio_init(&t, a[0], a[0], ib, sizeof ib, ob, sizeof ob) == 1);
  CHECK(fcntl(a[0], F_GETFL) & O_NONBLOCK);
  timedio_timeout(&t, 10);

  /* two pipelined lines arrive in one write: both come out, the second without a read */
  CHECK(wr(a[1], "EHLO x\r\nMAIL FROM:<a@b>\r\nRC"));
  CHECK(getl(got, 512) == 1 && !strcmp(got, "EHLO x\r\n"));
  CHECK(timedio_pending(&t) == strlen("MAIL FROM:<a@b>\r\nRC"));
  CHECK(getl(got, 512) == 1 && !strcmp(got, "MAIL FROM:<a@b>\r\n"));
  CHECK(wr(a[1], "PT TO:<c@d>\n"));
  CHECK(getl(got, 512) == 1 && !strcmp(got, "RCPT TO:<c@d>\n"));

  /* exactly max bytes is a line; max + 1 is too long and dropped through its LF */
  CHECK(wr(a[1], "12345678\n123456789\nnext\n"));
  CHECK(getl(got, 9) == 1 && !strcmp(got, "12345678\n"));
  CHECK(getl(got, 9) == TIMEDIO_TOOLONG);
  CHECK(getl(got, 9) == 1 && !strcmp(got, "next\n"));

  /* a line far longer than the buffer, written in pieces: one TOOLONG, then the next line */
  memset(big, 'x', sizeof big);
  CHECK(write(a[1], big, sizeof big) == (ssize_t)sizeof big);
  CHECK(wr(a[1], "tail\nQUIT\n"));
  CHECK(getl(got, 512) == TIMEDIO_TOOLONG);
  CHECK(getl(got, 512) == 1 && !strcmp(got, "QUIT\n"));

  /* output is buffered until a read has to wait: the reply reaches the peer then */
  CHECK(timedio_puts(&t, "250 ok\r\n") == 1);
  CHECK(fcntl(a[1], F_SETFL, O_NONBLOCK) == 0);
  {
    char r[64];
    errno = 0;
    CHECK(read(a[1], r, sizeof r) < 0 && errno == EAGAIN); /* nothing written yet */
    CHECK(fcntl(a[1], F_SETFL, 0) == 0);
    CHECK(wr(a[1], "NOOP\n"));
    CHECK(getl(got, 512) == 1 && !strcmp(got, "NOOP\n")); /* buffered LF: no wait, no flush */
    timedio_timeout(&t, 1);
    CHECK(getl(got, 512) == -1 && errno == ETIMEDOUT);    /* waited, so flushed first */
    CHECK(read(a[1], r, sizeof r) == 8 && !memcmp(r, "250 ok\r\n", 8));
  }

  /* timedio_read: buffered bytes first, then the fd */
  timedio_timeout(&t, 10);
  CHECK(wr(a[1], "DATA\nbody bytes"));
  CHECK(getl(got, 512) == 1 && !strcmp(got, "DATA\n"));
  {
    char r[64];
    ssize_t n = timedio_read(&t, r, sizeof r);
    CHECK(n == 10 && !memcmp(r, "body bytes", 10));
    CHECK(wr(a[1], "more"));
    n = timedio_read(&t, r, sizeof r);
    CHECK(n == 4 && !memcmp(r, "more", 4));
  }

  /* STARTTLS: input pipelined after the command is dropped on the switch */
  CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, b) == 0);
  CHECK(wr(a[1], "STARTTLS\r\nMAIL FROM:<evil@x>\r\n"));
  CHECK(getl(got, 512) == 1 && !strcmp(got, "STARTTLS\r\n"));
  CHECK(timedio_pending(&t) > 0);
  CHECK(timedio_setfds(&t, b[0], b[0]) == 1);
  CHECK(timedio_pending(&t) == 0);
  CHECK(wr(b[1], "EHLO after\r\n"));
  CHECK(getl(got, 512) == 1 && !strcmp(got, "EHLO after\r\n"));

  /* EOF: a last line without LF is not a line */
  CHECK(wr(b[1], "partial"));
  CHECK(shutdown(b[1], SHUT_WR) == 0);
  CHECK(getl(got, 512) == 0);

  /* a peer that never reads: the write times out instead of hanging */
  {
    int c[2], ok = 1, i;
    static char chunk[65536];
    tain d;
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, c) == 0);
    CHECK(fcntl(c[0], F_SETFL, O_NONBLOCK) == 0);
    tain_now_g();
    tain_addsec_g(&d, 1);
    for (i = 0; i < 200 && ok; i++) ok = timedio_fdwrite(c[0], chunk, sizeof chunk, &d);
    CHECK(!ok && errno == ETIMEDOUT);
    close(c[0]);
    close(c[1]);
  }

  /* the session pieces pop3io and imapio are built on: a static session with its own small
   * buffers, input preloaded before the fds are set, lines in place, the idle timer, writing
   * in place, waiting for input or another fd */
  {
    static char si[16], so[8];
    static timedio u = {.ibuf = si, .isize = sizeof si, .obuf = so, .osize = sizeof so};
    int c[2], x[2];
    char *l;
    char const *rest;
    size_t len = 0, avail = 0;
    tain d;
    CHECK(timedio_preload(&u, "A1 NOOP\r\nA2", 11) == 1);
    CHECK(timedio_preload(&u, "0123456789", 10) == 0); /* 21 > 16: does not fit */
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, c) == 0 && pipe(x) == 0);
    CHECK(timedio_usefds(&u, c[0], c[0]) == 1);
    CHECK(timedio_input(&u, &rest) == 11 && !memcmp(rest, "A1 NOOP", 7));
    CHECK(timedio_getline_in(&u, &l, 64, &len) == 1 && len == 9 && !memcmp(l, "A1 NOOP\r\n", 9));
    CHECK(timedio_buffered(&u) && timedio_pending(&u) == 2);
    CHECK(wr(c[1], " LOGOUT\n"));
    CHECK(timedio_getline_in(&u, &l, 64, &len) == 1 && len == 10 && !memcmp(l, "A2 LOGOUT\n", 10));
    CHECK(!timedio_buffered(&u));
    CHECK(wr(c[1], "0123456789abcdefXYZ\nok\n"));                   /* longer than the buffer */
    CHECK(timedio_getline_in(&u, &l, 64, &len) == TIMEDIO_TOOLONG);
    CHECK(timedio_getline_in(&u, &l, 64, &len) == 1 && len == 3);
    timedio_idle(&u, 1);
    CHECK(timedio_fill(&u) == TIMEDIO_TIMEOUT && errno == ETIMEDOUT);
    l = timedio_room(&u, 8, &avail);
    CHECK(l && avail == 8);
    memcpy(l, "12345678", 8);
    timedio_commit(&u, 8);
    CHECK(timedio_put(&u, "9\n", 2) == 1); /* full: flushed the 8 first */
    {
      char r[16];
      CHECK(read(c[1], r, sizeof r) == 8 && !memcmp(r, "12345678", 8));
    }
    tain_now_g();
    tain_addsec_g(&d, 10);
    CHECK(wr(x[1], "!"));
    CHECK(timedio_waitinput(&u, x[0], &d) == 2); /* flushed "9\n" before waiting */
    {
      char r[16];
      CHECK(read(c[1], r, sizeof r) == 2 && !memcmp(r, "9\n", 2));
    }
    CHECK(wr(c[1], "z"));
    CHECK(timedio_waitinput(&u, x[0], &d) == 1);
    CHECK(timedio_fill(&u) == 1 && timedio_pending(&u) == 1);
    CHECK(timedio_waitinput(&u, -1, &d) == 1); /* buffered: at once */
    timedio_discard(&u);
    {
      tain ms;
      tain_now_g();
      tain_from_millisecs(&ms, 50);
      tain_add_g(&d, &ms);
    }
    CHECK(timedio_waitinput(&u, -1, &d) == 0);
    close(c[0]);
    close(c[1]);
    close(x[0]);
    close(x[1]);
  }

  /* rest: a wait for input that lasts gives back the spent output buffer and calls rest()
   * once; input that is there at once never rests */
  {
    static char si[64], so[3 * 4096] __attribute__((aligned(4096)));
    static timedio u = {.ibuf = si, .isize = sizeof si, .obuf = so, .osize = sizeof so};
    int c[2];
    tain d, ms;
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, c) == 0);
    CHECK(timedio_usefds(&u, c[0], c[0]) == 1);
    timedio_onrest(&u, &rested, 20);
    memset(so, 'x', sizeof so);
    CHECK(wr(c[1], "now\n"));
    CHECK(timedio_fill(&u) == 4 && nrest == 0 && so[4096] == 'x');
    timedio_discard(&u);
    tain_now_g();
    tain_from_millisecs(&ms, 200);
    tain_add_g(&d, &ms);
    CHECK(timedio_waitinput(&u, -1, &d) == 0 && nrest == 1 && so[4096] == 0 && so[0] == 0);
    timedio_idle(&u, 1);
    CHECK(wr(c[1], "later\n"));
    CHECK(timedio_fill(&u) == 6 && nrest == 1);
    close(c[0]);
    close(c[1]);
  }

  /* fd level: read with data, at EOF, and timing out */
  {
    int c[2];
    char r[16];
    tain d;
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, c) == 0);
    CHECK(fcntl(c[0], F_SETFL, O_NONBLOCK) == 0);
    tain_now_g();
    tain_addsec_g(&d, 1);
    errno = 0;
    CHECK(timedio_fdread(c[0], r, sizeof r, &d) == -1 && errno == ETIMEDOUT);
    tain_now_g();
    tain_addsec_g(&d, 10);
    CHECK(wr(c[1], "abc"));
    CHECK(timedio_fdread(c[0], r, sizeof r, &d) == 3);
    close(c[1]);
    CHECK(timedio_fdread(c[0], r, sizeof r, &d) == 0);
    close(c[0]);
  }
  /* timedio_wait2: the second fd wakes the wait, the first one wins when both are ready, the
   * deadline ends it */
  {
    int p[2], q[2];
    tain d;
    char c;
    CHECK(pipe(p) == 0 && pipe(q) == 0);
    tain_now_g();
    tain_addsec_g(&d, 5);
    CHECK(wr(q[1], "x") && timedio_wait2(p[0], 0, q[0], &d) == 2);
    CHECK(wr(p[1], "y") && timedio_wait2(p[0], 0, q[0], &d) == 1);
    CHECK(read(p[0], &c, 1) == 1 && read(q[0], &c, 1) == 1);
    tain_now_g();
    tain_addsec_g(&d, 0);
    errno = 0;
    CHECK(timedio_wait2(p[0], 0, q[0], &d) < 0 && errno == ETIMEDOUT);
    CHECK(timedio_wait2(p[1], 1, -1, &d) == 1);
    close(p[0]), close(p[1]), close(q[0]), close(q[1]);
  }
  return CHECK_DONE();
}
