/* unit: the retry schedule (lib/retry), bounce statuses and where bounces go (lib/bounce) */
#include <string.h>
#include "bounce.h"
#include "retry.h"
#include "check.h"
char const *PROG = "unit-retry";

int main(void)
{
  retry_policy p = {240, 14400, 432000};
  stralloc d = STRALLOC_ZERO;
  char buf[16];
  unsigned int i;
  for (i = 0; i < 200; i++) { /* base, doubling, capped, plus at most a quarter of jitter */
    uint64_t d1 = retry_delay(&p, 1), d3 = retry_delay(&p, 3), d20 = retry_delay(&p, 20);
    CHECK(d1 >= 240 && d1 <= 300);
    CHECK(d3 >= 960 && d3 <= 1200);
    CHECK(d20 >= 14400 && d20 <= 18000);
  }
  CHECK(!retry_expired(&p, 1000, 1000 + 431999) && retry_expired(&p, 1000, 1000 + 432000));
  CHECK(retry_expired_diag(&d, "x-pillarbox; 4.2.2 over quota", 29) && stralloc_0(&d));
  CHECK(!strcmp(d.s, "x-pillarbox; 4.4.7 message expired in the queue; last error: "
                     "x-pillarbox; 4.2.2 over quota"));
  CHECK(retry_expired_diag(&d, "R=mx.far smtp; 451 later", 24) && stralloc_0(&d));
  CHECK(!strcmp(d.s, "R=mx.far x-pillarbox; 4.4.7 message expired in the queue; last error: "
                     "smtp; 451 later"));
  /* the status a bounce reports: the first enhanced code in the diagnostic */
  CHECK(!strcmp(bounce_status(d.s + 9, buf, '5'), "4.4.7"));
  CHECK(!strcmp(bounce_status("smtp; 550 5.1.1 <x>: no such user", buf, '5'), "5.1.1"));
  CHECK(!strcmp(bounce_status("no code here 1.2.3", buf, '5'), "5.0.0"));
  CHECK(!strcmp(bounce_status("x2.1.1 5.7.1.", buf, '5'), "5.7.1"));
  stralloc_free(&d);
  return CHECK_DONE();
}
