/*
 * The changed-pages scan of a RAM file: for pages [from, to), pread 4 MiB at a time and compare
 * each 4 KiB page's xxHash64 (seed 0, the same hash as the xxhash-wasm fallback) with the one
 * held for it; return the indices that differ. Synchronous: it runs on a pool thread. In C
 * because on the stopped VM's path one copy and native xxHash64 scan a 1 GiB file about twice
 * as fast as the file read plus wasm hashing (bench/page-scan-bench.ts measures both).
 * xxhash.h comes from Debian's libxxhash-dev, inlined (XXH_INLINE_ALL): no runtime library.
 */
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#define PAGE 4096
#define RUN_PAGES 1024

#define CHECK(call)                                                   \
  do {                                                                \
    if ((call) != napi_ok) {                                          \
      napi_throw_error(env, NULL, "page_scan: N-API call failed: " #call); \
      return NULL;                                                    \
    }                                                                 \
  } while (0)

static napi_value fail(napi_env env, const char *what, const char *path) {
  char msg[4400];
  snprintf(msg, sizeof msg, "page_scan: %s %s: %s", what, path, strerror(errno));
  napi_throw_error(env, NULL, msg);
  return NULL;
}

/* Reads `len` bytes at `off`, zero-filling past the end of the file (as the JS reader does). */
static int read_full(int fd, unsigned char *buf, size_t len, off_t off) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = pread(fd, buf + got, len - got, off + (off_t)got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) break;
    got += (size_t)n;
  }
  memset(buf + got, 0, len - got);
  return 0;
}

/* The `count` page indices in `pages` as a Uint32Array; frees `pages` either way. */
static napi_value page_list(napi_env env, uint32_t *pages, size_t count) {
  void *out_data;
  napi_value out_buffer, out;
  napi_status made = napi_create_arraybuffer(env, count * sizeof(uint32_t), &out_data, &out_buffer);
  if (made == napi_ok) memcpy(out_data, pages, count * sizeof(uint32_t));
  free(pages);
  if (made != napi_ok) {
    napi_throw_error(env, NULL, "page_scan: cannot allocate the result");
    return NULL;
  }
  CHECK(napi_create_typedarray(env, napi_uint32_array, count, out_buffer, 0, &out));
  return out;
}

/* changedPages(path: string, held: BigUint64Array, from: number, to: number): Uint32Array */
static napi_value changed_pages(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 4) {
    napi_throw_type_error(env, NULL, "page_scan.changedPages(path, held, from, to)");
    return NULL;
  }
  char path[4096];
  size_t path_len;
  if (napi_get_value_string_utf8(env, argv[0], path, sizeof path, &path_len) != napi_ok || path_len >= sizeof path - 1) {
    napi_throw_type_error(env, NULL, "page_scan.changedPages: path must be a string under 4096 bytes");
    return NULL;
  }
  napi_typedarray_type type;
  size_t held_len;
  void *held_data;
  if (napi_get_typedarray_info(env, argv[1], &type, &held_len, &held_data, NULL, NULL) != napi_ok || type != napi_biguint64_array) {
    napi_throw_type_error(env, NULL, "page_scan.changedPages: held must be a BigUint64Array");
    return NULL;
  }
  uint32_t from, to;
  CHECK(napi_get_value_uint32(env, argv[2], &from));
  CHECK(napi_get_value_uint32(env, argv[3], &to));
  if (from > to || to > held_len) {
    napi_throw_range_error(env, NULL, "page_scan.changedPages: need from <= to <= held.length");
    return NULL;
  }
  const uint64_t *held = held_data;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(env, "cannot open", path);
  unsigned char *buf = malloc((size_t)RUN_PAGES * PAGE);
  uint32_t *changed = malloc(((size_t)(to - from) + 1) * sizeof(uint32_t));
  if (!buf || !changed) {
    free(buf);
    free(changed);
    close(fd);
    napi_throw_error(env, NULL, "page_scan: out of memory");
    return NULL;
  }
  size_t count = 0;
  for (uint32_t first = from; first < to; first += RUN_PAGES) {
    uint32_t n = to - first < RUN_PAGES ? to - first : RUN_PAGES;
    if (read_full(fd, buf, (size_t)n * PAGE, (off_t)first * PAGE) < 0) {
      free(buf);
      free(changed);
      close(fd);
      return fail(env, "cannot read", path);
    }
    for (uint32_t k = 0; k < n; k++) {
      if (XXH64(buf + (size_t)k * PAGE, PAGE, 0) != held[first + k]) changed[count++] = first + k;
    }
  }
  free(buf);
  close(fd);
  return page_list(env, changed, count);
}

/*
 * changedAmong(path: string, held: BigUint64Array, among: Uint32Array): Uint32Array — the same
 * comparison for the listed pages only (ascending: the pages a dirty log reported), read in runs
 * of consecutive pages.
 */
static napi_value changed_among(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char path[4096];
  size_t path_len;
  napi_typedarray_type type;
  size_t held_len, among_len;
  void *held_data, *among_data;
  if (argc != 3 || napi_get_value_string_utf8(env, argv[0], path, sizeof path, &path_len) != napi_ok || path_len >= sizeof path - 1 ||
      napi_get_typedarray_info(env, argv[1], &type, &held_len, &held_data, NULL, NULL) != napi_ok || type != napi_biguint64_array ||
      napi_get_typedarray_info(env, argv[2], &type, &among_len, &among_data, NULL, NULL) != napi_ok || type != napi_uint32_array) {
    napi_throw_type_error(env, NULL, "page_scan.changedAmong(path: string, held: BigUint64Array, among: Uint32Array)");
    return NULL;
  }
  const uint64_t *held = held_data;
  const uint32_t *among = among_data;
  for (size_t i = 0; i < among_len; i++) {
    if (among[i] >= held_len || (i > 0 && among[i] <= among[i - 1])) {
      napi_throw_range_error(env, NULL, "page_scan.changedAmong: among must ascend and stay below held.length");
      return NULL;
    }
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(env, "cannot open", path);
  unsigned char *buf = malloc((size_t)RUN_PAGES * PAGE);
  uint32_t *changed = malloc((among_len + 1) * sizeof(uint32_t));
  if (!buf || !changed) {
    free(buf);
    free(changed);
    close(fd);
    napi_throw_error(env, NULL, "page_scan: out of memory");
    return NULL;
  }
  size_t count = 0;
  for (size_t i = 0; i < among_len;) {
    size_t n = 1;
    while (i + n < among_len && n < RUN_PAGES && among[i + n] == among[i] + n) n++;
    if (read_full(fd, buf, n * PAGE, (off_t)among[i] * PAGE) < 0) {
      free(buf);
      free(changed);
      close(fd);
      return fail(env, "cannot read", path);
    }
    for (size_t k = 0; k < n; k++) {
      if (XXH64(buf + k * PAGE, PAGE, 0) != held[among[i] + k]) changed[count++] = among[i] + (uint32_t)k;
    }
    i += n;
  }
  free(buf);
  close(fd);
  return page_list(env, changed, count);
}

/* hash64(data: Uint8Array): bigint — the same xxHash64, for checking it against the fallback. */
static napi_value hash64(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_typedarray_type type;
  size_t len;
  void *data;
  if (argc != 1 || napi_get_typedarray_info(env, argv[0], &type, &len, &data, NULL, NULL) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, NULL, "page_scan.hash64(data: Uint8Array)");
    return NULL;
  }
  napi_value out;
  CHECK(napi_create_bigint_uint64(env, XXH64(data, len, 0), &out));
  return out;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "changedPages", NAPI_AUTO_LENGTH, changed_pages, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "changedPages", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "changedAmong", NAPI_AUTO_LENGTH, changed_among, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "changedAmong", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "hash64", NAPI_AUTO_LENGTH, hash64, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "hash64", fn) != napi_ok) return NULL;
  return exports;
}
