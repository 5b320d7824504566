/* ctlfile.h: control files for the C unit tests (MAILROOT is the test's directory). */
#ifndef PILLARBOX_CTLFILE_H
#define PILLARBOX_CTLFILE_H
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Writes control/NAME (control/ made by the test). */
static void put(char const *name, char const *text)
{
  char p[256];
  FILE *f;
  snprintf(p, sizeof p, "control/%s", name);
  f = fopen(p, "w");
  fputs(text, f);
  fclose(f);
}

/* Waits (bounded) until a file's change time is past ref: the file system's clock moved, so
 * a change made now cannot leave a time recorded before as it was. The probe file is outside
 * control/: it changes nothing there. */
static void tick(struct timespec ref)
{
  struct stat st;
  int i;
  for (i = 0; i < 1000000; i++) {
    FILE *f = fopen("probe", "w");
    if (f) { fputs("x", f); fclose(f); }
    if (stat("probe", &st) < 0) break;
    if (st.st_ctim.tv_sec > ref.tv_sec ||
        (st.st_ctim.tv_sec == ref.tv_sec && st.st_ctim.tv_nsec > ref.tv_nsec)) break;
  }
  unlink("probe");
}

/* tick past control/'s own change time */
static void tick_control(void)
{
  struct stat st;
  if (stat("control", &st) == 0) tick(st.st_ctim);
}
#endif
