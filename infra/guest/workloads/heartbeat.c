/*
 * heartbeat: the simplest edge application that has state worth moving.
 * Prints "HB <n> <n>" (its work is the beat itself) on the console every interval, keeps <mem-MiB> of memory that it rewrites a
 * little every tick (so memory has an overlay), and appends a record to /data/heartbeat.log
 * (so the disk has one). The counter lives in guest memory: after a handoff it must go on.
 *
 * usage: heartbeat [mem-MiB] [interval-ms]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  long mem_mib = argc > 1 ? atol(argv[1]) : 16;
  long interval_ms = argc > 2 ? atol(argv[2]) : 200;
  size_t bytes = (size_t)mem_mib << 20;
  unsigned char *heap = malloc(bytes ? bytes : 1);
  if (!heap) { printf("EHOFF-ERROR heartbeat cannot allocate %ld MiB\n", mem_mib); return 1; }
  /* Text-like content, so later compression has something realistic to work on. */
  for (size_t i = 0; i < bytes; i++) heap[i] = "edge cloudlet handoff heartbeat "[i % 32];
  FILE *log = fopen("/data/heartbeat.log", "a");
  struct timespec pause = { interval_ms / 1000, (interval_ms % 1000) * 1000000L };
  unsigned long long n = 0;
  size_t cursor = 0;
  for (;;) {
    n++;
    if (bytes) {
      int len = snprintf((char *)heap + cursor, 64, "beat %llu ", n);
      cursor = (cursor + 4096 + (size_t)len) % (bytes - 64);
    }
    printf("HB %llu %llu\n", n, n);
    fflush(stdout);
    if (log) { fprintf(log, "beat %llu\n", n); fflush(log); if (n % 10 == 0) fsync(fileno(log)); }
    nanosleep(&pause, NULL);
  }
}
