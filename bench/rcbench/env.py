"""The private containerd the shim runs under: --work's layout and lock,
what an earlier killed run left there, containerd's and the shim's
configuration, the GPU facts the shim needs (driver libraries, devices), the
benchmark image, and stopping it all again."""

import fcntl
import glob
import os
import shutil
import signal
import subprocess
import time

from .common import IMG, NS, SHIM_BINARY, BenchError, dir_tree_bytes, processes

WORK_DIRS = ("root", "state", "tmp", "runsc", "raw-root", "images", "raw", "runsc-logs", "filestore")


class Env:
    def __init__(self, ctx):
        self.ctx = ctx
        self.procs = []  # processes this script started (containerd)
        self.ctrd = None
        self.libdir = ""
        self.devices = []
        self.nv_tool = ""

    # ------------------------------------------------------------------ setup
    def setup(self):
        ctx = self.ctx
        work = ctx.work
        self.lock = open(work.rstrip("/") + ".lock", "w")
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise BenchError("another bench.py run uses %s; wait for it or pass another --work" % work)
        if os.path.exists(work):
            self.reap_stale()
        for d in WORK_DIRS:
            os.makedirs(ctx.w(d), exist_ok=True)
        if ctx.gpu:
            self.find_gpu()
        self.write_configs()
        self.start_containerd()
        self.build_image()

    def find_gpu(self):
        """The driver's library directory, the device nodes, and NVIDIA's
        cuda-checkpoint if the host has it."""
        self.libdir = self.ctx.args.libdir
        if not self.libdir:
            for d in ("/usr/local/nvidia/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib64"):
                if os.path.exists(os.path.join(d, "libcuda.so.1")):
                    self.libdir = d
                    break
        if not os.path.exists(os.path.join(self.libdir or "/nonexistent", "libcuda.so.1")):
            raise BenchError("libcuda.so.1 not found; pass --libdir")
        self.devices = [d for d in ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia0") if os.path.exists(d)]
        self.nv_tool = self.ctx.args.nvidia_cuda_checkpoint or self.find_nv_tool()

    def find_nv_tool(self):
        """NVIDIA's cuda-checkpoint on this host, if any (not the project's)."""
        mine = os.path.realpath(self.ctx.b("cuda-checkpoint"))
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

    def write_configs(self):
        """containerd's config (CRI off) and the shim's: runsc, its root, the
        runsc flags (--runsc-flag, the debug-log directory), the toggle tool,
        the driver libraries, and --shim-config merged in; both written by
        the bundle's rcuda-config (test/e2e/cmd/rcuda-config), as for the
        e2e daemons and the demo."""
        ctx = self.ctx
        tool = ctx.b("rcuda-config")
        if not os.path.exists(tool):
            raise BenchError("%s missing: --bin is a bundle older than rcuda-config; rebuild it (make bundle)" % tool)
        self.ctrd_cfg = ctx.w("containerd.toml")
        ctx.sh([tool, "containerd", "--dir", ctx.work, "--out", self.ctrd_cfg], timeout=60)
        self.shim_cfg = ctx.w("runsc-cuda.toml")
        self.runsc_flags = dict(kv.split("=", 1) for kv in ctx.args.runsc_flag)
        if ctx.args.runsc_debug_log:
            self.runsc_flags["debug-log"] = ctx.w("runsc-logs", "%ID%") + "/"
        args = [tool, "shim", "--runsc", ctx.b("runsc"), "--root", ctx.w("runsc"), "--toggle-tool", ctx.b("cuda-checkpoint"),
                "--out", self.shim_cfg]
        for k, v in sorted(self.runsc_flags.items()):
            args += ["--runsc-flag", "%s=%s" % (k, v)]
        if self.libdir:
            args += ["--driver-lib-dir", self.libdir]
        if ctx.args.shim_config:
            args += ["--extra", ctx.args.shim_config]
        ctx.sh(args, timeout=60)
        with open(self.shim_cfg) as fh:
            ctx.log("shim config:\n" + fh.read())

    def start_containerd(self):
        ctx = self.ctx
        env = dict(os.environ)
        env["PATH"] = ctx.bin + ":" + env.get("PATH", "")
        env["TMPDIR"] = ctx.w("tmp")
        # Task options from the containerd client (a restore from a path)
        # make containerd drop the runtime options: the shim then reads this.
        env["RUNSC_CUDA_CONFIG"] = self.shim_cfg
        self.ctrd_log = ctx.w("containerd.log")
        logfh = open(self.ctrd_log, "w")
        self.ctrd = subprocess.Popen([ctx.b("containerd"), "--config", self.ctrd_cfg], stdout=logfh, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        self.procs.append(self.ctrd)
        sock = ctx.w("c.sock")
        for _ in range(200):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        else:
            raise BenchError("containerd did not start; see %s" % self.ctrd_log)
        self.ctr_base = [ctx.b("ctr"), "--address", sock, "--namespace", NS]
        self.ckptctl_base = [ctx.b("ckptctl"), "--address", sock, "--namespace", NS, "--runtime-config-path", self.shim_cfg]

    def build_image(self):
        """The benchmark image (busybox and the workload), imported into
        containerd; its files also go to rootfs-src, raw runsc's rootfs."""
        ctx = self.ctx
        tar = ctx.w("img.tar")
        self.rootfs_src = ctx.w("rootfs-src")
        mk = [ctx.b("mkimage"), "--out", tar, "--rootfs", self.rootfs_src, "--ref", IMG, "--busybox", ctx.b("busybox")]
        if ctx.mode == "cpu":
            mk += ["--file", "/workload=" + ctx.b("workload-cpu")]
        else:
            mk += ["--file", "/workload=" + ctx.b("workload"), "--ldd", ctx.b("workload"), "--ldd", ctx.b("cuda-checkpoint")]
            if self.libdir:
                mk += ["--ldd", os.path.join(self.libdir, "libcuda.so.1"), "--no-copy", self.libdir]
                if os.path.exists(os.path.join(self.libdir, "libnvidia-ml.so.1")):
                    mk += ["--ldd", os.path.join(self.libdir, "libnvidia-ml.so.1")]
            if self.nv_tool:
                mk += ["--ldd", self.nv_tool]
        _, out, _ = ctx.sh(mk, timeout=300)
        ctx.log(out.strip())
        self.ctr("images", "import", tar, timeout=300)

    # ------------------------------------------------------------------ use
    def ctr(self, *args, timeout=600, check=True):
        _, out, _ = self.ctx.sh(self.ctr_base + list(args), timeout=timeout, check=check)
        return out

    def gpu_env(self):
        """The environment for running the GPU workload on the host."""
        env = dict(os.environ)
        if self.libdir:
            env["LD_LIBRARY_PATH"] = self.libdir + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        return env

    def log_pos(self):
        """The size of containerd's log (which holds the shim's), to read what follows."""
        try:
            return os.path.getsize(self.ctrd_log)
        except OSError:
            return 0

    # ------------------------------------------------------------------ teardown
    def reap_stale(self):
        """What a killed earlier run left under --work: its processes (by pid;
        those whose command line names the directory) and mounts."""
        work = self.ctx.work
        me = os.getpid()
        for pid, argv in processes():
            if pid == me:
                continue
            if any(a.startswith(work.encode() + b"/") or (b"=" + work.encode() + b"/") in a for a in argv[1:]):
                self.ctx.log("killing %d left by an earlier run: %s" % (pid, b" ".join(argv[:3]).decode(errors="replace")))
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        self.unmount_work()
        shutil.rmtree(work, ignore_errors=True)

    def unmount_work(self):
        work = self.ctx.work
        mounts = []
        try:
            with open("/proc/mounts") as fh:
                for line in fh:
                    mp = line.split()[1]
                    if mp == work or mp.startswith(work + "/"):
                        mounts.append(mp)
        except OSError:
            pass
        for mp in sorted(mounts, reverse=True):
            subprocess.call(["umount", "-l", mp], stderr=subprocess.DEVNULL)

    def stop(self):
        """Kills this containerd's shims, stops containerd, keeps its log and
        runsc's in the output's logs/, unmounts and removes --work (unless
        --keep-work). Containers are removed before (see Bench.cleanup)."""
        ctx = self.ctx
        # Shims of this containerd (they outlive it otherwise), by pid.
        for pid, argv in processes():
            if argv and argv[0].endswith(SHIM_BINARY) and (ctx.work + "/c.sock").encode() in b" ".join(argv):
                try:
                    # The shim records its socket in its bundle (its working
                    # directory); a killed shim cannot remove it.
                    with open(os.path.join("/proc", str(pid), "cwd", "address")) as fh:
                        sock = fh.read().strip()
                except OSError:
                    sock = ""
                try:
                    os.kill(pid, signal.SIGKILL)
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
            shutil.copy(self.ctrd_log, os.path.join(ctx.logdir, "containerd.log"))
        src = ctx.w("runsc-logs")
        if os.path.isdir(src) and dir_tree_bytes(src) < 64 << 20:
            shutil.rmtree(os.path.join(ctx.logdir, "runsc"), ignore_errors=True)
            shutil.copytree(src, os.path.join(ctx.logdir, "runsc"), symlinks=True)
        self.unmount_work()
        if not ctx.args.keep_work:
            shutil.rmtree(ctx.work, ignore_errors=True)
