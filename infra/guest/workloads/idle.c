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
  for (;;) {
    beat(interval);
    usleep((useconds_t)(interval * 1000));
  }
}
