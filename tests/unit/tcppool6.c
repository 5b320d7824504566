/* unit: lib/tcppool over IPv6 (the listener on ::1): PROTO=TCP6, the addresses as written by
 * tcpserver, and tcprules' prefixes that end with ':' (the rule for "::" matches ::1). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "tcppool.h"
#include "check.h"
char const *PROG = "unit-tcppool6";

static int client6(uint16_t port)
{
  struct sockaddr_in6 a;
  int fd = socket(AF_INET6, SOCK_STREAM, 0);
  memset(&a, 0, sizeof a);
  a.sin6_family = AF_INET6;
  a.sin6_port = htons(port);
  inet_pton(AF_INET6, "::1", &a.sin6_addr);
  return fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0 ? fd : -1;
}

static int is(char const *name, char const *value)
{
  char const *x = getenv(name);
  return value ? x && !strcmp(x, value) : !x;
}

int main(void)
{
  char cwd[4096], num[16];
  struct sockaddr_in6 a;
  socklen_t al = sizeof a;
  int lfd, c;
  uint16_t port;
  if (!getcwd(cwd, sizeof cwd)) return 111;
  setenv("MAILROOT", cwd, 1);
  if (system("mkdir -p control && printf '::1:allow,A=\"6\"\\n:deny\\n' | "
             "tcprules control/r.cdb control/r.tmp") != 0)
    return 111;
  lfd = tcppool_listen("::1", 0, 8);
  if (lfd < 0) return 0; /* no IPv6 loopback here: nothing to test */
  CHECK(getsockname(lfd, (struct sockaddr *)&a, &al) == 0);
  port = ntohs(a.sin6_port);
  snprintf(num, sizeof num, "%d", lfd);
  setenv("TCPPOOL_FD", num, 1);
  setenv("TCPPOOL_RULES", "control/r.cdb", 1);
  CHECK(tcppool_worker() == 1);
  c = client6(port);
  CHECK(c >= 0);
  CHECK(tcppool_next() == 1);
  CHECK(is("PROTO", "TCP6") && is("TCPREMOTEIP", "::1") && is("TCP6REMOTEIP", "::1"));
  CHECK(is("TCPLOCALIP", "::1") && is("A", "6"));
  tcppool_done();
  close(c);
  /* the prefix "::" (written ":::allow" in the source: the last ':' ends the address) */
  if (system("printf ':::allow,B=\"p\"\\n:deny\\n' | tcprules control/r.cdb control/r.tmp") != 0)
    return 111;
  c = client6(port);
  CHECK(c >= 0);
  CHECK(tcppool_next() == 1);
  CHECK(is("B", "p") && is("A", 0));
  tcppool_done();
  close(c);
  return CHECK_DONE();
}
