/* mime-bench DIR ROUNDS: loads every file of DIR into memory, then times, over all of them,
 * ROUNDS times each (best round kept):
 *   scan       counting the LFs (memchr): the floor, every byte touched once;
 *   parse      mime_parse;
 *   bodystruct mime_parse + BODYSTRUCTURE;
 *   fetch      mime_parse + ENVELOPE + BODYSTRUCTURE + RFC822.SIZE (a FETCH of all three);
 *   files      open + read + close of each file (page cache) + mime_parse + BODYSTRUCTURE:
 *              what a server does without a structure cache (the Dovecot comparison).
 * Prints one line per measure: NAME SECONDS MESSAGES BYTES. Driven by bench/mime.py. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <skalibs/stralloc.h>
#include "mime.h"

char const *PROG = "mime-bench";

static char **msg, **paths;
static size_t *len;
static size_t nmsg, total;
static mime_part parts[256];

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static size_t sink;

static char *fbuf;
static size_t fcap;

static void run(int what, stralloc *sa)
{
  size_t i;
  for (i = 0; i < nmsg; i++) {
    mime_msg m;
    if (what == 4) {
      int fd = open(paths[i], O_RDONLY);
      struct stat st;
      if (fd < 0 || fstat(fd, &st) < 0) exit(111);
      if ((size_t)st.st_size + 1 > fcap) {
        fcap = st.st_size + 1;
        fbuf = realloc(fbuf, fcap);
        if (!fbuf) exit(111);
      }
      if (read(fd, fbuf, st.st_size) != st.st_size) exit(111);
      close(fd);
      mime_parse(&m, fbuf, st.st_size, parts, 256);
      sa->len = 0;
      if (!mime_bodystructure(sa, &m, 0, 1)) exit(111);
      sink += sa->len;
      continue;
    }
    if (!what) {
      char const *p = msg[i], *e = msg[i] + len[i];
      while ((p = memchr(p, '\n', e - p))) p++, sink++;
      continue;
    }
    mime_parse(&m, msg[i], len[i], parts, 256);
    sink += m.n;
    if (what == 1) continue;
    sa->len = 0;
    if (what == 3) {
      if (!mime_envelope(sa, &m, 0)) exit(111);
      sink += mime_wire_size(msg[i], len[i], 0);
    }
    if (!mime_bodystructure(sa, &m, 0, 1)) exit(111);
    sink += sa->len;
  }
}

int main(int argc, char **argv)
{
  DIR *d;
  struct dirent *de;
  size_t cap = 0;
  int rounds, w, r;
  static char const *const names[5] = { "scan", "parse", "bodystruct", "fetch", "files" };
  stralloc sa = STRALLOC_ZERO;
  if (argc < 3) return 100;
  rounds = atoi(argv[2]);
  d = opendir(argv[1]);
  if (!d) return 111;
  while ((de = readdir(d))) {
    char path[4096];
    struct stat st;
    int fd;
    if (de->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "%s/%s", argv[1], de->d_name);
    fd = open(path, O_RDONLY);
    if (fd < 0 || fstat(fd, &st) < 0) return 111;
    if (nmsg == cap) {
      cap = cap ? 2 * cap : 1024;
      msg = realloc(msg, cap * sizeof *msg);
      len = realloc(len, cap * sizeof *len);
      paths = realloc(paths, cap * sizeof *paths);
      if (!msg || !len || !paths) return 111;
    }
    msg[nmsg] = malloc(st.st_size + 1);
    if (!msg[nmsg] || read(fd, msg[nmsg], st.st_size) != st.st_size) return 111;
    len[nmsg] = st.st_size;
    paths[nmsg] = strdup(path);
    if (!paths[nmsg]) return 111;
    total += st.st_size;
    nmsg++;
    close(fd);
  }
  closedir(d);
  for (w = 0; w < 5; w++) {
    double best = 1e9;
    for (r = 0; r < rounds; r++) {
      double t0 = now(), t;
      run(w, &sa);
      t = now() - t0;
      if (t < best) best = t;
    }
    printf("%s %.6f %zu %zu\n", names[w], best, nmsg, total);
  }
  return sink == 42 ? 1 : 0;
}
