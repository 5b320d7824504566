/* unit: lib/pagedrop: spent buffer pages read back as zeros and their edges are kept; the wait
 * without the text returns poll's answer, and code, libc and written data work after it. */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pagedrop.h"
#include "check.h"
char const *PROG = "unit-pagedrop";

static int written = 1;                 /* .data, changed before the drop */
static char const *const word = "kept"; /* relocated, read-only after start */
static char buf[5 * 4096] __attribute__((aligned(4096)));

static int add(int a, int b)
{
  return a + b;
}

static int deep(int n)
{
  volatile char pad[4096];
  pad[0] = (char)n;
  return n ? deep(n - 1) + pad[0] : 0;
}

int main(void)
{
  int s[2], (*volatile f)(int, int) = &add;
  struct pollfd p;
  char r[8];

  /* a buffer: whole pages inside it are zeros, the partial first and last ones are kept */
  memset(buf, 'x', sizeof buf);
  pagedrop_buf(buf + 100, 3 * 4096);
  CHECK(buf[99] == 'x' && buf[100] == 'x' && buf[4095] == 'x');
  CHECK(buf[4096] == 0 && buf[3 * 4096 - 1] == 0);
  CHECK(buf[3 * 4096] == 'x' && buf[3 * 4096 + 100] == 'x' && buf[sizeof buf - 1] == 'x');

  /* the wait: a timeout, then ready input; the program runs on as before */
  written = 42;
  CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, s) == 0);
  p.fd = s[0];
  p.events = POLLIN;
  p.revents = 0;
  CHECK(pagedrop_poll(&p, 1, 10) == 0);
  CHECK(write(s[1], "ok", 2) == 2);
  p.revents = 0;
  CHECK(pagedrop_poll(&p, 1, 1000) == 1 && (p.revents & POLLIN));
  CHECK(read(s[0], r, sizeof r) == 2 && !memcmp(r, "ok", 2));
  CHECK(written == 42 && !strcmp(word, "kept") && f(2, 3) == 5);

  /* the stack below a frame: dropped pages come back as needed */
  CHECK(deep(20) == 210);
  pagedrop_stack();
  CHECK(deep(20) == 210 && written == 42);
  close(s[0]);
  close(s[1]);
  return CHECK_DONE();
}
