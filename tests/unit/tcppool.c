/* unit: the worker's side of lib/tcppool in this process: a listening socket, the UCSPI
 * environment and the tcprules database per connection, a deny, the environment rebuilt for
 * each connection (a session's setenv does not reach the next), max use. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "tcppool.h"
#include "check.h"
char const *PROG = "unit-tcppool";

static int client(char const *from, uint16_t port)
{
  struct sockaddr_in a;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  inet_pton(AF_INET, from, &a.sin_addr);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) return -1;
  a.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) return -1;
  return fd;
}

static int is(char const *name, char const *value)
{
  char const *x = getenv(name);
  return value ? x && !strcmp(x, value) : !x;
}

int main(void)
{
  char cwd[4096], num[16], buf[8];
  struct sockaddr_in a;
  socklen_t al = sizeof a;
  int lfd, c1, c2, c3;
  uint16_t port;
  if (!getcwd(cwd, sizeof cwd)) return 111;
  setenv("MAILROOT", cwd, 1);
  if (system("mkdir -p control && printf '127.0.0.1:allow,A=\"1\"\\n127.0.0.2:deny\\n"
             ":allow,B=\"2\"\\n' | tcprules control/r.cdb control/r.tmp") != 0)
    return 111;
  CHECK(tcppool_worker() == 0); /* not a worker without TCPPOOL_FD */
  lfd = tcppool_listen("127.0.0.1", 0, 8);
  CHECK(lfd >= 0);
  CHECK(getsockname(lfd, (struct sockaddr *)&a, &al) == 0);
  port = ntohs(a.sin_port);
  snprintf(num, sizeof num, "%d", lfd);
  setenv("TCPPOOL_FD", num, 1);
  setenv("TCPPOOL_RULES", "control/r.cdb", 1);
  setenv("TCPPOOL_LOCALHOST", "here.example", 1);
  setenv("TCPPOOL_MAXUSE", "3", 1);
  setenv("KEPT", "yes", 1);
  CHECK(tcppool_worker() == 1);
  CHECK(is("TCPPOOL_FD", 0) && is("TCPPOOL_RULES", 0) && is("KEPT", "yes"));

  c1 = client("127.0.0.1", port);
  CHECK(c1 >= 0);
  CHECK(tcppool_next() == 1);
  CHECK(is("PROTO", "TCP") && is("TCPREMOTEIP", "127.0.0.1") && is("TCPLOCALIP", "127.0.0.1"));
  snprintf(num, sizeof num, "%u", (unsigned int)port);
  CHECK(is("TCPLOCALPORT", num) && is("TCPLOCALHOST", "here.example"));
  CHECK(is("TCP6REMOTEIP", "::ffff:127.0.0.1") && is("TCPREMOTEHOST", 0));
  CHECK(is("A", "1") && is("B", 0) && is("KEPT", "yes"));
  CHECK(write(1, "hi", 2) == 2 && read(c1, buf, 2) == 2 && !memcmp(buf, "hi", 2));
  setenv("SSL_PROTOCOL", "TLSv1.2", 1); /* what a session may set */
  unsetenv("KEPT");                     /* or unset */
  tcppool_done();
  CHECK(read(c1, buf, 1) == 0);        /* closed at the end of the session */
  close(c1);

  c2 = client("127.0.0.2", port); /* denied: closed without a byte */
  c3 = client("127.0.0.3", port);
  CHECK(c2 >= 0 && c3 >= 0);
  CHECK(tcppool_next() == 1);
  CHECK(read(c2, buf, 1) == 0);
  CHECK(is("TCPREMOTEIP", "127.0.0.3") && is("A", 0) && is("B", "2"));
  CHECK(is("SSL_PROTOCOL", 0) && is("KEPT", "yes")); /* rebuilt from the worker's start */
  tcppool_done();
  close(c2);
  close(c3);
  CHECK(tcppool_next() == 0); /* three connections: max use reached */
  return CHECK_DONE();
}
