/* passwd: see passwd.h */
#include <crypt.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <skalibs/stralloc.h>

#include "passwd.h"

/* Wipes memory in a way the compiler cannot drop (explicit_bzero is not POSIX). */
static void wipe(void *p, size_t n)
{
  volatile unsigned char *v = p;
  while (n--) *v++ = 0;
}

int passwd_hash(char const *pw, stralloc *out)
{
  static char const *const prefixes[] = {"$y$", "$6$"};
  struct crypt_data *cd;
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  unsigned int i;
  if (strlen(pw) > PASSWD_HASH_MAX) {
    errno = ERANGE;
    return 0;
  }
  cd = calloc(1, sizeof *cd);
  if (!cd) return 0;
  for (i = 0; i < sizeof prefixes / sizeof *prefixes; i++) {
    char *h;
    if (!crypt_gensalt_rn(prefixes[i], 0, 0, 0, setting, sizeof setting)) continue;
    h = crypt_r(pw, setting, cd);
    if (!h || h[0] != '$') continue; /* "*0" / "*1": method refused */
    out->len = 0;
    if (!stralloc_cats(out, h) || !stralloc_0(out)) break;
    wipe(cd, sizeof *cd);
    free(cd);
    return 1;
  }
  wipe(cd, sizeof *cd);
  free(cd);
  if (!errno) errno = ENOSYS;
  return 0;
}

int passwd_verify(char const *pw, char const *hash)
{
  struct crypt_data *cd;
  char const *h;
  size_t n, i;
  unsigned char diff = 0;
  int ok = 0;
  if (!hash[0] || hash[0] == '!' || hash[0] == '*') return 0;
  if (strlen(pw) > PASSWD_HASH_MAX) return 0;
  cd = calloc(1, sizeof *cd);
  if (!cd) return 0;
  h = crypt_r(pw, hash, cd);
  if (h && h[0] != '*') {
    n = strlen(hash);
    if (strlen(h) == n) {
      for (i = 0; i < n; i++) diff |= (unsigned char)(h[i] ^ hash[i]);
      ok = !diff;
    }
  }
  wipe(cd, sizeof *cd);
  free(cd);
  return ok;
}

char const *passwd_dummy(void)
{
  static char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  static char const rbytes[16] = "pillarbox-dummy";
  if (setting[0]) return setting;
  if (crypt_gensalt_rn("$y$", 0, rbytes, sizeof rbytes, setting, sizeof setting)) return setting;
  if (crypt_gensalt_rn("$6$", 0, rbytes, sizeof rbytes, setting, sizeof setting)) return setting;
  setting[0] = 0;
  return "$6$pillarboxdummy$";
}
