/* qdomain: remote domains' concurrency and backoff. See qdomain.h. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "qdomain.h"

static qdomain *domains;
static unsigned int ndomains;

qdomain *qdomain_get(char const *name, size_t len)
{
  unsigned int i;
  if (len > 255) len = 255;
  for (i = 0; i < ndomains; i++)
    if (!strncasecmp(domains[i].name, name, len) && !domains[i].name[len]) return &domains[i];
  if (ndomains == QDOMAIN_MAX) {
    for (i = 0; i < ndomains; i++)
      if (!domains[i].running && !domains[i].fails) break;
    if (i == ndomains) return 0;
  } else {
    if (!domains) { /* allocated once: entries never move */
      domains = calloc(QDOMAIN_MAX, sizeof *domains);
      if (!domains) return 0;
    }
    i = ndomains++;
  }
  memset(&domains[i], 0, sizeof domains[i]);
  memcpy(domains[i].name, name, len);
  domains[i].name[len] = 0;
  return &domains[i];
}

qdomain *qdomain_of(char const *addr)
{
  char const *at = strrchr(addr, '@');
  return at && at[1] ? qdomain_get(at + 1, strlen(at + 1)) : 0;
}

void qdomain_reset_all(void)
{
  unsigned int i;
  for (i = 0; i < ndomains; i++) domains[i].fails = 0, domains[i].until = 0;
}
