/* Shared by the guest workloads: a heartbeat line on the console at a steady interval. */
#include <stdio.h>
#include <time.h>

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/*
 * Prints "HB <n> <work>" when `interval_ms` has passed since the last beat; returns 1 if it did.
 * `work` is the workload's own progress counter (rows, frames, records): the host reads the
 * guest's work rate from it, and how long after a handoff the rate takes to come back.
 */
static int beat(double interval_ms, unsigned long long work) {
  static double last;
  static unsigned long long n;
  double t = now_ms();
  if (n > 0 && t - last < interval_ms) return 0;
  last = t;
  printf("HB %llu %llu\n", ++n, work);
  fflush(stdout);
  return 1;
}
