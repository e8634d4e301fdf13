/*
 * imageproc: a face-detection-like loop. Each frame is synthesized (a moving scene plus sensor
 * noise), smoothed with a 5x5 blur, turned into an integral image, and scanned by a sliding
 * window whose detections go into a results ring. CPU-heavy, with moderate memory churn: the
 * frame buffers are rewritten every frame, the ring slowly.
 *
 * usage: imageproc [frames-held] [interval-ms]
 */
#include <stdlib.h>
#include <string.h>
#include "beat.h"

#define W 640
#define H 480

int main(int argc, char **argv) {
  int held = argc > 1 ? atoi(argv[1]) : 16;
  double interval = argc > 2 ? atof(argv[2]) : 200;
  unsigned char *frames = malloc((size_t)held * W * H);
  unsigned char *blur = malloc(W * H);
  unsigned *integral = malloc(sizeof(unsigned) * (W + 1) * (H + 1));
  char *results = malloc(1 << 20);
  if (!frames || !blur || !integral || !results) { printf("EHOFF-ERROR imageproc cannot allocate\n"); return 1; }
  memset(results, ' ', 1 << 20);
  unsigned seed = 12345, frame = 0;
  size_t cursor = 0;
  for (;;) {
    unsigned char *f = frames + (size_t)(frame % held) * W * H;
    for (int y = 0; y < H; y++)
      for (int x = 0; x < W; x++) {
        seed = seed * 1103515245 + 12345;
        int scene = ((x + frame * 3) / 40 + (y + frame) / 30) % 2 ? 180 : 60;
        f[y * W + x] = (unsigned char)(scene + ((seed >> 16) & 15));
      }
    for (int y = 2; y < H - 2; y++)
      for (int x = 2; x < W - 2; x++) {
        unsigned s = 0;
        for (int dy = -2; dy <= 2; dy++)
          for (int dx = -2; dx <= 2; dx++) s += f[(y + dy) * W + x + dx];
        blur[y * W + x] = (unsigned char)(s / 25);
      }
    for (int y = 0; y <= H; y++) integral[y * (W + 1)] = 0;
    for (int x = 0; x <= W; x++) integral[x] = 0;
    for (int y = 1; y <= H; y++)
      for (int x = 1; x <= W; x++)
        integral[y * (W + 1) + x] = blur[(y - 1) * W + x - 1] + integral[(y - 1) * (W + 1) + x] + integral[y * (W + 1) + x - 1] - integral[(y - 1) * (W + 1) + x - 1];
    int found = 0;
    for (int y = 0; y + 48 <= H; y += 8)
      for (int x = 0; x + 48 <= W; x += 8) {
        unsigned a = integral[y * (W + 1) + x], b = integral[y * (W + 1) + x + 48];
        unsigned c = integral[(y + 48) * (W + 1) + x], d = integral[(y + 48) * (W + 1) + x + 48];
        if ((d - b - c + a) / (48 * 48) > 150) found++;
      }
    int n = snprintf(results + cursor, 64, "frame %u faces %d\n", frame, found);
    cursor = (cursor + n) % ((1 << 20) - 64);
    frame++;
    beat(interval, frame);
  }
}
