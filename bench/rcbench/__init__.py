"""The benchmark behind bench.py, by part (see bench/README.md, "Code"):

  common     constants, errors, the run's context (paths, log, commands) and helpers
  results    the samples, notes and errors of a run, and results.json
  reference  the host, the versions, and the physical references (disk, memory copy, PCIe)
  env        the private containerd and the shim's configuration, the test image, cleanup
  workload   the workload's command line and watching its output
  raw        raw runsc: bundles, create/start/checkpoint/restore, a sandbox's exit
  runsclogs  runsc's own logs: command durations, the sandbox's save/load timings
  shim       the shim through ctr, ckptctl (the containerd client) and the task service
  scenarios  what is measured: the core pairs, the options, containerd's paths, exits
"""
