/* mime-dump FILE ITEM...: prints what lib/mime gives for FETCH items of the message in FILE,
 * in the form of an IMAP FETCH response item, each as "LENGTH\n" then the bytes then "\n".
 * ITEM: BODYSTRUCTURE, BODY, ENVELOPE, RFC822.SIZE, BODY[section], BINARY[section],
 * BINARY.SIZE[section]. Used by tests/test_mime_dovecot.py and by hand. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <skalibs/stralloc.h>
#include "mime.h"

char const *PROG = "mime-dump";

static void out(stralloc *sa)
{
  printf("%zu\n", sa->len);
  fwrite(sa->s, 1, sa->len, stdout);
  printf("\n");
}

int main(int argc, char **argv)
{
  int fd, i;
  struct stat st;
  char const *s = "";
  mime_part parts[256];
  mime_msg m;
  if (argc < 2) return 100;
  fd = open(argv[1], O_RDONLY);
  if (fd < 0 || fstat(fd, &st) < 0) return 111;
  if (st.st_size) {
    s = mmap(0, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (s == MAP_FAILED) return 111;
  }
  mime_parse(&m, s, st.st_size, parts, 256);
  for (i = 2; i < argc; i++) {
    stralloc sa = STRALLOC_ZERO;
    char const *a = argv[i];
    if (!strcmp(a, "BODYSTRUCTURE") || !strcmp(a, "BODY")) {
      stralloc_cats(&sa, a);
      stralloc_cats(&sa, " ");
      if (!mime_bodystructure(&sa, &m, 0, a[4] == 'S')) return 111;
    } else if (!strcmp(a, "ENVELOPE")) {
      stralloc_cats(&sa, "ENVELOPE ");
      if (!mime_envelope(&sa, &m, 0)) return 111;
    } else if (!strcmp(a, "RFC822.SIZE")) {
      char b[40];
      snprintf(b, sizeof b, "RFC822.SIZE %zu", mime_wire_size(s, st.st_size, 0));
      stralloc_cats(&sa, b);
    } else if (!strncmp(a, "BODY[", 5) || !strncmp(a, "BINARY[", 7)
               || !strncmp(a, "BINARY.SIZE[", 12)) {
      char const *lb = strchr(a, '['), *rb = strrchr(a, ']');
      size_t origin = 0, count = SIZE_MAX;
      int partial = 0;
      mime_section sec;
      stralloc body = STRALLOC_ZERO;
      char b[40];
      if (rb && rb[1] == '<') { /* BODY[...]<origin.count> */
        char *e;
        origin = strtoul(rb + 2, &e, 10);
        count = *e == '.' ? strtoul(e + 1, 0, 10) : SIZE_MAX;
        partial = 1;
      }
      if (!rb || !mime_section_parse(lb + 1, rb - lb - 1, &sec)) {
        stralloc_cats(&sa, "BAD");
      } else if (a[1] == 'O') {
        size_t k0 = sa.len, k;
        if (!mime_section_cat(&body, &m, &sec, origin, count)) return 111;
        stralloc_catb(&sa, a, rb + 1 - a);
        if (partial) {
          snprintf(b, sizeof b, "<%zu>", origin); /* the reply names the origin only */
          stralloc_cats(&sa, b);
        }
        /* the reply names the fields in upper case, as Dovecot does */
        for (k = k0; k < sa.len; k++)
          if (sa.s[k] >= 'a' && sa.s[k] <= 'z') sa.s[k] -= 32;
        snprintf(b, sizeof b, " {%zu}\r\n", body.len);
        stralloc_cats(&sa, b);
        stralloc_catb(&sa, body.s, body.len);
      } else {
        unsigned int p = mime_section_part(&m, &sec);
        int r;
        stralloc_catb(&sa, a, rb + 1 - a);
        if (!sec.nnum && sec.what == MIME_SEC_ALL) {
          /* BINARY[]: the whole message, as literal8 */
          if (!mime_section_cat(&body, &m, &sec, 0, SIZE_MAX)) return 111;
          r = 2;
        } else if (!strncmp(a, "BINARY.SIZE", 11)) {
          size_t z = 0;
          r = mime_binary_size(&m, p, &z);
          snprintf(b, sizeof b, " %zu", z);
          if (r > 0) {
            stralloc_cats(&sa, b);
            r = 0;
          }
        } else r = mime_binary_cat(&body, &m, p);
        if (r == 1 || r == 2) {
          snprintf(b, sizeof b, " %s{%zu}\r\n", r == 2 ? "~" : "", body.len);
          stralloc_cats(&sa, b);
          stralloc_catb(&sa, body.s, body.len);
        } else if (r == -1) {
          sa.len = 0;
          stralloc_cats(&sa, "NO [UNKNOWN-CTE]");
        } else if (r == -3) {
          sa.len = 0;
          stralloc_cats(&sa, "NO [PARSE]");
        }
      }
      stralloc_free(&body);
    } else return 100;
    out(&sa);
    stralloc_free(&sa);
  }
  return 0;
}
