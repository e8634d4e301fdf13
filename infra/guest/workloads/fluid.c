/*
 * fluid: a numerical simulation rewriting a large float grid every step (a diffusion stencil with
 * a moving source). Nearly every page changes every step and floats compress poorly: the high
 * dirty rate that pre-copy has to fight.
 *
 * usage: fluid [MiB] [interval-ms]
 */
#include <stdlib.h>
#include <math.h>
#include "beat.h"

int main(int argc, char **argv) {
  long mib = argc > 1 ? atol(argv[1]) : 128;
  double interval = argc > 2 ? atof(argv[2]) : 200;
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
      if ((y & 63) == 0) beat(interval, (unsigned long long)step * h + y);
    }
    float *t = a; a = b; b = t;
  }
}
