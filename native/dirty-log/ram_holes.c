/*
 * The holes of a guest RAM file on tmpfs, which post-copy's target uses as its list of missing
 * pages: a page is punched out where the target holds it stale, and it is in again once the
 * fault server copied it there. The file itself is then the durable record of what is still to
 * come, which a restarted worker reads back (no separate record to keep in step with it).
 *
 *   punchHoles(fd: number, runs: Uint32Array): frees [first, first + count) pages for each
 *     (first, count) pair, the file's size kept.
 *   holes(fd: number, pages: number): Uint32Array of (first, count) pairs, the holes among the
 *     file's first `pages` pages, ascending (SEEK_HOLE / SEEK_DATA).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAGE 4096

static napi_value fail(napi_env env, const char *what) {
  char msg[256];
  snprintf(msg, sizeof msg, "ram_holes: %s: %s", what, strerror(errno));
  napi_throw_error(env, NULL, msg);
  return NULL;
}

static napi_value punch_holes(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd;
  napi_typedarray_type type;
  size_t n;
  void *data;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_typedarray_info(env, argv[1], &type, &n, &data, NULL, NULL) != napi_ok || type != napi_uint32_array || n % 2) {
    napi_throw_type_error(env, NULL, "ram_holes.punchHoles(fd: number, runs: Uint32Array of (first, count) pairs)");
    return NULL;
  }
  const uint32_t *runs = data;
  for (size_t k = 0; k < n; k += 2) {
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)runs[k] * PAGE, (off_t)runs[k + 1] * PAGE) < 0) return fail(env, "punching a hole");
  }
  return NULL;
}

static napi_value list_holes(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd;
  double pages;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_double(env, argv[1], &pages) != napi_ok || !(pages >= 0 && pages <= 4294967295.0)) {
    napi_throw_type_error(env, NULL, "ram_holes.holes(fd: number, pages: number)");
    return NULL;
  }
  off_t end = (off_t)pages * PAGE;
  size_t cap = 1024, count = 0;
  uint32_t *runs = malloc(cap * sizeof *runs);
  if (!runs) return fail(env, "out of memory");
  for (off_t at = 0; at < end;) {
    off_t hole = lseek(fd, at, SEEK_HOLE);
    if (hole < 0) return free(runs), fail(env, "SEEK_HOLE");
    if (hole >= end) break;
    off_t data = lseek(fd, hole, SEEK_DATA);
    /* ENXIO: no data after it, the hole runs to the end of the file. */
    if (data < 0 && errno != ENXIO) return free(runs), fail(env, "SEEK_DATA");
    if (data < 0 || data > end) data = end;
    if (count + 2 > cap) {
      uint32_t *grown = realloc(runs, (cap *= 2) * sizeof *runs);
      if (!grown) return free(runs), fail(env, "out of memory");
      runs = grown;
    }
    runs[count++] = (uint32_t)(hole / PAGE);
    runs[count++] = (uint32_t)((data - hole) / PAGE);
    at = data;
  }
  void *out_data;
  napi_value out_buffer, out;
  if (napi_create_arraybuffer(env, count * sizeof *runs, &out_data, &out_buffer) != napi_ok ||
      napi_create_typedarray(env, napi_uint32_array, count, out_buffer, 0, &out) != napi_ok) {
    free(runs);
    napi_throw_error(env, NULL, "ram_holes: cannot allocate the result");
    return NULL;
  }
  memcpy(out_data, runs, count * sizeof *runs);
  free(runs);
  return out;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "punchHoles", NAPI_AUTO_LENGTH, punch_holes, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "punchHoles", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "holes", NAPI_AUTO_LENGTH, list_holes, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "holes", fn) != napi_ok) return NULL;
  return exports;
}
