/*
 * Post-copy's target side, local form: serves the page faults of a QEMU whose guest RAM file has
 * holes (pages not yet there) from a source file, and pushes every other page in the background,
 * faults first. The userfaultfd is the one uffd_preload.c made inside QEMU (taken with
 * pidfd_getfd), registered for missing pages over QEMU's mapping of the RAM file; a fault is
 * filled with UFFDIO_COPY, which puts the page in the file and wakes the faulting thread.
 *
 *   ehoff-uffd-serve <qemu pid> <mapping start, hex> <length> <source file>
 *
 * Registers, prints "serving", then runs until every page is in and unregisters; prints one JSON
 * line of what it did: faults served, the time from reading a fault to its page in place, pages
 * pushed. Not yet the handoff's: the pages come from a local file, not from the source over the
 * data plane, and nothing checks them on arrival (issue 15).
 *
 * If it exits non-zero (or dies) before every page is in, QEMU's own descriptor keeps the range
 * registered and the next touch of a hole waits for good: whoever started it must then end that
 * QEMU. (Unregistering on failure would be worse: a hole would read as zeros.) Registering
 * replaces the range's modes and unregistering clears them: the dirty log's write-protection
 * must not be armed on this QEMU until the server is done.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "find_uffd.h"

#define PAGE 4096
#define PUSH_RUN 64
#define MAX_FAULTS 1000000

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Copies `n` pages at page `index` from the source into QEMU's mapping: 1 if copied, 0 if the
   push got there first (the fault is woken all the same), -1 on failure. */
static long fill(int uffd, int src, uint64_t start, uint64_t index, uint64_t n, unsigned char *buf) {
  if (pread(src, buf, n * PAGE, (off_t)(index * PAGE)) != (ssize_t)(n * PAGE)) return -1;
  struct uffdio_copy copy = {.dst = start + index * PAGE, .src = (uint64_t)(uintptr_t)buf, .len = n * PAGE, .mode = 0};
  while (ioctl(uffd, UFFDIO_COPY, &copy) < 0) {
    if (errno == EEXIST) return 0;
    if (errno != EAGAIN) return -1;
  }
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: ehoff-uffd-serve <qemu pid> <mapping start, hex> <length> <source file>\n");
    return 2;
  }
  int pid = atoi(argv[1]);
  uint64_t start = strtoull(argv[2], NULL, 16), length = strtoull(argv[3], NULL, 10);
  int src = open(argv[4], O_RDONLY | O_CLOEXEC);
  if (src < 0) return perror("source file"), 1;
  int uffd = take_uffd(pid);
  if (uffd < 0) return 1;
  struct uffdio_register reg = {.range = {.start = start, .len = length}, .mode = UFFDIO_REGISTER_MODE_MISSING};
  if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) return perror("UFFDIO_REGISTER missing"), 1;
  printf("serving\n");
  fflush(stdout);
  unsigned char *buf = aligned_alloc(PAGE, PUSH_RUN * PAGE);
  double *service = malloc(MAX_FAULTS * sizeof *service);
  if (!buf || !service) return fprintf(stderr, "out of memory\n"), 1;
  uint64_t pages = length / PAGE, pushed = 0, next = 0, faults = 0;
  while (next < pages) {
    /* Faults first: a vCPU waits on each. */
    struct pollfd p = {.fd = uffd, .events = POLLIN};
    while (poll(&p, 1, 0) > 0) {
      struct uffd_msg msg;
      if (read(uffd, &msg, sizeof msg) != sizeof msg) break;
      if (msg.event != UFFD_EVENT_PAGEFAULT) continue;
      double t0 = now_us();
      uint64_t index = (msg.arg.pagefault.address - start) / PAGE;
      long copied = fill(uffd, src, start, index, 1, buf);
      if (copied < 0) return perror("serving a fault"), 1;
      if (copied == 0) continue;
      if (faults < MAX_FAULTS) service[faults] = now_us() - t0;
      faults++;
    }
    uint64_t n = pages - next < PUSH_RUN ? pages - next : PUSH_RUN;
    if (pread(src, buf, n * PAGE, (off_t)(next * PAGE)) != (ssize_t)(n * PAGE)) return perror("source read"), 1;
    struct uffdio_copy copy = {.dst = start + next * PAGE, .src = (uint64_t)(uintptr_t)buf, .len = n * PAGE, .mode = 0};
    int failed = ioctl(uffd, UFFDIO_COPY, &copy) < 0 ? errno : 0;
    if (failed && failed != EEXIST && failed != EAGAIN) return perror("pushing"), 1;
    uint64_t done = copy.copy > 0 ? (uint64_t)copy.copy / PAGE : 0;
    pushed += done;
    /* EEXIST: the run stopped at a page a fault brought in: past it. EAGAIN: from where it stopped. */
    next += done + (failed == EEXIST ? 1 : 0);
  }
  /* Every page is in: no fault of this range may wait on a server that is gone. */
  struct uffdio_range all = {.start = start, .len = length};
  if (ioctl(uffd, UFFDIO_UNREGISTER, &all) < 0) return perror("UFFDIO_UNREGISTER"), 1;
  uint64_t counted = faults < MAX_FAULTS ? faults : MAX_FAULTS;
  qsort(service, counted, sizeof *service, cmp_double);
  printf("{\"faults\":%llu,\"faultServiceMedianUs\":%.1f,\"faultServiceMaxUs\":%.1f,\"pushed\":%llu,\"pages\":%llu}\n", (unsigned long long)faults,
         counted ? service[counted / 2] : 0.0, counted ? service[counted - 1] : 0.0, (unsigned long long)pushed, (unsigned long long)pages);
  return 0;
}
