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
import datetime
import fcntl
import glob
import json
import os
import platform
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402

NS = "rcuda-bench"
IMG = "localhost/rcuda-bench:latest"
RUNTIME = "io.containerd.runsc-cuda.v1"
TOGGLE_IN_CONTAINER = "/.runsc-cuda/cuda-checkpoint"
NV_TOOL_IN_CONTAINER = "/.nvidia/cuda-checkpoint"
SCHEMA = 1

DEFAULTS = {
    "cpu": {"sizes": "64M 512M 2G", "iterations": 3, "matrix": "all", "store": "all", "ctr_path": "all",
            "exit": "all", "nv": "", "budget": 0},
    "gpu": {"sizes": "1G 8G 24G", "iterations": 1, "matrix": "1G", "store": "1G 8G", "ctr_path": "1G 8G",
            "exit": "1G 8G", "nv": "1G 8G", "budget": 470},
}


def parse_size(s):
    """'64M' -> 64.0 MiB, '2G' -> 2048.0, '0.05G' -> 51.2."""
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([MmGg])i?[Bb]?", s.strip())
    if not m:
        raise ValueError("size %r: want a number with M or G, e.g. 64M, 2G" % s)
    v = float(m.group(1))
    return v * 1024 if m.group(2).lower() == "g" else v


def mono():
    return time.monotonic()


def ms(a, b):
    return int(round((b - a) * 1000))


class BenchError(Exception):
    pass


class Bench:
    def __init__(self, args):
        self.args = args
        self.mode = args.mode
        self.dry = args.dry
        self.bin = os.path.abspath(args.bin)
        self.out = os.path.abspath(args.out)
        self.work = os.path.abspath(args.work)
        if self.work == "/tmp" or self.work.startswith("/tmp/"):
            raise BenchError("--work %s is under /tmp, where runsc's sandbox mounts a tmpfs; choose another directory" % self.work)
        self.started = mono()
        self.samples = []
        self.notes = []
        self.errors = []
        self.procs = []  # processes this script started (containerd)
        self.ctrd = None
        self.seq = 0
        self.raw_flags = {}
        self.sizes = [(s, parse_size(s)) for s in args.sizes.split()]
        os.makedirs(self.out, exist_ok=True)
        self.logdir = os.path.join(self.out, "logs")
        # Container names repeat between runs: an old log would pass for
        # the new container's output.
        shutil.rmtree(self.logdir, ignore_errors=True)
        os.makedirs(self.logdir)
        self.runlog = open(os.path.join(self.out, "run.log"), "w")

    # ------------------------------------------------------------------ utils
    def log(self, msg):
        line = "%s %s" % (datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3], msg)
        print(line, file=sys.stderr, flush=True)
        self.runlog.write(line + "\n")
        self.runlog.flush()

    def elapsed(self):
        return mono() - self.started

    def sh(self, args, timeout=600, check=True, env=None, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL):
        """Runs args; returns (rc, stdout, stderr) as text. Kills it (SIGKILL) after timeout."""
        p = subprocess.Popen(args, stdin=stdin, stdout=stdout, stderr=stderr, env=env, universal_newlines=True,
                             start_new_session=True)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            raise BenchError("timed out after %ss: %s" % (timeout, " ".join(args)))
        out, err = out or "", err or ""
        if check and p.returncode != 0:
            raise BenchError("%s: exit %d: %s" % (" ".join(args[:6]), p.returncode, (err or out).strip()[-800:]))
        return p.returncode, out, err

    def timed(self, args, **kw):
        t0 = mono()
        rc, out, err = self.sh(args, **kw)
        return ms(t0, mono()), out

    def settle(self):
        """Writes back dirty pages before a timed operation, so it does not
        pay for the previous one's image (multi-GiB images otherwise leave
        writeback running into the next measurement on a small host). The
        page cache stays. Off with --no-settle (the GPU default: 24 GiB
        images would spend the time budget on writeback)."""
        if self.args.settle:
            os.sync()

    def uid(self, prefix):
        self.seq += 1
        return "%s-%d" % (prefix, self.seq)

    def record(self, size, op, path, variant="default", it=0, **fields):
        s = {"size": size[0], "mib": size[1], "op": op, "path": path, "variant": variant, "iter": it}
        s.update(fields)
        self.samples.append(s)
        shown = " ".join("%s=%s" % (k, v) for k, v in fields.items() if not isinstance(v, (dict, list)))
        self.log("RESULT %s %s %s/%s #%d %s" % (size[0], op, path, variant, it, shown))
        return s

    def error(self, what, e):
        self.errors.append({"what": what, "error": str(e)[-1000:]})
        self.log("ERROR %s: %s" % (what, e))

    def free_gib(self):
        st = os.statvfs(self.work)
        return st.f_bavail * st.f_frsize / 2**30

    def need_disk(self, gib, what):
        free = self.free_gib()
        if free < gib + 2:
            self.notes.append("%s skipped: %.1f GiB free on %s, %.1f GiB needed" % (what, free, self.work, gib + 2))
            self.log("SKIP %s: disk" % what)
            return False
        return True

    # ------------------------------------------------------------------ host
    def host_info(self):
        info = {"hostname": platform.node(), "kernel": platform.release(), "arch": platform.machine()}
        try:
            cpu = open("/proc/cpuinfo").read()
            m = re.search(r"model name\s*:\s*(.*)", cpu)
            info["cpu"] = m.group(1).strip() if m else "?"
        except OSError:
            info["cpu"] = "?"
        info["cores"] = os.cpu_count()
        info["loadavg_start"] = self.loadavg()
        try:
            mem = open("/proc/meminfo").read()
            info["ram_gib"] = round(int(re.search(r"MemTotal:\s*(\d+)", mem).group(1)) / 2**20, 1)
        except (OSError, AttributeError):
            pass
        try:
            _, out, _ = self.sh(["df", "-h", "--output=source,fstype,size,avail", self.work], timeout=10)
            info["disk"] = " ".join(out.strip().splitlines()[-1].split())
        except BenchError:
            pass
        if self.mode == "gpu" and not self.dry:
            try:
                _, out, _ = self.sh(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"], timeout=30)
                info["gpu"] = out.strip()
            except (BenchError, OSError) as e:
                info["gpu"] = "? (%s)" % e
        return info

    @staticmethod
    def loadavg():
        try:
            with open("/proc/loadavg") as fh:
                return " ".join(fh.read().split()[:3])
        except OSError:
            return "?"

    def versions(self):
        v = {}
        for key, args in (("runsc", [self.b("runsc"), "--version"]), ("containerd", [self.b("containerd"), "--version"])):
            try:
                _, out, _ = self.sh(args, timeout=30)
                v[key] = out.strip().splitlines()[0]
            except BenchError as e:
                v[key] = "? (%s)" % e
        v["shim"] = "?"  # from the checkpoint metadata, once there is one
        return v

    def b(self, name):
        return os.path.join(self.bin, name)

    # ------------------------------------------------------------------ reference
    def reference(self):
        ref = {}
        f = os.path.join(self.work, "ddtest")
        gib = self.args.disk_gib
        if gib > 0 and self.need_disk(gib, "disk bandwidth"):
            try:
                t, _ = self.timed(["dd", "if=/dev/zero", "of=" + f, "bs=16M", "count=%d" % (gib * 64), "oflag=direct", "conv=fsync"], timeout=300)
                ref["disk_write_gbs"] = round(gib * 2**30 / (t / 1000) / 1e9, 2)
                t, _ = self.timed(["dd", "if=" + f, "of=/dev/null", "bs=16M", "iflag=direct"], timeout=300)
                ref["disk_read_gbs"] = round(gib * 2**30 / (t / 1000) / 1e9, 2)
            except BenchError as e:
                self.error("disk bandwidth", e)
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
        if self.mode == "gpu" and not self.dry:
            try:
                _, out, _ = self.sh([self.b("workload"), "--bandwidth", "4"], timeout=120, env=self.gpu_env())
                m = re.search(r"htod_gbs=([0-9.]+) dtoh_gbs=([0-9.]+)", out)
                if m:
                    ref["pcie_htod_gbs"], ref["pcie_dtoh_gbs"] = float(m.group(1)), float(m.group(2))
            except BenchError as e:
                self.error("PCIe bandwidth", e)
        ref["drop_caches"] = self.can_drop_caches()
        self.log("reference: %s" % ref)
        return ref

    def can_drop_caches(self):
        try:
            with open("/proc/sys/vm/drop_caches", "w") as fh:
                fh.write("1\n")
            return True
        except OSError:
            return False

    def drop_caches(self):
        subprocess.call(["sync"])
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")

    def gpu_env(self):
        env = dict(os.environ)
        if self.libdir:
            env["LD_LIBRARY_PATH"] = self.libdir + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        return env

    # ------------------------------------------------------------------ setup
    def reap_stale(self):
        """What a killed earlier run left under --work: its processes (by pid;
        those whose command line names the directory) and mounts."""
        me = os.getpid()
        for p in glob.glob("/proc/[0-9]*/cmdline"):
            pid = int(p.split("/")[2])
            if pid == me:
                continue
            try:
                with open(p, "rb") as fh:
                    argv = fh.read().split(b"\0")
            except OSError:
                continue
            if any(a.startswith(self.work.encode() + b"/") or (b"=" + self.work.encode() + b"/") in a for a in argv[1:]):
                self.log("killing %d left by an earlier run: %s" % (pid, b" ".join(argv[:3]).decode(errors="replace")))
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        self.unmount_work()
        shutil.rmtree(self.work, ignore_errors=True)

    def unmount_work(self):
        mounts = []
        try:
            with open("/proc/mounts") as fh:
                for line in fh:
                    mp = line.split()[1]
                    if mp == self.work or mp.startswith(self.work + "/"):
                        mounts.append(mp)
        except OSError:
            pass
        for mp in sorted(mounts, reverse=True):
            subprocess.call(["umount", "-l", mp], stderr=subprocess.DEVNULL)

    def setup(self):
        self.lock = open(self.work.rstrip("/") + ".lock", "w")
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise BenchError("another bench.py run uses %s; wait for it or pass another --work" % self.work)
        if os.path.exists(self.work):
            self.reap_stale()
        for d in ("root", "state", "tmp", "runsc", "raw-root", "images", "raw", "runsc-logs", "filestore"):
            os.makedirs(os.path.join(self.work, d), exist_ok=True)
        self.libdir = ""
        self.devices = []
        self.nv_tool = ""
        if self.mode == "gpu" and not self.dry:
            self.libdir = self.args.libdir
            if not self.libdir:
                for d in ("/usr/local/nvidia/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib64"):
                    if os.path.exists(os.path.join(d, "libcuda.so.1")):
                        self.libdir = d
                        break
            if not os.path.exists(os.path.join(self.libdir or "/nonexistent", "libcuda.so.1")):
                raise BenchError("libcuda.so.1 not found; pass --libdir")
            self.devices = [d for d in ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia0") if os.path.exists(d)]
            self.nv_tool = self.args.nvidia_cuda_checkpoint or self.find_nv_tool()
        self.ctrd_cfg = os.path.join(self.work, "containerd.toml")
        with open(self.ctrd_cfg, "w") as fh:
            fh.write("""version = 3
root = "{w}/root"
state = "{w}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.nri.v1.nri"]
[grpc]
  address = "{w}/c.sock"
[ttrpc]
  address = "{w}/c.sock.ttrpc"
""".format(w=self.work))
        self.shim_cfg = os.path.join(self.work, "runsc-cuda.toml")
        self.runsc_flags = dict(kv.split("=", 1) for kv in self.args.runsc_flag)
        if self.args.runsc_debug_log:
            self.runsc_flags["debug-log"] = os.path.join(self.work, "runsc-logs", "%ID%") + "/"
        lines = ['binary_name = "%s"' % self.b("runsc"), 'root = "%s"' % os.path.join(self.work, "runsc")]
        lines.append("[runsc_config]")
        for k, v in sorted(self.runsc_flags.items()):
            lines.append('%s = "%s"' % (k, v))
        lines.append("[cuda]")
        lines.append('toggle_tool = "%s"' % self.b("cuda-checkpoint"))
        if self.libdir:
            lines.append('driver_lib_dir = "%s"' % self.libdir)
        extra = self.args.shim_config
        body = "\n".join(lines) + "\n"
        if extra:
            body = merge_toml_tables(body, extra)
        with open(self.shim_cfg, "w") as fh:
            fh.write(body)
        self.log("shim config:\n" + body)
        env = dict(os.environ)
        env["PATH"] = self.bin + ":" + env.get("PATH", "")
        env["TMPDIR"] = os.path.join(self.work, "tmp")
        # Task options from the containerd client (a restore from a path)
        # make containerd drop the runtime options: the shim then reads this.
        env["RUNSC_CUDA_CONFIG"] = self.shim_cfg
        self.ctrd_log = os.path.join(self.work, "containerd.log")
        logfh = open(self.ctrd_log, "w")
        self.ctrd = subprocess.Popen([self.b("containerd"), "--config", self.ctrd_cfg], stdout=logfh, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        self.procs.append(self.ctrd)
        sock = os.path.join(self.work, "c.sock")
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        else:
            raise BenchError("containerd did not start; see %s" % self.ctrd_log)
        self.ctr_base = [self.b("ctr"), "--address", sock, "--namespace", NS]
        self.ckptctl_base = [self.b("ckptctl"), "--address", sock, "--namespace", NS, "--runtime-config-path", self.shim_cfg]
        self.build_image()

    def find_nv_tool(self):
        """NVIDIA's cuda-checkpoint on this host, if any (not the project's)."""
        mine = os.path.realpath(self.b("cuda-checkpoint"))
        cands = []
        for d in os.environ.get("PATH", "").split(":") + ["/usr/bin", "/usr/local/bin", "/usr/local/cuda/bin"]:
            cands.append(os.path.join(d, "cuda-checkpoint"))
        cands += glob.glob("/usr/local/cuda*/bin/cuda-checkpoint")
        for c in cands:
            if os.path.isfile(c) and os.access(c, os.X_OK) and os.path.realpath(c) != mine:
                try:
                    with open(c, "rb") as fh:
                        if b"github.com/runsc-cuda/" in fh.read():
                            continue  # the project's tool, installed
                except OSError:
                    continue
                return os.path.realpath(c)
        return ""

    def build_image(self):
        tar = os.path.join(self.work, "img.tar")
        self.rootfs_src = os.path.join(self.work, "rootfs-src")
        mk = [self.b("mkimage"), "--out", tar, "--rootfs", self.rootfs_src, "--ref", IMG, "--busybox", self.b("busybox")]
        if self.mode == "cpu":
            mk += ["--file", "/workload=" + self.b("workload-cpu")]
        else:
            mk += ["--file", "/workload=" + self.b("workload"), "--ldd", self.b("workload"), "--ldd", self.b("cuda-checkpoint")]
            if self.libdir:
                mk += ["--ldd", os.path.join(self.libdir, "libcuda.so.1"), "--no-copy", self.libdir]
                if os.path.exists(os.path.join(self.libdir, "libnvidia-ml.so.1")):
                    mk += ["--ldd", os.path.join(self.libdir, "libnvidia-ml.so.1")]
            if self.nv_tool:
                mk += ["--ldd", self.nv_tool]
        _, out, _ = self.sh(mk, timeout=300)
        self.log(out.strip())
        self.ctr("images", "import", tar, timeout=300)

    def ctr(self, *args, timeout=600, check=True):
        _, out, _ = self.sh(self.ctr_base + list(args), timeout=timeout, check=check)
        return out

    # ------------------------------------------------------------------ workload
    def workload_args(self, mib):
        if self.mode == "cpu":
            args = ["/workload", "memhold", "--mib", str(int(mib)), "--interval", "1h", "--heartbeat", "20ms"]
        else:
            args = ["/workload", "--gib", "%g" % (mib / 1024), "--interval", "100ms"]
            if self.dry:
                args.append("--host-memory")
        if self.args.rootfs_write:
            # Like most containers, write something to the root filesystem:
            # runsc's overlay then keeps a filestore file for it.
            args = ["/bin/sh", "-c", "echo bench > /rootfs-marker && exec " + " ".join(args)]
        return args

    def ready_re(self):
        return r"^beat n=2$" if self.mode == "cpu" else r"^tick=2 "

    # In CPU mode, the first output after a restore is the heartbeat (the
    # process runs again); "memory usable" is the verification of all memory
    # the heartbeat triggers after the pause. In GPU mode every tick verifies
    # all device memory: both are the first tick.
    def first_re(self):
        return r"^beat " if self.mode == "cpu" else r"^tick="

    def memory_re(self):
        return r"^ok sum=" if self.mode == "cpu" else r"^tick="

    # ------------------------------------------------------------------ log watching
    @staticmethod
    def count_lines(path, regex):
        try:
            with open(path, errors="replace") as fh:
                return sum(1 for line in fh if re.search(regex, line))
        except OSError:
            return 0

    def wait_count(self, path, regex, n, timeout):
        end = mono() + timeout
        while mono() < end:
            if self.count_lines(path, regex) >= n:
                return True
            time.sleep(0.02)
        raise BenchError("timed out waiting for %d lines /%s/ in %s" % (n, regex, path))

    @staticmethod
    def mark(path):
        try:
            return os.path.getsize(path)
        except OSError:
            return 0

    @staticmethod
    def read_from(path, pos):
        try:
            with open(path, errors="replace") as fh:
                fh.seek(pos)
                return fh.read()
        except OSError:
            return ""

    def wait_idle_after(self, path, before, timeout=300):
        """After a checkpoint that left the workload running (its output was
        before bytes long when the checkpoint began): waits until it runs
        again and, when the pause made it verify its memory (CPU: a beat
        with 'verify'), until that verification is done; GPU: two ticks."""
        after = self.mark(path)
        end = mono() + timeout
        while mono() < end:
            if self.mode == "cpu":
                if re.search(r"^beat ", self.read_from(path, after), re.M):
                    text = self.read_from(path, before)
                    i = text.find(" verify\n")
                    if i < 0 or re.search(r"^ok sum=", text[i:], re.M):
                        return
            elif len(re.findall(r"^tick=", self.read_from(path, after), re.M)) >= 2:
                return
            time.sleep(0.02)
        raise BenchError("the workload in %s did not settle after the checkpoint" % path)

    def watch(self, path, t0, until_done, timeout=600):
        """Polls path every 2 ms from t0 on; returns ms to its first complete
        line and to the first memory line. until_done() says whether the
        command that produces the output still runs (None when finished)."""
        first = mem = None
        first_re, mem_re = re.compile(self.first_re()), re.compile(self.memory_re())
        end = t0 + timeout
        pos = 0
        buf = ""
        while mono() < end:
            now = mono()
            try:
                with open(path, errors="replace") as fh:
                    fh.seek(pos)
                    chunk = fh.read()
                    pos = fh.tell()
            except OSError:
                chunk = ""
            if chunk:
                buf += chunk
                lines = buf.split("\n")
                buf = lines.pop()
                for line in lines:
                    if first is None and first_re.search(line):
                        first = ms(t0, now)
                    if mem is None and mem_re.search(line):
                        mem = ms(t0, now)
            if first is not None and mem is not None:
                return first, mem
            err = until_done()
            if err:
                raise BenchError(err)
            time.sleep(0.002)
        raise BenchError("no output in %s within %ss" % (path, timeout))

    # ------------------------------------------------------------------ raw runsc
    def shim_runsc_flags(self, cid):
        """The global flags the shim gave `runsc create` for cid (from runsc's
        own log of its arguments), for raw runsc to use the same; the
        overlay filestore directory, which the shim puts beside the
        container's rw layer, becomes one of this run's."""
        flags = {}
        for f in sorted(glob.glob(os.path.join(self.work, "runsc-logs", cid, "*.create.txt"))):
            with open(f, errors="replace") as fh:
                m = re.search(r"Args: \[(.*)\]", fh.read())
            if not m:
                continue
            for tok in m.group(1).split()[1:]:
                if not tok.startswith("--"):
                    break
                k, _, v = tok[2:].partition("=")
                if k in ("root", "shared-root", "log", "log-format", "debug-log"):
                    continue
                if k == "overlay2" and v.startswith("root:dir="):
                    v = "root:dir=" + os.path.join(self.work, "filestore")
                flags[k] = v
            return flags
        # No runsc log: what the shim does by design (pkg/shim: defaultOverlay2).
        flags = dict(self.runsc_flags)
        flags.pop("debug-log", None)
        if "overlay2" not in flags and "overlay" not in flags:
            flags["overlay2"] = "root:dir=" + os.path.join(self.work, "filestore")
        if self.mode == "gpu" and not self.dry:
            flags["nvproxy"] = "true"
        return flags

    def runsc(self, bundle, extra_flags=None):
        args = [self.b("runsc"), "--root=" + os.path.join(self.work, "raw-root"),
                "--log=" + os.path.join(bundle, "log.json"), "--log-format=json"]
        flags = dict(self.raw_flags)
        if "debug-log" in self.runsc_flags:
            flags["debug-log"] = self.runsc_flags["debug-log"]
        flags.update(extra_flags or {})
        for k in sorted(flags):
            args.append("--%s=%s" % (k, flags[k]))
        return args

    def raw_bundle(self, cid, spec):
        """A bundle for raw runsc: the shim's spec, a fresh copy of the image's files."""
        bundle = os.path.join(self.work, "raw", cid)
        os.makedirs(bundle)
        rootfs = os.path.join(bundle, "rootfs")
        shutil.copytree(self.rootfs_src, rootfs, symlinks=True)
        spec = json.loads(json.dumps(spec))
        spec["root"] = {"path": rootfs, "readonly": False}
        spec.get("linux", {}).pop("cgroupsPath", None)
        with open(os.path.join(bundle, "config.json"), "w") as fh:
            json.dump(spec, fh)
        return bundle

    def raw_start(self, cid, spec, logpath):
        bundle = self.raw_bundle(cid, spec)
        t0 = mono()
        with open(logpath, "w") as out:
            self.sh(self.runsc(bundle) + ["create", "--bundle", bundle, "--pid-file", os.path.join(bundle, "init.pid"), cid],
                    stdout=out, stderr=out, timeout=300)
        self.sh(self.runsc(bundle) + ["start", cid], timeout=300)
        self.wait_count(logpath, self.ready_re(), 1, 600)
        return bundle, ms(t0, mono())

    def raw_delete(self, cid):
        bundle = os.path.join(self.work, "raw", cid)
        self.sh(self.runsc(bundle) + ["delete", "--force", cid], timeout=120, check=False)
        shutil.rmtree(bundle, ignore_errors=True)

    def raw_checkpoint(self, cid, bundle, image, compression="none", direct=False, tool=TOGGLE_IN_CONTAINER, leave_running=True):
        args = self.runsc(bundle) + ["checkpoint", "--image-path", image]
        if leave_running:
            args.append("--leave-running")
        args.append("--compression=" + compression)
        if direct:
            args.append("--direct")
        if self.mode == "gpu" and not self.dry:
            args.append("--cuda-checkpoint-path=" + tool)
        os.makedirs(image)
        self.settle()
        t, _ = self.timed(args + [cid], timeout=900)
        return t

    def raw_restore(self, cid, spec, image, logpath, background=True, direct=False):
        bundle = self.raw_bundle(cid, spec)
        res = {}
        state = {"err": None, "done": False}
        open(logpath, "w").close()

        def chain():
            try:
                with open(logpath, "a") as out:
                    t = mono()
                    self.sh(self.runsc(bundle) + ["create", "--bundle", bundle, "--pid-file", os.path.join(bundle, "init.pid"), cid],
                            stdout=out, stderr=out, timeout=300)
                    res["create_ms"] = ms(t, mono())
                args = self.runsc(bundle) + ["restore", "--detach", "--bundle", bundle, "--image-path", image]
                if direct:
                    args.append("--direct")
                if background:
                    args.append("--background")
                t = mono()
                self.sh(args + [cid], timeout=900)
                res["restore_ms"] = ms(t, mono())
                res["return_ms"] = ms(t0, mono())
            except BenchError as e:
                state["err"] = str(e)
            state["done"] = True

        self.settle()
        t0 = mono()
        th = threading.Thread(target=chain)
        th.start()
        try:
            first, mem = self.watch(logpath, t0, lambda: state["err"])
        finally:
            th.join()
        if state["err"]:
            raise BenchError(state["err"])
        res.update(first_ms=first, memory_ms=mem)
        return res

    # ------------------------------------------------------------------ shim
    def shim_run(self, cid, mib, logpath):
        if os.path.exists(logpath):
            os.remove(logpath)
        args = ["run", "-d", "--runtime", RUNTIME, "--runtime-config-path", self.shim_cfg]
        for d in self.devices:
            args += ["--device", d]
        args += ["--log-uri", "file://" + logpath, IMG, cid] + self.workload_args(mib)
        t0 = mono()
        self.ctr(*args, timeout=300)
        self.wait_count(logpath, self.ready_re(), 1, 600)
        return ms(t0, mono())

    def shim_spec(self, cid):
        path = os.path.join(self.work, "state", "io.containerd.runtime.v2.task", NS, cid, "config.json")
        with open(path) as fh:
            return json.load(fh)

    def shim_pid(self, cid):
        for p in glob.glob("/proc/[0-9]*/cmdline"):
            try:
                with open(p, "rb") as fh:
                    argv = fh.read().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"containerd-shim-runsc-cuda-v1") and b"-id" in argv:
                i = argv.index(b"-id")
                if i + 1 < len(argv) and argv[i + 1].decode() == cid and self.work.encode() in b" ".join(argv):
                    return int(p.split("/")[2])
        return None

    @staticmethod
    def proc_mem(pid):
        out = {}
        try:
            with open("/proc/%d/status" % pid) as fh:
                for line in fh:
                    k, _, v = line.partition(":")
                    if k in ("VmHWM", "VmRSS"):
                        out[k.lower() + "_mib"] = round(int(v.split()[0]) / 1024, 1)
        except (OSError, ValueError):
            pass
        return out

    def shim_kill(self, cid, keep_container=False):
        self.sh(self.ctr_base + ["tasks", "kill", "-s", "KILL", cid], timeout=60, check=False)
        for _ in range(100):
            rc, out, _ = self.sh(self.ctr_base + ["tasks", "ls"], timeout=60, check=False)
            if not any(line.split()[:1] == [cid] and "RUNNING" in line for line in out.splitlines()):
                break
            time.sleep(0.1)
        self.sh(self.ctr_base + ["tasks", "rm", "-f", cid], timeout=60, check=False)
        if not keep_container:
            self.sh(self.ctr_base + ["containers", "rm", cid], timeout=60, check=False)

    def ctrd_log_pos(self):
        try:
            return os.path.getsize(self.ctrd_log)
        except OSError:
            return 0

    def shim_log(self, pos, msg, cid):
        """key=value fields of the shim's log line msg for container cid written after pos."""
        try:
            with open(self.ctrd_log, errors="replace") as fh:
                fh.seek(pos)
                text = fh.read()
        except OSError:
            return {}
        found = {}
        for line in text.splitlines():
            if 'msg="%s"' % msg not in line and "msg=%s " % msg not in line:
                continue
            fields = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line))
            if fields.get("id", "").strip('"') == cid:
                found = {k: v.strip('"') for k, v in fields.items()}
        return found

    def shim_restore_log(self, pos, cid):
        """The shim's own restore timings: its checks at create (metadata,
        runsc version, GPU) and its `runsc restore`."""
        chk = self.shim_log(pos, "restore checked", cid)
        return {"shim_check_ms": to_int(chk.get("ms")), "shim_check_gpu_ms": to_int(chk.get("gpu_ms")),
                "shim_start_ms": to_int(self.shim_log(pos, "restored", cid).get("ms"))}

    def metadata(self, image_dir):
        try:
            with open(os.path.join(image_dir, "runsc-cuda.json")) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return {}

    def ckptctl(self, *args, timeout=900):
        t0 = mono()
        _, out, _ = self.sh(self.ckptctl_base + list(args), timeout=timeout)
        wall = ms(t0, mono())
        line = [l for l in out.strip().splitlines() if l.startswith("{")]
        res = json.loads(line[-1]) if line else {}
        res["wall_ms"] = wall
        return res

    def shim_restore(self, new_id, logpath, ref=None, from_path=None, like=None):
        if os.path.exists(logpath):
            os.remove(logpath)
        args = ["restore", "--log", logpath, "--wait-output"]
        if from_path:
            args += ["--from-path", from_path, "--like", like, new_id]
        else:
            args += [ref, new_id]
        state = {"p": None, "out": None, "err": None}
        self.settle()
        t0 = mono()
        p = subprocess.Popen(self.ckptctl_base + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             universal_newlines=True, start_new_session=True)

        def collect():
            out, err = p.communicate()
            state["out"], state["err"], state["end"] = out, err, mono()

        th = threading.Thread(target=collect)
        th.start()

        def failed():
            if p.poll() is not None and p.returncode != 0:
                th.join()
                return "ckptctl restore: exit %d: %s" % (p.returncode, (state["err"] or "").strip()[-800:])
            return None

        try:
            first, mem = self.watch(logpath, t0, failed)
        except BenchError:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            th.join()
            raise
        th.join(timeout=900)
        if p.returncode != 0:
            raise BenchError("ckptctl restore: exit %s: %s" % (p.returncode, (state["err"] or "").strip()[-800:]))
        line = [l for l in (state["out"] or "").strip().splitlines() if l.startswith("{")]
        res = json.loads(line[-1]) if line else {}
        res = {k: v for k, v in res.items()}
        res["return_ms"] = ms(t0, state["end"])
        res["first_ms"], res["memory_ms"] = first, mem
        return res

    def reclaim_unpacked(self):
        """containerd unpacks each checkpoint image it restores into a
        temporary directory that it never removes."""
        for d in glob.glob(os.path.join(self.work, "tmp", "ctrd-checkpoint*")):
            shutil.rmtree(d, ignore_errors=True)

    def rm_checkpoint_images(self):
        out = self.ctr("images", "ls", "-q", check=False)
        refs = [r for r in out.split() if r.startswith("containerd.io/checkpoint/")]
        if refs:
            self.ctr("images", "rm", "--sync", *refs, check=False)

    def runsc_cmd_ms(self, cid, verb):
        """How long runsc's `verb` for cid ran, from its own log (first to last
        line; the process start before its first line is not included)."""
        total = None
        for f in sorted(glob.glob(os.path.join(self.work, "runsc-logs", cid, "runsc.log.*.%s.txt" % verb))):
            try:
                with open(f, errors="replace") as fh:
                    stamps = re.findall(r"^[IWEF]\d{4} (\d\d):(\d\d):(\d\d\.\d+)", fh.read(), re.M)
            except OSError:
                continue
            if len(stamps) < 2:
                continue
            sec = [int(h) * 3600 + int(m) * 60 + float(x) for h, m, x in (stamps[0], stamps[-1])]
            d = (sec[1] - sec[0]) % 86400
            total = (total or 0) + int(round(d * 1000))
        return total

    def runsc_breakdown(self, cid, since, kind):
        """The sandbox's own save/load timings (runsc's info log) for cid, from
        log files written after since."""
        d = os.path.join(self.work, "runsc-logs", cid)
        out = {}
        pats = {
            "save": [("cuda_ms", r"cuda-checkpoint on \d+ processes took \[([^\]]+)\]"),
                     ("kernel_save_ms", r"Kernel save took \[([^\]]+)\]"),
                     ("memory_save_ms", r"Memory files save took \[([^\]]+)\]"),
                     ("overall_save_ms", r"Overall save took \[([^\]]+)\]")],
            "load": [("kernel_load_ms", r"Kernel load took \[([^\]]+)\]"),
                     ("memory_load_ms", r"Memory files load took \[([^\]]+)\]"),
                     ("overall_load_ms", r"Overall load took \[([^\]]+)\]")],
        }[kind]
        for f in sorted(glob.glob(os.path.join(d, "*"))):
            try:
                if os.path.getmtime(f) < since:
                    continue
                with open(f, errors="replace") as fh:
                    text = fh.read()
            except OSError:
                continue
            for key, pat in pats:
                for m in re.finditer(pat, text):
                    out[key] = go_duration_ms(m.group(1))
        return out

    # ------------------------------------------------------------------ phases
    def in_list(self, which, label):
        v = getattr(self.args, which)
        return v == "all" or label in v.split()

    def run_size(self, size, remaining):
        label, mib = size
        gib = mib / 1024
        t_size = mono()
        self.log("=== %s" % label)
        sid, rid = "shim-%s" % label, "raw-%s" % label
        slog, rlog = os.path.join(self.logdir, sid + ".log"), os.path.join(self.logdir, rid + ".log")
        t = self.shim_run(sid, mib, slog)
        self.record(size, "start", "shim", start_ms=t)
        spec = self.shim_spec(sid)
        self.raw_flags = self.shim_runsc_flags(sid)
        self.raw_flags_seen = dict(self.raw_flags)
        with open(os.path.join(self.out, "spec-%s.json" % label), "w") as fh:
            json.dump(spec, fh, indent=1)
        rbundle, t = self.raw_start(rid, spec, rlog)
        self.record(size, "start", "raw", start_ms=t)
        spid = self.shim_pid(sid)
        if spid:
            self.record(size, "rss", "shim-idle", **self.proc_mem(spid))
        images = os.path.join(self.work, "images")

        # Core: raw runsc vs the shim (task service call), each checkpoint
        # restored at once (the image is then in the page cache, as on a
        # host that restores what it just saved); which goes first
        # alternates between iterations. The option matrix's restores reuse
        # the raw image after both pairs.
        matrix = self.in_list("matrix", label)
        for it in range(self.args.iterations):
            if not self.need_disk(gib * (2 if matrix else 1), "iteration %d" % it):
                break
            raw_img = None
            for which in (("raw", "shim") if it % 2 == 0 else ("shim", "raw")):
                if which == "raw":
                    raw_img = self.core_raw(size, it, spec, rid, rbundle, rlog, keep=matrix)
                else:
                    self.core_shim(size, it, sid, slog)
            if raw_img:
                self.matrix_restores(size, it, spec, raw_img)
                shutil.rmtree(raw_img, ignore_errors=True)

        for it in range(self.args.extra_iterations):
            self.extras(size, it, remaining, spec, sid, slog, rid, rbundle, rlog)
            if self.in_list("exit", label) and self.budget_ok(size, remaining, 1.5):
                self.exit_checkpoints(size, it, spec)
        if spid:
            self.record(size, "rss", "shim-after-checkpoints", **self.proc_mem(spid))
        if self.ctrd:
            self.record(size, "rss", "containerd", **self.proc_mem(self.ctrd.pid))

        # GPU: NVIDIA's cuda-checkpoint instead of the project's tool.
        if self.mode == "gpu" and self.nv_tool and self.in_list("nv", label) and self.budget_ok(size, remaining, 2.5) \
                and self.need_disk(gib, "NVIDIA cuda-checkpoint"):
            self.nvidia_tool(size, spec)

        self.shim_kill(sid)
        self.raw_delete(rid)
        self.log("=== %s done in %ds" % (label, mono() - t_size))
        return mono() - t_size

    def core_raw(self, size, it, spec, rid, rbundle, rlog, keep=False):
        """One raw runsc checkpoint, restored at once; returns the image
        directory when keep is set (else removes it)."""
        img = os.path.join(self.work, "images", self.uid("raw"))
        before = self.mark(rlog)
        since = time.time()
        t = self.raw_checkpoint(rid, rbundle, img)
        self.wait_idle_after(rlog, before)
        bd = self.runsc_breakdown(rid, since, "save")
        self.record(size, "checkpoint", "raw", "none", it, ms=t, image_bytes=dir_bytes(img), **bd)
        new = self.uid("rawr")
        since = time.time()
        r = self.raw_restore(new, spec, img, os.path.join(self.logdir, new + ".log"))
        r.update(self.runsc_breakdown(new, since, "load"))
        r["runsc_create_ms"] = self.runsc_cmd_ms(new, "create")
        r["runsc_restore_ms"] = self.runsc_cmd_ms(new, "restore")
        self.record(size, "restore", "raw", "background", it, **r)
        self.raw_delete(new)
        if keep:
            return img
        shutil.rmtree(img, ignore_errors=True)
        return None

    def core_shim(self, size, it, sid, slog):
        """One checkpoint through containerd's task service, restored at once
        from its directory by the containerd client."""
        img = os.path.join(self.work, "images", self.uid("shim"))
        before = self.mark(slog)
        self.settle()
        r = self.ckptctl("checkpoint", "--rpc", "--image-path", img, sid)
        self.wait_idle_after(slog, before)
        meta = self.metadata(img)
        if meta.get("shim_version"):
            self.versions_["shim"] = meta["shim_version"]
        tm = meta.get("timings_ms", {})
        self.record(size, "checkpoint", "shim-rpc", "none", it, ms=r["rpc_ms"], wall_ms=r["wall_ms"],
                    shim_runsc_ms=tm.get("runsc"), shim_total_ms=tm.get("total"), shim_gpu_discovery_ms=tm.get("gpu_discovery"),
                    image_bytes=dir_bytes(img))
        new = self.uid("shimr")
        pos = self.ctrd_log_pos()
        r = self.shim_restore(new, os.path.join(self.logdir, new + ".log"), from_path=img, like=sid)
        r.update(self.shim_restore_log(pos, new))
        r["runsc_create_ms"] = self.runsc_cmd_ms(new, "create")
        r["runsc_restore_ms"] = self.runsc_cmd_ms(new, "restore")
        npid = self.shim_pid(new)
        if npid:
            r.update({"restored_shim_" + k: v for k, v in self.proc_mem(npid).items()})
        self.record(size, "restore", "shim-path", "background", it, **r)
        self.shim_kill(new)
        shutil.rmtree(img, ignore_errors=True)

    def extras(self, size, it, remaining, spec, sid, slog, rid, rbundle, rlog):
        """The optional phases of one size: checkpoint options (raw runsc),
        and containerd's own paths for the shim."""
        label, mib = size
        gib = mib / 1024
        images = os.path.join(self.work, "images")
        # Defaults: checkpoint options (raw runsc).
        if self.in_list("matrix", label):
            for variant, comp, direct in (("flate-best-speed", "flate-best-speed", False), ("direct", "none", True)):
                if not self.budget_ok(size, remaining, 3 if comp != "none" else 1):
                    break
                if not self.need_disk(gib, "checkpoint %s" % variant):
                    continue
                img = os.path.join(images, self.uid("raw"))
                before = self.mark(rlog)
                try:
                    t = self.raw_checkpoint(rid, rbundle, img, compression=comp, direct=direct)
                    self.wait_idle_after(rlog, before)
                    self.record(size, "checkpoint", "raw", variant, it, ms=t, image_bytes=dir_bytes(img))
                    # Restored at once, as the core pairs: a compressed image
                    # cannot restore in the background; one written with
                    # O_DIRECT is not in the page cache.
                    new = self.uid("rawr")
                    r = self.raw_restore(new, spec, img, os.path.join(self.logdir, new + ".log"), background=comp == "none")
                    self.record(size, "restore", "raw", variant if comp != "none" else "written-direct", it, **r)
                    self.raw_delete(new)
                except BenchError as e:
                    self.error("%s checkpoint %s" % (label, variant), e)
                shutil.rmtree(img, ignore_errors=True)

        # containerd's paths: ctr with an image path, ctr into the content
        # store (restored from the image), the client step by step.
        if self.in_list("ctr_path", label) and self.budget_ok(size, remaining, 1) and self.need_disk(gib, "ctr --image-path"):
            img = os.path.join(images, self.uid("ctr"))
            before = self.mark(slog)
            try:
                self.settle()
                t, _ = self.timed(self.ctr_base + ["tasks", "checkpoint", "--image-path", img, sid], timeout=900)
                self.wait_idle_after(slog, before)
                tm = self.metadata(img).get("timings_ms", {})
                self.record(size, "checkpoint", "ctr-path", "none", it, ms=t, shim_total_ms=tm.get("total"), shim_runsc_ms=tm.get("runsc"))
            except BenchError as e:
                self.error("%s ctr --image-path" % label, e)
            self.rm_checkpoint_images()
            shutil.rmtree(img, ignore_errors=True)
        if self.in_list("store", label) and self.budget_ok(size, remaining, 4) and self.need_disk(3 * gib, "content store"):
            try:
                before = self.mark(slog)
                pos = self.ctrd_log_pos()
                self.settle()
                t, out = self.timed(self.ctr_base + ["tasks", "checkpoint", sid], timeout=900)
                ref = out.strip().splitlines()[-1]
                self.wait_idle_after(slog, before)
                lg = self.shim_log(pos, "checkpoint written", sid)
                self.record(size, "checkpoint", "ctr-image", "none", it, ms=t, shim_total_ms=to_int(lg.get("total_ms")),
                            shim_runsc_ms=to_int(lg.get("runsc_ms")), image_bytes=self.image_bytes(ref))
                new = self.uid("shimi")
                pos = self.ctrd_log_pos()
                r = self.shim_restore(new, os.path.join(self.logdir, new + ".log"), ref=ref)
                r.update(self.shim_restore_log(pos, new))
                self.record(size, "restore", "shim-image", "background", it, **r)
                self.shim_kill(new)
                self.reclaim_unpacked()
                self.rm_checkpoint_images()
                time.sleep(1.1)  # checkpoint image names have a one-second resolution
                before = self.mark(slog)
                pos = self.ctrd_log_pos()
                self.settle()
                r = self.ckptctl("checkpoint", "--steps", sid)
                self.wait_idle_after(slog, before)
                lg = self.shim_log(pos, "checkpoint written", sid)
                r.pop("ref", None)
                self.record(size, "checkpoint", "client-steps", "none", it, ms=r.pop("checkpoint_ms"),
                            shim_total_ms=to_int(lg.get("total_ms")), shim_runsc_ms=to_int(lg.get("runsc_ms")), **r)
            except BenchError as e:
                self.error("%s content store" % label, e)
            self.rm_checkpoint_images()
            self.reclaim_unpacked()

    def exit_checkpoints(self, size, it, spec):
        """Checkpoints that stop the container: raw `runsc checkpoint` (runsc
        stops the sandbox itself) vs the shim's exit checkpoint through the
        task service (it saves with --leave-running on a frozen sandbox and
        then stops it, so a failed save never costs the container; on GPUs it
        also waits for the device memory to be released)."""
        label, mib = size
        gib = mib / 1024
        if not self.need_disk(gib, "exit checkpoints"):
            return
        images = os.path.join(self.work, "images")
        rid = self.uid("rawx")
        rlog = os.path.join(self.logdir, rid + ".log")
        img = os.path.join(images, self.uid("rawx"))
        try:
            bundle, _ = self.raw_start(rid, spec, rlog)
            with open(os.path.join(bundle, "init.pid")) as fh:
                pid = int(fh.read().strip())
            since = time.time()
            self.settle()
            exited = ExitWatch(pid)
            t0 = mono()
            t = self.raw_checkpoint(rid, bundle, img, leave_running=False)
            # runsc returns once the image is saved; the sandbox exits
            # after that. The shim returns once the exit is recorded.
            stopped = ms(t0, exited.wait(120))
            bd = self.runsc_breakdown(rid, since, "save")
            self.record(size, "checkpoint-exit", "raw", "none", it, ms=stopped, returned_ms=t, image_bytes=dir_bytes(img), **bd)
        except BenchError as e:
            self.error("%s raw exit checkpoint" % label, e)
        self.raw_delete(rid)
        shutil.rmtree(img, ignore_errors=True)
        sid = self.uid("shimx")
        img = os.path.join(images, sid)
        try:
            self.shim_run(sid, mib, os.path.join(self.logdir, sid + ".log"))
            self.settle()
            r = self.ckptctl("checkpoint", "--rpc", "--exit", "--image-path", img, sid)
            meta = self.metadata(img)
            tm = meta.get("timings_ms", {})
            gpu = meta.get("gpu") or {}
            self.record(size, "checkpoint-exit", "shim-rpc", "none", it, ms=r["rpc_ms"], shim_runsc_ms=tm.get("runsc"),
                        shim_total_ms=tm.get("total"), shim_gpu_discovery_ms=tm.get("gpu_discovery"),
                        released_after_exit=gpu.get("releasedAfterExit"), image_bytes=dir_bytes(img))
        except BenchError as e:
            self.error("%s shim exit checkpoint" % label, e)
        self.shim_kill(sid)
        shutil.rmtree(img, ignore_errors=True)

    def matrix_restores(self, size, it, spec, img):
        """Restore options on the same uncompressed image (raw runsc)."""
        variants = [("no-background", False, False, False), ("direct", True, False, True)]
        if self.can_drop:
            variants += [("cold", True, True, False), ("cold-no-background", False, True, False), ("cold-direct", True, True, True)]
        for variant, bg, cold, direct in variants:
            new = self.uid("rawr")
            try:
                if cold:
                    self.drop_caches()
                r = self.raw_restore(new, spec, img, os.path.join(self.logdir, new + ".log"), background=bg, direct=direct)
                self.record(size, "restore", "raw", variant, it, **r)
            except BenchError as e:
                self.error("%s restore %s" % (size[0], variant), e)
            self.raw_delete(new)

    def nvidia_tool(self, size, spec):
        label, mib = size
        nid = "rawnv-%s" % label
        nlog = os.path.join(self.logdir, nid + ".log")
        nspec = json.loads(json.dumps(spec))
        nspec["mounts"].append({"destination": NV_TOOL_IN_CONTAINER, "type": "bind", "source": self.nv_tool,
                                "options": ["bind", "ro", "nosuid", "nodev"]})
        try:
            nbundle, _ = self.raw_start(nid, nspec, nlog)
            for tool, variant in ((TOGGLE_IN_CONTAINER, "toggle-tool"), (NV_TOOL_IN_CONTAINER, "nvidia-cuda-checkpoint")):
                img = os.path.join(self.work, "images", self.uid("nv"))
                before = self.mark(nlog)
                since = time.time()
                t = self.raw_checkpoint(nid, nbundle, img, tool=tool)
                self.wait_idle_after(nlog, before)
                bd = self.runsc_breakdown(nid, since, "save")
                self.record(size, "checkpoint", "raw-tool", variant, 0, ms=t, **bd)
                new = self.uid("rawnvr")
                since = time.time()
                r = self.raw_restore(new, nspec, img, os.path.join(self.logdir, new + ".log"))
                r.update(self.runsc_breakdown(new, since, "load"))
                self.record(size, "restore", "raw-tool", variant, 0, **r)
                self.raw_delete(new)
                shutil.rmtree(img, ignore_errors=True)
        except BenchError as e:
            self.error("%s NVIDIA cuda-checkpoint" % label, e)
        self.raw_delete(nid)

    def image_bytes(self, ref):
        out = self.ctr("images", "ls", check=False)
        for line in out.splitlines():
            f = line.split()
            if f and f[0] == ref and len(f) >= 5:
                return f[3] + " " + f[4]
        return None

    def budget_ok(self, size, remaining, factor):
        """Whether an optional phase of about factor checkpoint+restore pairs
        (of one path, at this size) fits in --budget, keeping time for the
        core of the sizes still to come (estimated linearly from this one's,
        plus 20 s each for starting containers)."""
        if not self.args.budget:
            return True
        label, mib = size
        core = [s for s in self.samples if s["size"] == label and s["path"] in ("raw", "shim-rpc", "shim-path")
                and s["variant"] in ("none", "background") and s["op"] in ("checkpoint", "restore")]
        op_s = sum((s.get("ms") if s["op"] == "checkpoint" else (s.get("memory_ms") or s.get("return_ms"))) or 0 for s in core) / 1000.0
        iters = max(1, len([s for s in core if s["path"] == "raw" and s["op"] == "checkpoint"]))
        unit = op_s / iters  # one core iteration: raw and shim, checkpoint and restore
        need = factor * unit / 2
        reserve = sum(20 + 1.3 * unit * (r / mib) * self.args.iterations for r in remaining)
        ok = self.elapsed() + need + reserve < self.args.budget
        if not ok:
            self.notes.append("%s: an optional phase (~%ds) skipped to stay within the %ds budget" % (label, need, self.args.budget))
            self.log("SKIP optional phase at %s: budget (elapsed %ds, need %ds, reserve %ds)" % (label, self.elapsed(), need, reserve))
        return ok

    # ------------------------------------------------------------------ main
    def run(self):
        self.log("bench: mode %s%s, sizes %s, %d iteration(s), bin %s, work %s" % (
            self.mode, " (dry)" if self.dry else "", self.args.sizes, self.args.iterations, self.bin, self.work))
        result = {"schema": SCHEMA, "mode": self.mode, "dry": self.dry,
                  "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "args": {k: v for k, v in vars(self.args).items() if k not in ("func",)}}
        self.versions_ = self.versions()
        try:
            self.setup()
            result["host"] = self.host_info()
            load1 = float(result["host"]["loadavg_start"].split()[0]) if result["host"]["loadavg_start"] != "?" else 0
            if load1 > (os.cpu_count() or 1):
                self.notes.append("the host was busy when the run began (load average %s on %d cores): expect noise" % (
                    result["host"]["loadavg_start"], os.cpu_count() or 1))
                self.log("WARNING: load average %s on %d cores; the figures will be noisy" % (result["host"]["loadavg_start"], os.cpu_count() or 1))
            self.can_drop = self.can_drop_caches() and not self.args.no_cold
            result["reference"] = self.reference()
            if self.nv_tool:
                result["nvidia_cuda_checkpoint"] = self.nv_tool
            labels = [s[1] for s in self.sizes]
            for i, size in enumerate(self.sizes):
                try:
                    self.run_size(size, labels[i + 1:])
                except BenchError as e:
                    self.error("size %s" % size[0], e)
                    self.cleanup_containers()
                except KeyboardInterrupt:
                    # SIGTERM (a time limit): keep what was measured.
                    self.error("size %s" % size[0], BenchError("interrupted (SIGTERM or ^C); later sizes not run"))
                    self.cleanup_containers()
                    break
        finally:
            self.cleanup()
        if "host" in result:
            result["host"]["loadavg_end"] = self.loadavg()
        result["versions"] = self.versions_
        result["raw_runsc_flags"] = getattr(self, "raw_flags_seen", None)
        result["samples"] = self.samples
        result["notes"] = self.notes
        result["errors"] = self.errors
        result["elapsed_s"] = round(self.elapsed(), 1)
        path = os.path.join(self.out, "results.json")
        with open(path, "w") as fh:
            json.dump(result, fh, indent=1)
        self.log("results in %s (%ds)" % (path, self.elapsed()))
        return result

    # ------------------------------------------------------------------ cleanup
    def cleanup_containers(self):
        if not self.ctrd:
            return
        out = self.ctr("tasks", "ls", "-q", check=False, timeout=30)
        for t in out.split():
            self.sh(self.ctr_base + ["tasks", "kill", "-s", "KILL", t], timeout=30, check=False)
        time.sleep(0.5)
        for t in out.split():
            self.sh(self.ctr_base + ["tasks", "rm", "-f", t], timeout=30, check=False)
        for c in self.ctr("containers", "ls", "-q", check=False, timeout=30).split():
            self.sh(self.ctr_base + ["containers", "rm", c], timeout=30, check=False)
        raw_root = os.path.join(self.work, "raw-root")
        for d in glob.glob(os.path.join(self.work, "raw", "*")):
            self.sh([self.b("runsc"), "--root=" + raw_root, "delete", "--force", os.path.basename(d)], timeout=60, check=False)
            shutil.rmtree(d, ignore_errors=True)

    def cleanup(self):
        self.log("cleanup")
        try:
            self.cleanup_containers()
        except Exception as e:  # noqa: BLE001 - cleanup goes on
            self.log("cleanup: %s" % e)
        # Shims of this containerd (they outlive it otherwise), by pid.
        for p in glob.glob("/proc/[0-9]*/cmdline"):
            try:
                with open(p, "rb") as fh:
                    argv = fh.read().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"containerd-shim-runsc-cuda-v1") and (self.work + "/c.sock").encode() in b" ".join(argv):
                pid = p.split("/")[2]
                try:
                    # The shim records its socket in its bundle (its working
                    # directory); a killed shim cannot remove it.
                    with open(os.path.join("/proc", pid, "cwd", "address")) as fh:
                        sock = fh.read().strip()
                except OSError:
                    sock = ""
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
                if sock.startswith("unix://"):
                    try:
                        os.remove(sock[len("unix://"):])
                    except OSError:
                        pass
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if os.path.exists(self.ctrd_log if hasattr(self, "ctrd_log") else ""):
            shutil.copy(self.ctrd_log, os.path.join(self.logdir, "containerd.log"))
        src = os.path.join(self.work, "runsc-logs")
        if os.path.isdir(src) and dir_tree_bytes(src) < 64 << 20:
            shutil.rmtree(os.path.join(self.logdir, "runsc"), ignore_errors=True)
            shutil.copytree(src, os.path.join(self.logdir, "runsc"), symlinks=True)
        self.unmount_work()
        if not self.args.keep_work:
            shutil.rmtree(self.work, ignore_errors=True)


def merge_toml_tables(base, extra):
    """Appends extra TOML to base, merging tables that both have ([name] headers)."""
    def split(text):
        tables, order, cur = {"": []}, [""], ""
        for line in text.splitlines():
            m = re.match(r"\s*\[([^\]]+)\]\s*$", line)
            if m:
                cur = m.group(1).strip()
                if cur not in tables:
                    tables[cur] = []
                    order.append(cur)
                continue
            if line.strip():
                tables[cur].append(line)
        return tables, order
    bt, border = split(base)
    et, eorder = split(extra)
    for name in eorder:
        keys = {l.split("=", 1)[0].strip() for l in et[name] if "=" in l}
        if name not in bt:
            bt[name] = []
            border.append(name)
        bt[name] = [l for l in bt[name] if l.split("=", 1)[0].strip() not in keys] + et[name]
    out = []
    for name in border:
        if name:
            out.append("[%s]" % name)
        out += bt[name]
    return "\n".join(out) + "\n"


def go_duration_ms(s):
    """A Go time.Duration string ('1.5s', '830ms', '2m3.1s', '950µs') in ms."""
    total = 0.0
    for num, unit in re.findall(r"([0-9.]+)(ns|us|µs|ms|s|m|h)", s):
        total += float(num) * {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1, "s": 1e3, "m": 6e4, "h": 3.6e6}[unit]
    return int(round(total))


def dir_bytes(d):
    n = 0
    for f in glob.glob(os.path.join(d, "*")):
        try:
            n += os.path.getsize(f)
        except OSError:
            pass
    return n


def process_alive(pid):
    """Whether pid's thread-group leader runs (not gone, not a zombie)."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class ExitWatch:
    """Notes when process pid has exited completely (all its threads and its
    memory torn down: a pidfd becomes readable then, as runsc wait sees it),
    watching from a thread started now. Without pidfd_open (Python < 3.9,
    Linux < 5.3) it polls the leader's state, which is earlier."""

    def __init__(self, pid):
        self.at = None
        self.pid = pid
        self.fd = None
        try:
            self.fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pass
        self.th = threading.Thread(target=self.run, daemon=True)
        self.th.start()

    def run(self):
        if self.fd is not None:
            p = select.poll()
            p.register(self.fd, select.POLLIN)
            p.poll(600 * 1000)
            os.close(self.fd)
        else:
            while process_alive(self.pid):
                time.sleep(0.002)
        self.at = mono()

    def wait(self, timeout):
        self.th.join(timeout)
        return self.at if self.at is not None else mono()


def dir_tree_bytes(d):
    n = 0
    for root, _, files in os.walk(d):
        for f in files:
            try:
                n += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return n


def to_int(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


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
