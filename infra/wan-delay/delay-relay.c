/*
 * delay-relay: the WAN testbed's propagation delay. This kernel has no netem (and no fq for
 * EDT pacing), so the delay is added in user space: two interfaces without addresses, in a
 * namespace of their own between a cloudlet and the core, and every Ethernet frame that
 * arrives on one is sent out of the other a fixed time later, in order. The rate is shaped
 * before the relay (tbf on the sending veth); a fixed delay on a FIFO does not change it.
 *
 *   delay-relay IF_A IF_B ONE_WAY_DELAY_US
 *
 * Frames must be whole: the veths around the relay run without checksum and segmentation
 * offloads (ethtool -K … tx off tso off gso off), so what a packet socket reads is what goes
 * on the wire. Prints its counters on stderr when it ends (SIGTERM/SIGINT).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

#define SLOTS 4096 /* frames held per direction: 50 ms at 1 Gbit/s of 1514-byte frames */
#define FRAME_MAX 2048

struct slot {
  uint64_t due_ns;
  uint32_t len;
  unsigned char data[FRAME_MAX];
};

struct direction {
  int in, out;
  struct slot *ring;
  uint32_t head, count;
  uint64_t relayed, dropped_full, dropped_big, send_errors;
};

static volatile sig_atomic_t stopping = 0;
static void on_signal(int sig) { (void)sig; stopping = 1; }

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int open_port(const char *name) {
  unsigned idx = if_nametoindex(name);
  if (!idx) { fprintf(stderr, "delay-relay: no interface %s\n", name); exit(2); }
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK, htons(ETH_P_ALL));
  if (fd < 0) { perror("delay-relay: socket(AF_PACKET)"); exit(2); }
  struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL), .sll_ifindex = (int)idx };
  if (bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0) { perror("delay-relay: bind"); exit(2); }
  /* Frames are for the far side, not for this interface's address: take them all. */
  struct packet_mreq mr = { .mr_ifindex = (int)idx, .mr_type = PACKET_MR_PROMISC };
  if (setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) < 0) { perror("delay-relay: promisc"); exit(2); }
  int one = 1;
  setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one); /* checked per frame too */
  int buf = 8 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf);
  return fd;
}

static void take(struct direction *d, uint64_t delay_ns) {
  for (;;) {
    struct slot *s = &d->ring[(d->head + d->count) % SLOTS];
    struct sockaddr_ll from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(d->in, s->data, FRAME_MAX, MSG_TRUNC, (struct sockaddr *)&from, &fl);
    if (n < 0) return; /* EAGAIN: drained */
    if (from.sll_pkttype == PACKET_OUTGOING) continue; /* our own sends on this port */
    if (n > FRAME_MAX) { d->dropped_big++; continue; }
    if (d->count == SLOTS) { d->dropped_full++; continue; }
    s->len = (uint32_t)n;
    s->due_ns = now_ns() + delay_ns;
    d->count++;
  }
}

static void release(struct direction *d, uint64_t now) {
  while (d->count && d->ring[d->head].due_ns <= now) {
    struct slot *s = &d->ring[d->head];
    if (send(d->out, s->data, s->len, 0) < 0) d->send_errors++;
    else d->relayed++;
    d->head = (d->head + 1) % SLOTS;
    d->count--;
  }
}

int main(int argc, char **argv) {
  if (argc != 4) { fprintf(stderr, "usage: delay-relay IF_A IF_B ONE_WAY_DELAY_US\n"); return 2; }
  char *end;
  unsigned long delay_us = strtoul(argv[3], &end, 10);
  if (*end || delay_us > 10000000) { fprintf(stderr, "delay-relay: delay '%s' is not microseconds (0-10000000)\n", argv[3]); return 2; }
  uint64_t delay_ns = (uint64_t)delay_us * 1000;
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  int a = open_port(argv[1]), b = open_port(argv[2]);
  struct direction dirs[2] = { { .in = a, .out = b }, { .in = b, .out = a } };
  for (int i = 0; i < 2; i++) {
    dirs[i].ring = calloc(SLOTS, sizeof(struct slot));
    if (!dirs[i].ring) { fprintf(stderr, "delay-relay: out of memory\n"); return 2; }
  }
  fprintf(stderr, "delay-relay: %s <-> %s, %lu us each way\n", argv[1], argv[2], delay_us);
  while (!stopping) {
    uint64_t now = now_ns();
    for (int i = 0; i < 2; i++) release(&dirs[i], now);
    uint64_t next = UINT64_MAX;
    for (int i = 0; i < 2; i++) if (dirs[i].count && dirs[i].ring[dirs[i].head].due_ns < next) next = dirs[i].ring[dirs[i].head].due_ns;
    struct timespec wait = { .tv_sec = 1, .tv_nsec = 0 };
    if (next != UINT64_MAX) {
      uint64_t left = next > now ? next - now : 0;
      wait.tv_sec = (time_t)(left / 1000000000u);
      wait.tv_nsec = (long)(left % 1000000000u);
    }
    struct pollfd p[2] = { { .fd = a, .events = POLLIN }, { .fd = b, .events = POLLIN } };
    if (ppoll(p, 2, &wait, NULL) < 0 && errno != EINTR) { perror("delay-relay: ppoll"); return 1; }
    for (int i = 0; i < 2; i++) if (p[i].revents & POLLIN) take(&dirs[i], delay_ns);
  }
  for (int i = 0; i < 2; i++) {
    fprintf(stderr, "delay-relay: %s -> %s: %lu relayed, %lu dropped (queue full), %lu dropped (too big), %lu send errors\n",
            argv[1 + i], argv[2 - i], (unsigned long)dirs[i].relayed, (unsigned long)dirs[i].dropped_full,
            (unsigned long)dirs[i].dropped_big, (unsigned long)dirs[i].send_errors);
  }
  return 0;
}
