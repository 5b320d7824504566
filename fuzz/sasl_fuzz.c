/* fuzz/sasl_fuzz.c: libFuzzer target for lib/sasl (base64 round trip, AUTH argument, PLAIN,
 * LOGIN fields, checkpassword input). Built by `make fuzz`; run by hand with
 *   fuzz/sasl_fuzz -max_total_time=600
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "sasl.h"

int LLVMFuzzerTestOneInput(uint8_t const *data, size_t size)
{
  char out[SASL_DECODED_MAX];
  size_t n;
  char const *ir;
  size_t irlen;
  sasl_plain p;
  int r = sasl_b64_decode((char const *)data, size, out, sizeof out, &n);
  if (r == SASL_OK) {
    char *enc = malloc(SASL_B64_LEN(n) + 1);
    char back[SASL_DECODED_MAX];
    size_t m, k = sasl_b64_encode(out, n, enc);
    /* canonical input: decoding then encoding gives the input back */
    if (!(size == 1 && data[0] == '=') && (k != size || memcmp(enc, data, size))) abort();
    if (sasl_b64_decode(enc, k, back, sizeof back, &m) != SASL_OK || m != n || memcmp(back, out, n))
      abort();
    free(enc);
    if (sasl_plain_parse(out, n, &p) == SASL_OK) {
      if (!p.authcidlen || !p.passwdlen || p.authcidlen > SASL_FIELD_MAX) abort();
      if (p.authcid < out || p.passwd + p.passwdlen > out + n) abort();
    }
  }
  sasl_parse_auth((char const *)data, size, &ir, &irlen);
  if (ir && (ir < (char const *)data || ir + irlen > (char const *)data + size)) abort();
  sasl_plain_parse((char const *)data, size, &p);
  sasl_login_field((char const *)data, size);
  {
    char cp[520];
    size_t half = size / 2;
    sasl_checkpassword_input(cp, sizeof cp, (char const *)data, half, (char const *)data + half,
                             size - half);
  }
  return 0;
}
