/*
 * marker: a guest whose memory holds a secret the host never sees. It draws a random marker
 * from the guest's own /dev/urandom, prints it once on the console (a file on the cloudlet that
 * runs it: the security suite reads it there), and writes it into every page of <MiB> of memory
 * among random filler (incompressible: the pages cross the WAN at their size, and a page that
 * did cross in the clear would carry the marker as a literal), rewriting a few pages each tick so
 * live epochs carry it too. If the marker crosses the WAN in the clear, a packet capture finds it.
 *
 * usage: marker [MiB] [interval-ms]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "beat.h"

#define PAGE 4096

static char marker[64];
static unsigned long long rng = 88172645463325252ULL;

static void fill_page(char *page, size_t index, unsigned long long tick) {
  for (size_t i = 0; i < PAGE; i += 8) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    memcpy(page + i, &rng, 8);
  }
  snprintf(page, 64, "page %zu tick %llu ", index, tick);
  /* At an offset that varies by page: a search cannot rely on one alignment. */
  size_t at = 64 + (index * 131) % (PAGE - 128);
  memcpy(page + at, marker, strlen(marker));
}

int main(int argc, char **argv) {
  long mib = argc > 1 ? atol(argv[1]) : 16;
  long interval_ms = argc > 2 ? atol(argv[2]) : 100;
  unsigned char seed[16];
  FILE *random = fopen("/dev/urandom", "r");
  if (!random || fread(seed, 1, sizeof seed, random) != sizeof seed) { printf("EHOFF-ERROR marker cannot read /dev/urandom\n"); return 1; }
  fclose(random);
  memcpy(&rng, seed, sizeof rng);
  rng |= 1;
  int n = snprintf(marker, sizeof marker, "EHOFF-MARKER-");
  for (size_t i = 0; i < sizeof seed; i++) n += snprintf(marker + n, sizeof marker - n, "%02x", seed[i]);
  size_t pages = ((size_t)mib << 20) / PAGE;
  char *heap = malloc(pages * PAGE);
  if (!heap) { printf("EHOFF-ERROR marker cannot allocate %ld MiB\n", mib); return 1; }
  for (size_t p = 0; p < pages; p++) fill_page(heap + p * PAGE, p, 0);
  printf("EHOFF-MARKER %s in %zu pages\n", marker, pages);
  fflush(stdout);
  struct timespec pause = { interval_ms / 1000, (interval_ms % 1000) * 1000000L };
  unsigned long long tick = 0;
  for (;;) {
    tick++;
    for (size_t k = 0; k < 4; k++) {
      size_t p = (tick * 4 + k) * 2654435761u % pages;
      fill_page(heap + p * PAGE, p, tick);
    }
    beat(interval_ms, tick);
    nanosleep(&pause, NULL);
  }
}
