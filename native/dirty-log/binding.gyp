{
  "targets": [
    {
      "target_name": "dirty_log",
      "sources": ["dirty_log.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    },
    {
      "target_name": "ehoff_uffd_serve",
      "type": "executable",
      "sources": ["uffd_serve.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    },
    {
      "target_name": "ram_holes",
      "sources": ["ram_holes.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    },
    {
      "target_name": "ehoff_uffd_pipe_serve",
      "type": "executable",
      "sources": ["uffd_pipe_serve.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    },
    {
      "target_name": "ehoff_uffd_preload",
      "type": "shared_library",
      "product_prefix": "",
      "sources": ["uffd_preload.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-fPIC"]
    }
  ]
}
