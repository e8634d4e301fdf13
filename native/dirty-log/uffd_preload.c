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
  /* Not UFFD_USER_MODE_ONLY, which an unprivileged process could have: post-copy's missing pages
     fault from kernel mode too (a disk read into a hole, KVM), and such a descriptor answers those
     with SIGBUS. Without the privilege (root, CAP_SYS_PTRACE, vm.unprivileged_userfaultfd) there
     is no descriptor: the handoff hashes instead, and says so. */
  int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return;
  /* MISSING_SHMEM: missing-page faults on tmpfs, post-copy's holes (this kernel registers them
     without it; asked for as the API documents it). */
  struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_MISSING_SHMEM};
  if (ioctl(fd, UFFDIO_API, &api) < 0) {
    close(fd);
    return;
  }
  int high = fcntl(fd, F_DUPFD_CLOEXEC, HIGH_FD);
  close(fd);
  (void)high;
}
