/*
 * fluid: a numerical simulation rewriting a large float grid every step (a diffusion stencil with
 * a moving source). Nearly every page changes every step and floats compress poorly: the high
 * dirty rate that pre-copy has to fight.
 *
 * usage: fluid [MiB] [interval-ms] [disk-KiB/s]
 * With disk-KiB/s, it also appends its progress to /data/fluid.log at that rate, synced each beat
 * (a simulation checkpointing: disk blocks written right up to a handoff's stop).
 */
#include <stdlib.h>
#include <math.h>
#include <unistd.h>
#include "beat.h"

int main(int argc, char **argv) {
  long mib = argc > 1 ? atol(argv[1]) : 128;
  double interval = argc > 2 ? atof(argv[2]) : 200;
  long disk_kib = argc > 3 ? atol(argv[3]) : 0;
  FILE *out = disk_kib > 0 ? fopen("/data/fluid.log", "a") : NULL;
  if (disk_kib > 0 && !out) { printf("EHOFF-ERROR fluid cannot open /data/fluid.log\n"); return 1; }
  size_t n = ((size_t)mib << 20) / sizeof(float);
  size_t w = 1024, h = n / w;
  float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
  if (!a || !b || h < 3) { printf("EHOFF-ERROR fluid cannot allocate %ld MiB\n", mib); return 1; }
  for (size_t i = 0; i < n; i++) a[i] = b[i] = (float)sin(i * 0.001);
  printf("EHOFF-FLUID-READY %zu cells\n", n);
  fflush(stdout);
  for (unsigned long step = 0;; step++) {
    size_t sx = (step * 7) % w, sy = (step * 3) % h;
    a[sy * w + sx] += 100.0f;
    for (size_t y = 1; y + 1 < h; y++) {
      for (size_t x = 1; x + 1 < w; x++) {
        size_t i = y * w + x;
        b[i] = 0.2f * (a[i] + a[i - 1] + a[i + 1] + a[i - w] + a[i + w]) + 1e-4f * (float)(step % 17);
      }
      if ((y & 63) == 0 && beat(interval, (unsigned long long)step * h + y) && out) {
        for (long written = 0, budget = (long)(disk_kib * 1024 * interval / 1000); written < budget;)
          written += fprintf(out, "step %lu row %zu cell %.6f\n", step, y, a[y * w + w / 2]);
        fflush(out);
        fdatasync(fileno(out));
        /* A bounded log: past 8 MiB it starts over (the same blocks written again). */
        if (ftell(out) > (8L << 20) && !(out = freopen("/data/fluid.log", "w", out))) return 1;
      }
    }
    float *t = a; a = b; b = t;
  }
}
