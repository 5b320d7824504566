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

static int wr(int fd, char const *s)
{
  size_t n = strlen(s);
  return write(fd, s, n) == (ssize_t)n;
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
  CHECK(timedio_init(&t, a[0], a[0]) == 1);
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
