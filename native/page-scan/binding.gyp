{
  "targets": [
    {
      "target_name": "page_scan",
      "sources": ["page_scan.c"],
      "cflags": ["-O3", "-Wall", "-Wextra"],
      "defines": ["XXH_INLINE_ALL"]
    }
  ]
}
