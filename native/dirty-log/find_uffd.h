/*
 * Finding, in another process, the userfaultfd uffd_preload.c created inside QEMU: above
 * descriptor 1000, with async write-protection in its API handshake (one QEMU made for itself
 * must not be registered: a write would then wait for an event nobody reads). Shared by the dirty
 * log (dirty_log.c) and the post-copy fault servers (uffd_serve.c, uffd_pipe_serve.c).
 */
#ifndef EHOFF_FIND_UFFD_H
#define EHOFF_FIND_UFFD_H
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PRELOAD_FD_MIN 1000
#define FEATURE_WP_ASYNC (1ULL << 15)

/* Whether descriptor `fd` of `pid` is a userfaultfd whose API handshake asked for async
   write-protection (its fdinfo's "API:\t<api>:<features>:<ioctls>" line). */
static inline int is_async_wp(int pid, int fd) {
  char path[64], text[512];
  snprintf(path, sizeof path, "/proc/%d/fdinfo/%d", pid, fd);
  FILE *f = fopen(path, "re");
  if (!f) return 0;
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = 0;
  const char *api = strstr(text, "API:\t");
  unsigned long long version, features;
  return api && sscanf(api + 5, "%llx:%llx", &version, &features) == 2 && (features & FEATURE_WP_ASYNC);
}

/* The descriptor number of the userfaultfd uffd_preload.c made in QEMU (above 1000, async
   write-protect: one QEMU created for itself must not be registered for write-protection, a
   write to it would then wait for an event nobody reads); -1 if there is none. */
static inline int find_uffd(int pid) {
  char dir_path[64], link_path[320], target[64];
  snprintf(dir_path, sizeof dir_path, "/proc/%d/fd", pid);
  DIR *dir = opendir(dir_path);
  if (!dir) return -2;
  int found = -1;
  struct dirent *e;
  while ((e = readdir(dir)) != NULL) {
    if (e->d_name[0] == '.') continue;
    snprintf(link_path, sizeof link_path, "%s/%s", dir_path, e->d_name);
    ssize_t n = readlink(link_path, target, sizeof target - 1);
    if (n < 0) continue;
    target[n] = 0;
    int fd = atoi(e->d_name);
    if (fd >= PRELOAD_FD_MIN && strcmp(target, "anon_inode:[userfaultfd]") == 0 && is_async_wp(pid, fd)) {
      found = fd;
      break;
    }
  }
  closedir(dir);
  return found;
}

/* For the fault servers: that userfaultfd of QEMU `pid`, taken into this process with
   pidfd_getfd; -1 (the reason printed) if it cannot be had. */
static inline int take_uffd(int pid) {
  int remote = find_uffd(pid);
  if (remote < 0) return fprintf(stderr, "QEMU %d holds no userfaultfd\n", pid), -1;
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  int uffd = pidfd < 0 ? -1 : (int)syscall(SYS_pidfd_getfd, pidfd, remote, 0);
  if (uffd < 0) perror("pidfd_getfd");
  if (pidfd >= 0) close(pidfd);
  return uffd;
}

#endif
