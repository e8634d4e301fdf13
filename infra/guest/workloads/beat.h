/* Shared by the guest workloads: a heartbeat line on the console at a steady interval. */
#include <stdio.h>
#include <time.h>

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* Prints "HB <n>" when `interval_ms` has passed since the last beat; returns 1 if it did. */
static int beat(double interval_ms) {
  static double last;
  static unsigned long long n;
  double t = now_ms();
  if (n > 0 && t - last < interval_ms) return 0;
  last = t;
  printf("HB %llu\n", ++n);
  fflush(stdout);
  return 1;
}
