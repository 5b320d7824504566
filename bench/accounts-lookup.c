/* accounts-lookup: the timing loop of bench/accounts.py (built by it, not by make).
 * accounts-lookup N MODE: N calls, MODE "domain" (lookup_is_local_domain: one cdb probe, the
 * baseline) or "resolve" (lookup_resolve over a mix of exact, +tag, catch-all, list and remote
 * addresses). Prints the elapsed seconds. MAILROOT names the instance. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <skalibs/stralloc.h>
#include "lookup.h"
char const *PROG = "accounts-lookup";

int main(int argc, char **argv)
{
  static char const *const mix[] = {"u1234@example.test", "U777+tag@Example.Test",
                                    "nobody@example.test", "list17@example.test",
                                    "fwd5@example.test", "someone@remote.test"};
  stralloc t = STRALLOC_ZERO;
  struct timespec a, b;
  long n, i;
  int resolve, bad = 0;
  if (argc != 3) return 100;
  n = atol(argv[1]);
  resolve = !strcmp(argv[2], "resolve");
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (i = 0; i < n; i++) {
    char const *x = mix[i % 6];
    if (resolve) {
      t.len = 0;
      if (lookup_resolve(x, strlen(x), &t) <= 0) bad++;
    } else if (lookup_is_local_domain("example.test", 12) != 1)
      bad++;
  }
  clock_gettime(CLOCK_MONOTONIC, &b);
  if (bad) {
    fprintf(stderr, "accounts-lookup: %d lookups failed\n", bad);
    return 111;
  }
  printf("%.6f\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
  return 0;
}
