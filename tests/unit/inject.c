/* unit: the injection client (lib/inject): socket framing with facts, chain exit codes */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <skalibs/stralloc.h>

#include "inject.h"
#include "check.h"
char const *PROG = "unit-inject";

#define MSGLEN 100000

/* A one-shot server: reads everything, checks the framing, answers "0 ID1". Exit 0 if the
 * framing was right. */
static int serve(int l)
{
  static char in[MSGLEN * 2];
  size_t n = 0, i = 0, got = 0;
  int s = accept(l, 0, 0);
  char const facts[] = "service=smtpd\nip=192.0.2.7\nrelay=1\n";
  char const env[] = "Fa@b\0Tc@d\0";
  if (s < 0) return 1;
  for (;;) {
    ssize_t r = read(s, in + n, sizeof in - n);
    if (r <= 0) break;
    n += (size_t)r;
  }
  if (n < 1 || in[0] != 'S') return 2;
  i = 1;
  if (strncmp(in + i, "35:", 3) || memcmp(in + i + 3, facts, 35) || in[i + 38] != ',') return 3;
  i += 39;
  for (;;) { /* message netstrings up to "0:," */
    size_t len = 0;
    while (i < n && in[i] >= '0' && in[i] <= '9') len = len * 10 + (size_t)(in[i++] - '0');
    if (i >= n || in[i++] != ':') return 4;
    if (!len) { if (in[i++] != ',') return 5; break; }
    if (len > 65536) return 6;
    for (size_t k = 0; k < len; k++)
      if (in[i + k] != (char)('a' + (got + k) % 26)) return 7;
    got += len;
    i += len;
    if (in[i++] != ',') return 8;
  }
  if (got != MSGLEN) return 9;
  if (strncmp(in + i, "11:", 3) || memcmp(in + i + 3, env, 11) || in[i + 14] != ',' || i + 15 != n)
    return 10;
  if (write(s, "0 ID1\n", 6) != 6) return 11;
  close(s);
  return 0;
}

int main(void)
{
  injector j;
  inject_facts f = INJECT_FACTS_ZERO;
  stralloc id = STRALLOC_ZERO;
  struct sockaddr_un sun;
  char buf[MSGLEN];
  size_t i;
  int l, w;
  pid_t pid;
  signal(SIGPIPE, SIG_IGN);
  for (i = 0; i < MSGLEN; i++) buf[i] = (char)('a' + i % 26);

  /* socket */
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  strcpy(sun.sun_path, "inj.sock");
  unlink("inj.sock");
  l = socket(AF_UNIX, SOCK_STREAM, 0);
  CHECK(l >= 0 && bind(l, (struct sockaddr *)&sun, sizeof sun) == 0 && listen(l, 1) == 0);
  pid = fork();
  if (!pid) _exit(serve(l));
  close(l);
  setenv("QUEUE_INJECT", "socket:inj.sock", 1);
  f.service = "smtpd";
  f.ip = "192.0.2.7";
  f.helo = "";
  f.relay = 1;
  CHECK(inject_start(&j, &f, 10) == 1 && j.mode == INJECT_SOCKET);
  for (i = 0; i < MSGLEN; i += 7000)
    inject_write(&j, buf + i, MSGLEN - i < 7000 ? MSGLEN - i : 7000);
  CHECK(inject_commit(&j, "Fa@b\0Tc@d\0", 11, &id) == 0);
  CHECK(id.len == 3 && !memcmp(id.s, "ID1", 3));
  CHECK(waitpid(pid, &w, 0) == pid && WIFEXITED(w) && WEXITSTATUS(w) == 0);
  if (!(WIFEXITED(w) && WEXITSTATUS(w) == 0)) fprintf(stderr, "server: %d\n", WEXITSTATUS(w));
  /* nobody listening: the start fails */
  CHECK(inject_start(&j, &f, 10) == 0);

  /* chain: "true" reads nothing and exits 0, which is not a queue */
  setenv("QUEUE_INJECT", "true", 1);
  CHECK(inject_start(&j, 0, 10) == 1 && j.mode == INJECT_CHAIN);
  inject_write(&j, buf, MSGLEN);
  CHECK(inject_commit(&j, "Fa@b\0Tc@d\0", 11, &id) == INJECT_UNREAD);
  setenv("QUEUE_INJECT", "false", 1);
  CHECK(inject_start(&j, 0, 10) == 1);
  CHECK(inject_commit(&j, "F\0", 2, &id) == 1);
  setenv("QUEUE_INJECT", "/nonexistent/queue-inject", 1);
  CHECK(inject_start(&j, 0, 10) == 0);
  /* abort after start leaves nothing behind */
  setenv("QUEUE_INJECT", "sleep 30", 1);
  CHECK(inject_start(&j, 0, 10) == 1);
  inject_abort(&j);
  CHECK(j.pid == 0 && j.msgfd < 0 && j.sock < 0);

  {
    char const *e, *t;
    CHECK(inject_reply(0, &e, &t) == 250 && !strcmp(e, "2.0.0"));
    CHECK(inject_reply(31, &e, &t) == 554 && !strcmp(e, "5.3.0"));
    CHECK(inject_reply(91, &e, &t) == 554);
    CHECK(inject_reply(53, &e, &t) == 451 && !strcmp(e, "4.3.0"));
    CHECK(inject_reply(INJECT_UNREAD, &e, &t) == 451);
  }
  return CHECK_DONE();
}
