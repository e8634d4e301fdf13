/*
 * idle: an application that holds no changing state; only its heartbeat moves.
 * usage: idle [interval-ms]
 */
#include <stdlib.h>
#include <unistd.h>
#include "beat.h"

int main(int argc, char **argv) {
  double interval = argc > 1 ? atof(argv[1]) : 200;
  if (interval < 1) interval = 1;
  /* Its only work is waking up on time: the rounds of its loop. */
  for (unsigned long long rounds = 1;; rounds++) {
    beat(interval, rounds);
    usleep((useconds_t)(interval * 1000));
  }
}
