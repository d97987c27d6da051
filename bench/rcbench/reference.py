"""The host and what the figures compare with: host facts, the versions of
the binaries, and the physical references (disk write/read bandwidth with
O_DIRECT, host memory copy bandwidth, and on a GPU the PCIe copy bandwidth)."""

import os
import platform
import re
import subprocess

from .common import BenchError, mono


def loadavg():
    try:
        with open("/proc/loadavg") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return "?"


def host_info(ctx):
    info = {"hostname": platform.node(), "kernel": platform.release(), "arch": platform.machine()}
    try:
        cpu = open("/proc/cpuinfo").read()
        m = re.search(r"model name\s*:\s*(.*)", cpu)
        info["cpu"] = m.group(1).strip() if m else "?"
    except OSError:
        info["cpu"] = "?"
    info["cores"] = os.cpu_count()
    info["loadavg_start"] = loadavg()
    try:
        mem = open("/proc/meminfo").read()
        info["ram_gib"] = round(int(re.search(r"MemTotal:\s*(\d+)", mem).group(1)) / 2**20, 1)
    except (OSError, AttributeError):
        pass
    try:
        _, out, _ = ctx.sh(["df", "-h", "--output=source,fstype,size,avail", ctx.work], timeout=10)
        info["disk"] = " ".join(out.strip().splitlines()[-1].split())
    except BenchError:
        pass
    if ctx.gpu:
        try:
            _, out, _ = ctx.sh(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"], timeout=30)
            info["gpu"] = out.strip()
        except (BenchError, OSError) as e:
            info["gpu"] = "? (%s)" % e
    return info


def versions(ctx):
    v = {}
    for key, args in (("runsc", [ctx.b("runsc"), "--version"]), ("containerd", [ctx.b("containerd"), "--version"])):
        try:
            _, out, _ = ctx.sh(args, timeout=30)
            v[key] = out.strip().splitlines()[0]
        except BenchError as e:
            v[key] = "? (%s)" % e
    v["shim"] = "?"  # from the checkpoint metadata, once there is one
    return v


def reference(ctx, gpu_env):
    """The physical references; gpu_env is the environment the GPU workload
    needs (the driver's library directory)."""
    ref = {}
    f = ctx.w("ddtest")
    gib = ctx.args.disk_gib
    if gib > 0 and ctx.need_disk(gib, "disk bandwidth"):
        try:
            t, _ = ctx.timed(["dd", "if=/dev/zero", "of=" + f, "bs=16M", "count=%d" % (gib * 64), "oflag=direct", "conv=fsync"], timeout=300)
            ref["disk_write_gbs"] = round(gib * 2**30 / (t / 1000) / 1e9, 2)
            t, _ = ctx.timed(["dd", "if=" + f, "of=/dev/null", "bs=16M", "iflag=direct"], timeout=300)
            ref["disk_read_gbs"] = round(gib * 2**30 / (t / 1000) / 1e9, 2)
        except BenchError as e:
            ctx.results.error("disk bandwidth", e)
        finally:
            if os.path.exists(f):
                os.remove(f)
    # Host memory copy: 1 GiB between two touched buffers, best of three.
    src = bytearray(b"\x5a") * 2**30
    dst = bytearray(2**30)
    best = None
    for _ in range(4):
        t0 = mono()
        dst[:] = src
        t = mono() - t0
        best = t if best is None else min(best, t)
    del src, dst
    ref["mem_copy_gbs"] = round(2**30 / best / 1e9, 2)
    if ctx.gpu:
        try:
            _, out, _ = ctx.sh([ctx.b("workload"), "--bandwidth", "4"], timeout=120, env=gpu_env)
            m = re.search(r"htod_gbs=([0-9.]+) dtoh_gbs=([0-9.]+)", out)
            if m:
                ref["pcie_htod_gbs"], ref["pcie_dtoh_gbs"] = float(m.group(1)), float(m.group(2))
        except BenchError as e:
            ctx.results.error("PCIe bandwidth", e)
    ref["drop_caches"] = can_drop_caches()
    ctx.log("reference: %s" % ref)
    return ref


def can_drop_caches():
    try:
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("1\n")
        return True
    except OSError:
        return False


def drop_caches():
    subprocess.call(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as fh:
        fh.write("3\n")
