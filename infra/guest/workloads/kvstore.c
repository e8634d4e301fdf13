/*
 * kvstore: an in-memory key-value store of text-like records under a steady update rate, the
 * kind of state an edge application holds. Records are 128 bytes of words and numbers drawn
 * from a small vocabulary, so they compress like real text, not like zeros or noise. Each tick
 * it rewrites a few records, prints "HB <n> <updates so far>", and now and then appends the latest updates to
 * /data/kv.log (the disk overlay).
 *
 * usage: kvstore [MiB] [updates-per-second] [interval-ms]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RECORD 128

static const char *words[] = {
  "alpha", "bravo", "cloudlet", "delta", "edge", "fog", "gateway", "handoff", "ingress", "jitter",
  "kernel", "latency", "mobile", "node", "overlay", "packet", "queue", "radio", "sensor", "tower",
  "uplink", "vehicle", "wearable", "xpoint", "yard", "zone", "camera", "drone", "factory", "campus",
  "station", "stream", "frame", "face", "object", "track", "route", "signal", "beacon", "cell",
  "Berlin", "Tokyo", "Lagos", "Lima", "Oslo", "Pune", "Quito", "Seoul", "Turin", "Zurich",
  "amber", "blue", "coral", "dune", "ember", "frost", "grove", "harbor", "iris", "jade",
};
#define NWORDS (sizeof words / sizeof words[0])

static unsigned long long rng = 88172645463325252ULL;
static unsigned long long next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }
static const char *word(void) { return words[next() % NWORDS]; }

static void fill_record(char *r, unsigned long key, unsigned long version) {
  int n = snprintf(r, RECORD, "key:%08lu v%lu name=%s-%s city=%s score=%llu note=%s %s %s %s\n",
                   key, version, word(), word(), word(), next() % 100000, word(), word(), word(), word());
  if (n < RECORD) memset(r + n, ' ', RECORD - n);
  r[RECORD - 1] = '\n';
}

int main(int argc, char **argv) {
  long mib = argc > 1 ? atol(argv[1]) : 64;
  long rate = argc > 2 ? atol(argv[2]) : 2000;
  long interval_ms = argc > 3 ? atol(argv[3]) : 200;
  size_t records = ((size_t)mib << 20) / RECORD;
  char *store = malloc(records * RECORD);
  unsigned long *versions = calloc(records, sizeof *versions);
  if (!store || !versions) { printf("EHOFF-ERROR kvstore cannot allocate %ld MiB\n", mib); return 1; }
  for (size_t i = 0; i < records; i++) fill_record(store + i * RECORD, i, 0);
  printf("EHOFF-KVSTORE-LOADED %zu records\n", records);
  FILE *log = fopen("/data/kv.log", "a");
  struct timespec pause = { interval_ms / 1000, (interval_ms % 1000) * 1000000L };
  long per_tick = rate * interval_ms / 1000;
  if (per_tick < 1) per_tick = 1;
  unsigned long long n = 0;
  for (;;) {
    n++;
    for (long k = 0; k < per_tick; k++) {
      size_t i = next() % records;
      fill_record(store + i * RECORD, i, ++versions[i]);
      if (log && k < 32) fwrite(store + i * RECORD, 1, RECORD, log);
    }
    if (log && n % 5 == 0) { fflush(log); fsync(fileno(log)); }
    printf("HB %llu %llu\n", n, n * (unsigned long long)per_tick);
    fflush(stdout);
    nanosleep(&pause, NULL);
  }
}
