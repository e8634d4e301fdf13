/*
 * Post-copy's target side, fed over a pipe: serves the missing-page faults of a QEMU whose guest
 * RAM file has holes (the pages the target holds stale) with pages its parent hands it, having
 * fetched them from the source and checked each against the source's stop-time hash. The
 * userfaultfd is the one uffd_preload.c made inside QEMU (taken with pidfd_getfd), registered for
 * missing pages over QEMU's mapping of the RAM file; a page is put in with UFFDIO_COPY, which
 * fills the file and wakes whoever waits on it.
 *
 *   ehoff-uffd-pipe-serve <qemu pid> <mapping start, hex> <length> <ram file>
 *
 * stdout, lines: "serving" once registered; "F <page>" for each page a fault waits on (once per
 * page); at the end one JSON line of what it did.
 * stdin, records: u64 little-endian page index, then the page's 4096 bytes. A page already in
 * (a fault and the push both brought it) is counted and dropped.
 * At EOF it checks that the RAM file has no hole left, and only then unregisters: a hole left
 * behind would read as zeros once unregistered, so it exits 3 with the range still registered,
 * and the next touch of that hole waits for good (whoever started it must then end that QEMU, or
 * start another server on the same userfaultfd: its registration lives in QEMU, not here).
 * Registering replaces the range's modes and unregistering clears them: the dirty log's
 * write-protection must not be armed on this QEMU until the server is done.
 */
#define _GNU_SOURCE
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
#include <unistd.h>

#include "find_uffd.h"

#define PAGE 4096
#define RECORD (8 + PAGE)
#define RECORDS_PER_READ 64

static unsigned char *in_place; /* one bit per page: copied by this server, or found there */
static unsigned char *reported; /* one bit per page: a fault on it was reported */

static int bit(const unsigned char *map, uint64_t i) { return map[i / 8] >> (i % 8) & 1; }
static void set_bit(unsigned char *map, uint64_t i) { map[i / 8] |= (unsigned char)(1 << (i % 8)); }

/* Puts one page in: 1 copied, 0 already there (a fault's wake happens either way), -1 failed. */
static int put_page(int uffd, uint64_t start, uint64_t index, unsigned char *bytes) {
  struct uffdio_copy copy = {.dst = start + index * PAGE, .src = (uint64_t)(uintptr_t)bytes, .len = PAGE, .mode = 0};
  while (ioctl(uffd, UFFDIO_COPY, &copy) < 0) {
    if (errno == EEXIST) {
      struct uffdio_range r = {.start = start + index * PAGE, .len = PAGE};
      ioctl(uffd, UFFDIO_WAKE, &r);
      return 0;
    }
    if (errno != EAGAIN) return -1;
  }
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: ehoff-uffd-pipe-serve <qemu pid> <mapping start, hex> <length> <ram file>\n");
    return 2;
  }
  int pid = atoi(argv[1]);
  uint64_t start = strtoull(argv[2], NULL, 16), length = strtoull(argv[3], NULL, 10);
  int ram = open(argv[4], O_RDONLY | O_CLOEXEC);
  if (ram < 0) return perror("ram file"), 1;
  int uffd = take_uffd(pid);
  if (uffd < 0) return 1;
  uint64_t pages = length / PAGE;
  in_place = calloc(pages / 8 + 1, 1);
  reported = calloc(pages / 8 + 1, 1);
  unsigned char *buf = aligned_alloc(PAGE, RECORDS_PER_READ * RECORD + PAGE);
  unsigned char *page = aligned_alloc(PAGE, PAGE);
  if (!in_place || !reported || !buf || !page) return fprintf(stderr, "out of memory\n"), 1;
  struct uffdio_register reg = {.range = {.start = start, .len = length}, .mode = UFFDIO_REGISTER_MODE_MISSING};
  if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) return perror("UFFDIO_REGISTER missing"), 1;
  /* A server before this one (its worker died) may have read faults it never answered: their
     threads wait for a wake that no message will bring. Woken, they touch the page again and
     fault to this server. */
  struct uffdio_range whole = {.start = start, .len = length};
  if (ioctl(uffd, UFFDIO_WAKE, &whole) < 0) return perror("UFFDIO_WAKE"), 1;
  printf("serving\n");
  fflush(stdout);
  uint64_t faults = 0, copied = 0, already = 0;
  size_t held = 0; /* bytes of an incomplete record carried to the next read */
  for (;;) {
    struct pollfd p[2] = {{.fd = uffd, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return perror("poll"), 1;
    }
    if (p[0].revents & POLLIN) {
      struct uffd_msg msg;
      while (read(uffd, &msg, sizeof msg) == sizeof msg) {
        if (msg.event != UFFD_EVENT_PAGEFAULT) continue;
        uint64_t index = (msg.arg.pagefault.address - start) / PAGE;
        if (index >= pages) continue;
        if (bit(in_place, index)) {
          /* Its page came between the fault and this read: the copy woke it, or this does. */
          struct uffdio_range r = {.start = start + index * PAGE, .len = PAGE};
          ioctl(uffd, UFFDIO_WAKE, &r);
          continue;
        }
        /* Each page once: its threads all wake when it is put in. */
        if (bit(reported, index)) continue;
        set_bit(reported, index);
        faults++;
        printf("F %llu\n", (unsigned long long)index);
      }
      fflush(stdout);
    }
    if (p[1].revents & (POLLIN | POLLHUP)) {
      ssize_t n = read(0, buf + held, RECORDS_PER_READ * RECORD - held);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return perror("stdin"), 1;
      if (n == 0) break;
      held += (size_t)n;
      size_t off = 0;
      for (; held - off >= RECORD; off += RECORD) {
        uint64_t index;
        memcpy(&index, buf + off, 8);
        if (index >= pages) return fprintf(stderr, "page %llu is past the mapping's %llu pages\n", (unsigned long long)index, (unsigned long long)pages), 1;
        memcpy(page, buf + off + 8, PAGE);
        int r = put_page(uffd, start, index, page);
        if (r < 0) return perror("UFFDIO_COPY"), 1;
        if (r) copied++;
        else already++;
        set_bit(in_place, index);
      }
      memmove(buf, buf + off, held - off);
      held -= off;
    }
  }
  if (held) return fprintf(stderr, "stdin ended inside a page record (%zu bytes)\n", held), 1;
  off_t hole = lseek(ram, 0, SEEK_HOLE);
  if (hole < 0) return perror("SEEK_HOLE"), 1;
  if ((uint64_t)hole < length) {
    fprintf(stderr, "page %llu is still missing: the range stays registered\n", (unsigned long long)(hole / PAGE));
    return 3;
  }
  struct uffdio_range all = {.start = start, .len = length};
  if (ioctl(uffd, UFFDIO_UNREGISTER, &all) < 0) return perror("UFFDIO_UNREGISTER"), 1;
  printf("{\"faults\":%llu,\"copied\":%llu,\"already\":%llu,\"pages\":%llu}\n", (unsigned long long)faults, (unsigned long long)copied,
         (unsigned long long)already, (unsigned long long)pages);
  return 0;
}
