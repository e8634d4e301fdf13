/* idle: an application that holds no changing state; only its heartbeat moves. */
#include <unistd.h>
#include "beat.h"

int main(void) {
  for (;;) {
    beat(200);
    usleep(200 * 1000);
  }
}
