/*
 * The kernel's dirty log of a running QEMU's guest RAM, without patching QEMU: the userfaultfd
 * that uffd_preload.c created inside QEMU write-protects the RAM mapping asynchronously, and the
 * PAGEMAP_SCAN ioctl on /proc/<pid>/pagemap (Linux >= 6.7) lists the pages written since and
 * write-protects them again in the same walk, so no write falls between reading and re-arming.
 * Per epoch this costs a page-table walk (well under a millisecond per GiB when little was
 * written) where the hash scan reads and hashes every page of the RAM file.
 *
 *   arm(pid, start: bigint, length: number): registers [start, start + length) of QEMU's address
 *     space for write-protection and protects all of it: from now on, only writes count.
 *   collect(pid, start: bigint, length: number): Uint32Array of the pages (index from start)
 *     written since the last arm or collect; they are protected again. Ascending within one
 *     PAGEMAP_SCAN call, not across them: a call can return a walk_end behind what it walked,
 *     and the next call, resuming there, lists again the pages written since — repeats, never a
 *     page missed (engine/memory/dirty-log.ts ascendingPages makes the list ascending).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PAGE 4096

/* Linux 6.7's PAGEMAP_SCAN (include/uapi/linux/fs.h), absent from older headers. */
#ifndef PAGEMAP_SCAN
#define PAGE_IS_WRITTEN (1 << 1)
struct page_region {
  uint64_t start;
  uint64_t end;
  uint64_t categories;
};
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
struct pm_scan_arg {
  uint64_t size;
  uint64_t flags;
  uint64_t start;
  uint64_t end;
  uint64_t walk_end;
  uint64_t vec;
  uint64_t vec_len;
  uint64_t max_pages;
  uint64_t category_inverted;
  uint64_t category_mask;
  uint64_t category_anyof_mask;
  uint64_t return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

#define REGIONS 4096

#define CHECK(call)                                                      \
  do {                                                                   \
    if ((call) != napi_ok) {                                             \
      napi_throw_error(env, NULL, "dirty_log: N-API call failed: " #call); \
      return NULL;                                                       \
    }                                                                    \
  } while (0)

static napi_value fail(napi_env env, const char *what, int pid) {
  char msg[512];
  snprintf(msg, sizeof msg, "dirty_log: %s (QEMU pid %d): %s", what, pid, strerror(errno));
  napi_throw_error(env, NULL, msg);
  return NULL;
}

/* The (pid, start, length) every call takes; 0 on a thrown error. */
static int range_args(napi_env env, napi_callback_info info, const char *name, int32_t *pid, uint64_t *start, uint64_t *length) {
  size_t argc = 3;
  napi_value argv[3];
  bool lossless;
  double len;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3 || napi_get_value_int32(env, argv[0], pid) != napi_ok ||
      napi_get_value_bigint_uint64(env, argv[1], start, &lossless) != napi_ok || !lossless || napi_get_value_double(env, argv[2], &len) != napi_ok) {
    char msg[128];
    snprintf(msg, sizeof msg, "dirty_log.%s(pid: number, start: bigint, length: number)", name);
    napi_throw_type_error(env, NULL, msg);
    return 0;
  }
  if (*pid <= 0 || !(len > 0 && len <= 9007199254740992.0) || *start % PAGE) {
    napi_throw_range_error(env, NULL, "dirty_log: need a positive pid and a page-aligned, non-empty range");
    return 0;
  }
  *length = (uint64_t)len;
  if ((double)*length != len || *length % PAGE) {
    napi_throw_range_error(env, NULL, "dirty_log: need a positive pid and a page-aligned, non-empty range");
    return 0;
  }
  return 1;
}

#include "find_uffd.h"

/* close() that leaves errno as the failure before it set it, for the message. */
static void close_keeping_errno(int fd) {
  int saved = errno;
  close(fd);
  errno = saved;
}

static napi_value arm(napi_env env, napi_callback_info info) {
  int32_t pid;
  uint64_t start, length;
  if (!range_args(env, info, "arm", &pid, &start, &length)) return NULL;
  int remote = find_uffd(pid);
  if (remote == -2) return fail(env, "cannot list the descriptors", pid);
  if (remote < 0) {
    errno = ENOENT;
    return fail(env, "QEMU holds no userfaultfd (started without the preload library, or the kernel refused async write-protection)", pid);
  }
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pidfd < 0) return fail(env, "pidfd_open", pid);
  int uffd = (int)syscall(SYS_pidfd_getfd, pidfd, remote, 0);
  close_keeping_errno(pidfd);
  if (uffd < 0) return fail(env, "pidfd_getfd of QEMU's userfaultfd", pid);
  struct uffdio_register reg = {.range = {.start = start, .len = length}, .mode = UFFDIO_REGISTER_MODE_WP};
  if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) {
    close_keeping_errno(uffd);
    return fail(env, "UFFDIO_REGISTER of the guest RAM for write-protection", pid);
  }
  struct uffdio_writeprotect wp = {.range = {.start = start, .len = length}, .mode = UFFDIO_WRITEPROTECT_MODE_WP};
  if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) < 0) {
    close_keeping_errno(uffd);
    return fail(env, "UFFDIO_WRITEPROTECT of the guest RAM", pid);
  }
  /* QEMU's own descriptor keeps the registration alive; this copy is not needed again. */
  close(uffd);
  return NULL;
}

static napi_value collect(napi_env env, napi_callback_info info) {
  int32_t pid;
  uint64_t start, length;
  if (!range_args(env, info, "collect", &pid, &start, &length)) return NULL;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/pagemap", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(env, "cannot open /proc/<pid>/pagemap", pid);
  struct page_region *regions = malloc(REGIONS * sizeof *regions);
  size_t cap = 1024, count = 0;
  uint32_t *pages = malloc(cap * sizeof *pages);
  if (!regions || !pages) {
    free(regions);
    free(pages);
    close(fd);
    napi_throw_error(env, NULL, "dirty_log: out of memory");
    return NULL;
  }
  struct pm_scan_arg arg = {
      .size = sizeof arg,
      .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
      .start = start,
      .end = start + length,
      .vec = (uint64_t)(uintptr_t)regions,
      .vec_len = REGIONS,
      /* Exactly these masks: the kernel's walk for them counts an empty entry as written (a
         page written, then reclaimed, leaves one), where the general walk would skip it. */
      .category_mask = PAGE_IS_WRITTEN,
      .return_mask = PAGE_IS_WRITTEN,
  };
  for (;;) {
    int n = ioctl(fd, PAGEMAP_SCAN, &arg);
    if (n < 0) {
      free(regions);
      free(pages);
      close_keeping_errno(fd);
      return fail(env, "PAGEMAP_SCAN of the guest RAM", pid);
    }
    for (int i = 0; i < n; i++) {
      for (uint64_t a = regions[i].start; a < regions[i].end; a += PAGE) {
        if (count == cap) {
          cap *= 2;
          uint32_t *grown = realloc(pages, cap * sizeof *pages);
          if (!grown) {
            free(regions);
            free(pages);
            close(fd);
            napi_throw_error(env, NULL, "dirty_log: out of memory");
            return NULL;
          }
          pages = grown;
        }
        pages[count++] = (uint32_t)((a - start) / PAGE);
      }
    }
    if (arg.walk_end >= start + length) break;
    if (arg.walk_end <= arg.start) {
      free(regions);
      free(pages);
      close(fd);
      errno = EIO;
      return fail(env, "PAGEMAP_SCAN made no progress", pid);
    }
    arg.start = arg.walk_end;
  }
  free(regions);
  close(fd);
  void *out_data;
  napi_value out_buffer, out;
  if (napi_create_arraybuffer(env, count * sizeof(uint32_t), &out_data, &out_buffer) != napi_ok) {
    free(pages);
    napi_throw_error(env, NULL, "dirty_log: cannot allocate the result");
    return NULL;
  }
  memcpy(out_data, pages, count * sizeof(uint32_t));
  free(pages);
  CHECK(napi_create_typedarray(env, napi_uint32_array, count, out_buffer, 0, &out));
  return out;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "arm", NAPI_AUTO_LENGTH, arm, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "arm", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "collect", NAPI_AUTO_LENGTH, collect, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "collect", fn) != napi_ok) return NULL;
  return exports;
}
