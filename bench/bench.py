#!/usr/bin/env python3
"""Checkpoint/restore benchmark of containerd-shim-runsc-cuda-v1 against raw runsc.

One run measures, side by side, for containers holding each given amount of
memory (CPU mode) or device memory (GPU mode):

  raw runsc    `runsc create/start/checkpoint/restore` on the very OCI spec the
               shim gives runsc (copied from the shim's bundle, root.path pointed
               at a directory holding the image's files, cgroupsPath dropped),
               with the flags the shim uses;
  shim         the same container run by containerd and the shim, checkpointed
               through the task service (the shim's part as containerd sees it),
               `ctr task checkpoint --image-path`, `ctr task checkpoint` (into
               containerd's content store) and the containerd client step by step
               (ckptctl --steps: pause, checkpoint call, rw-layer diff, image
               record, resume), and restored from the directory and from the image;
  defaults     raw runsc with each checkpoint/restore option the shim can set
               (compression, O_DIRECT writes and reads, background restore, cold
               page cache), timed to the workload's first output after restore
               and to all of its memory being verified;
  GPU only     NVIDIA's cuda-checkpoint instead of the project's toggle tool (when
               the binary is on the host), and the PCIe copy bandwidth;
  reference    disk write/read bandwidth (O_DIRECT) and host memory copy bandwidth.

It runs from a directory of prebuilt binaries (`make bundle`, or the GPU bundle
of `make gpu-bundle`), needs python3 (standard library only), root, and no
network, and writes results.json, results.md and results.svg to --out. The
report alone can be redone from a results.json with `bench.py report`.

  bench.py run --mode cpu --bin .carry/gpu --out bench/out/cpu
  bench.py run --mode gpu --bin /var/lib/rcuda-bundle/gpu --out /var/lib/rcuda-bench-out
  bench.py report bench/out/cpu/results.json --out docs/benchmarks --name cpu-latest

See bench/README.md for what each number includes.
"""

import argparse
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402
from rcbench.common import BenchError  # noqa: E402
from rcbench.scenarios import Bench  # noqa: E402

DEFAULTS = {
    "cpu": {"sizes": "64M 512M 2G", "iterations": 3, "matrix": "all", "store": "all", "ctr_path": "all",
            "exit": "all", "nv": "", "budget": 0},
    "gpu": {"sizes": "1G 8G 24G", "iterations": 1, "matrix": "1G", "store": "1G 8G", "ctr_path": "1G 8G",
            "exit": "1G 8G", "nv": "1G 8G", "budget": 470},
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    r = sub.add_parser("run", help="run the benchmark")
    r.add_argument("--mode", choices=("cpu", "gpu"), default="cpu")
    r.add_argument("--dry", action="store_true", help="GPU mode without a GPU: the GPU workload keeps its memory on the host")
    r.add_argument("--bin", required=True, help="directory of binaries (make bundle / make gpu-bundle)")
    r.add_argument("--out", default="bench/out", help="results directory")
    r.add_argument("--work", default="/var/lib/rcuda-bench", help="scratch directory (not under /tmp), removed at the end")
    r.add_argument("--sizes", help="memory sizes, e.g. '64M 512M 2G' (default per mode)")
    r.add_argument("--iterations", type=int, help="checkpoint/restore pairs per size for raw runsc and the shim")
    r.add_argument("--extra-iterations", type=int, help="iterations of the option matrix's checkpoints and of containerd's own paths (default: --iterations on CPU, 1 on GPU)")
    r.add_argument("--matrix", help="sizes (or 'all', or '') that also run the checkpoint/restore option matrix")
    r.add_argument("--store", help="sizes that also checkpoint into containerd's content store and restore from it")
    r.add_argument("--ctr-path", dest="ctr_path", help="sizes that also run `ctr task checkpoint --image-path`")
    r.add_argument("--exit", help="sizes that also compare checkpoints that stop the container (raw runsc vs the shim)")
    r.add_argument("--nv", help="GPU: sizes that also compare NVIDIA's cuda-checkpoint (when found)")
    r.add_argument("--nvidia-cuda-checkpoint", default="", help="NVIDIA's cuda-checkpoint binary (default: found on PATH)")
    r.add_argument("--budget", type=int, help="seconds; optional phases are skipped to stay within it (0: none)")
    r.add_argument("--libdir", default="", help="GPU: the NVIDIA driver library directory (default: found)")
    r.add_argument("--disk-gib", type=int, default=2, help="GiB written and read for the disk bandwidth reference (0: skip)")
    r.add_argument("--runsc-flag", action="append", default=[], help="extra runsc flag key=value for raw runsc and the shim")
    r.add_argument("--no-runsc-debug-log", dest="runsc_debug_log", action="store_false",
                   help="do not give runsc a debug-log directory (its info log gives the sandbox's save/load breakdown)")
    r.add_argument("--shim-config", default="", help="TOML merged into the shim's config (A/B runs)")
    r.add_argument("--no-rootfs-write", dest="rootfs_write", action="store_false",
                   help="the workload writes nothing to its root filesystem (by default it writes a small file first)")
    r.add_argument("--settle", dest="settle", action="store_true", default=None,
                   help="write back dirty pages before each timed operation (default on CPU)")
    r.add_argument("--no-settle", dest="settle", action="store_false", help="do not (default on GPU)")
    r.add_argument("--no-cold", action="store_true", help="skip the restores with a dropped page cache")
    r.add_argument("--keep-work", action="store_true", help="keep --work for inspection")
    r.add_argument("--name", default="", help="also write the report as DOCS/NAME.{json,md,svg}")
    r.add_argument("--docs", default="docs/benchmarks", help="directory for --name")
    rep = sub.add_parser("report", help="write the report of a results.json")
    rep.add_argument("json")
    rep.add_argument("--out", default="", help="directory (default: the JSON's)")
    rep.add_argument("--name", default="results")
    args = ap.parse_args()
    if args.cmd == "report":
        with open(args.json) as fh:
            res = json.load(fh)
        out = args.out or os.path.dirname(os.path.abspath(args.json))
        report.write(res, out, args.name)
        print(report.markdown(res))
        return 0
    if args.cmd != "run":
        ap.print_help()
        return 2
    d = DEFAULTS[args.mode]
    for k in ("sizes", "iterations", "matrix", "store", "ctr_path", "exit", "nv", "budget"):
        if getattr(args, k) is None:
            setattr(args, k, d[k])
    if args.settle is None:
        args.settle = args.mode == "cpu"
    if args.extra_iterations is None:
        args.extra_iterations = args.iterations if args.mode == "cpu" else 1
    if args.dry and args.mode == "gpu" and args.sizes == d["sizes"]:
        args.sizes = "0.05G 0.1G"
        args.matrix = args.store = args.ctr_path = args.exit = "all"
    if os.geteuid() != 0:
        print("bench: run as root", file=sys.stderr)
        return 2
    bench = Bench(args)

    def stop(signum, frame):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, stop)
    try:
        res = bench.run()
    except BenchError as e:
        print("bench: %s" % e, file=sys.stderr)
        return 1
    report.write(res, bench.out, "results")
    if args.name:
        report.write(res, args.docs, args.name)
    print(report.markdown(res))
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
