"""What every part of the benchmark shares: constants, the error type, the
run's context (its directories, its log, running commands) and small helpers."""

import datetime
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from .results import Results

NS = "rcuda-bench"
IMG = "localhost/rcuda-bench:latest"
RUNTIME = "io.containerd.runsc-cuda.v1"
TOGGLE_IN_CONTAINER = "/.runsc-cuda/cuda-checkpoint"
NV_TOOL_IN_CONTAINER = "/.nvidia/cuda-checkpoint"
SHIM_BINARY = b"containerd-shim-runsc-cuda-v1"


class BenchError(Exception):
    pass


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


def to_int(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


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


def dir_tree_bytes(d):
    n = 0
    for root, _, files in os.walk(d):
        for f in files:
            try:
                n += os.path.getsize(os.path.join(root, f))
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


def proc_mem(pid):
    """VmHWM and VmRSS of pid in MiB (vmhwm_mib, vmrss_mib)."""
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


def processes():
    """(pid, argv) of every process whose command line can be read; argv as bytes."""
    for p in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(p, "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        yield int(p.split("/")[2]), argv


class Context:
    """One run's settings and plumbing, shared by every part: the arguments,
    the directories (binaries, output, scratch), the run log, and running
    commands. Results (the samples, notes and errors) are in .results."""

    def __init__(self, args):
        self.args = args
        self.mode = args.mode
        self.dry = args.dry
        # A real GPU: GPU mode without --dry.
        self.gpu = self.mode == "gpu" and not self.dry
        self.bin = os.path.abspath(args.bin)
        self.out = os.path.abspath(args.out)
        self.work = os.path.abspath(args.work)
        if self.work == "/tmp" or self.work.startswith("/tmp/"):
            raise BenchError("--work %s is under /tmp, where runsc's sandbox mounts a tmpfs; choose another directory" % self.work)
        self.started = mono()
        self.seq = 0
        os.makedirs(self.out, exist_ok=True)
        self.logdir = os.path.join(self.out, "logs")
        # Container names repeat between runs: an old log would pass for
        # the new container's output.
        shutil.rmtree(self.logdir, ignore_errors=True)
        os.makedirs(self.logdir)
        self.runlog = open(os.path.join(self.out, "run.log"), "w")
        self.results = Results(self.log)

    def b(self, name):
        """The path of binary name in --bin."""
        return os.path.join(self.bin, name)

    def logpath(self, name):
        """A file in the output's logs/."""
        return os.path.join(self.logdir, name)

    def w(self, *parts):
        """A path under --work."""
        return os.path.join(self.work, *parts)

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

    def free_gib(self):
        st = os.statvfs(self.work)
        return st.f_bavail * st.f_frsize / 2**30

    def need_disk(self, gib, what):
        """Whether --work has gib GiB free plus a 2 GiB margin; if not, the
        phase what is noted as skipped."""
        free = self.free_gib()
        if free < gib + 2:
            self.results.note("%s skipped: %.1f GiB free on %s, %.1f GiB needed" % (what, free, self.work, gib + 2))
            self.log("SKIP %s: disk" % what)
            return False
        return True
