/*
 * Loaded into QEMU with LD_PRELOAD: creates, before QEMU's main runs, the userfaultfd the VM's
 * dirty log rests on, with asynchronous write-protection (the kernel resolves a write to a
 * protected page itself and marks the page written; nobody reads fault events). It has to be
 * created inside QEMU: a userfaultfd serves the address space of the process that created it.
 * The worker takes a copy with pidfd_getfd (dirty_log.c), finding it by its /proc/<pid>/fd link,
 * and registers QEMU's guest RAM mapping with it. QEMU never touches the descriptor; it sits above
 * 1000, out of the way of descriptors QEMU numbers itself. Where the kernel refuses (no
 * userfaultfd, no async write-protection: Linux < 6.7), there is simply no descriptor and the
 * handoff scans the RAM file by hash instead.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif

#define HIGH_FD 1000

__attribute__((constructor)) static void ehoff_create_dirty_log_fd(void) {
  /* Only QEMU itself: whatever it might exec must not create one too. */
  unsetenv("LD_PRELOAD");
  /* Unprivileged processes may create one for user-mode faults only; async write-protect
     resolves kernel-mode writes (a disk read into guest RAM) before that distinction applies. */
  int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
  if (fd < 0) return;
  /* Missing-page faults on shmem too: at a post-copy target, the pages still to come are holes. */
  struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_MISSING_SHMEM};
  if (ioctl(fd, UFFDIO_API, &api) < 0) {
    close(fd);
    return;
  }
  int high = fcntl(fd, F_DUPFD_CLOEXEC, HIGH_FD);
  close(fd);
  (void)high;
}
