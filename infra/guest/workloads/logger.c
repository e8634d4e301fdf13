/*
 * logger: an application whose state is mostly on disk: it appends timestamped records to log
 * files under /data, rotating every few MiB and syncing often. Its memory hardly changes.
 *
 * usage: logger [KiB-per-second] [interval-ms]
 */
#include <stdlib.h>
#include <unistd.h>
#include "beat.h"

int main(int argc, char **argv) {
  long kib = argc > 1 ? atol(argv[1]) : 256;
  double interval = argc > 2 ? atof(argv[2]) : 200;
  unsigned long record = 0, file = 0;
  long written = 0;
  char path[64];
  snprintf(path, sizeof path, "/data/log-%03lu.txt", file);
  FILE *out = fopen(path, "a");
  if (!out) { printf("EHOFF-ERROR logger cannot open %s\n", path); return 1; }
  for (;;) {
    long budget = (long)(kib * 1024 * interval / 1000);
    for (long b = 0; b < budget;) {
      int n = fprintf(out, "%012lu sensor=%lu temp=%.2f status=ok route=edge-%lu note=steady\n", record, record % 97, 20 + (record % 1000) / 100.0, record % 13);
      record++;
      b += n;
      written += n;
    }
    fflush(out);
    fsync(fileno(out));
    if (written > (8L << 20)) {
      fclose(out);
      file = (file + 1) % 16;
      snprintf(path, sizeof path, "/data/log-%03lu.txt", file);
      out = fopen(path, "w");
      written = 0;
    }
    beat(interval, record);
    usleep((useconds_t)(interval * 1000));
  }
}
