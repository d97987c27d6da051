"""The shim, driven as containerd's users drive it: `ctr run`, ctr's task
and image commands, and ckptctl (the containerd client: the task service's
Checkpoint call, the client's checkpoint step by step, restores from a
directory or an image); plus what the shim reports (its log lines in
containerd's log, the checkpoint metadata) and its process."""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time

from .common import IMG, NS, RUNTIME, SHIM_BINARY, BenchError, mono, ms, processes, to_int

class Shim:
    def __init__(self, ctx, env, workload):
        self.ctx = ctx
        self.env = env
        self.workload = workload

    def run(self, cid, mib, logpath):
        """`ctr run -d` of the workload holding mib MiB; returns the ms until it is ready."""
        env = self.env
        if os.path.exists(logpath):
            os.remove(logpath)
        args = ["run", "-d", "--runtime", RUNTIME, "--runtime-config-path", env.shim_cfg]
        for d in env.devices:
            args += ["--device", d]
        args += ["--log-uri", "file://" + logpath, IMG, cid] + self.workload.args(mib)
        t0 = mono()
        env.ctr(*args, timeout=300)
        self.workload.wait_ready(logpath)
        return ms(t0, mono())

    def spec(self, cid):
        """The OCI spec the shim gave runsc for cid (its bundle's config.json)."""
        path = self.ctx.w("state", "io.containerd.runtime.v2.task", NS, cid, "config.json")
        with open(path) as fh:
            return json.load(fh)

    def pid(self, cid):
        """The pid of the shim of this containerd serving container cid."""
        for pid, argv in processes():
            if argv and argv[0].endswith(SHIM_BINARY) and b"-id" in argv:
                i = argv.index(b"-id")
                if i + 1 < len(argv) and argv[i + 1].decode() == cid and self.ctx.work.encode() in b" ".join(argv):
                    return pid
        return None

    def kill(self, cid, keep_container=False):
        sh, base = self.ctx.sh, self.env.ctr_base
        sh(base + ["tasks", "kill", "-s", "KILL", cid], timeout=60, check=False)
        for _ in range(100):
            rc, out, _ = sh(base + ["tasks", "ls"], timeout=60, check=False)
            if not any(line.split()[:1] == [cid] and "RUNNING" in line for line in out.splitlines()):
                break
            time.sleep(0.1)
        sh(base + ["tasks", "rm", "-f", cid], timeout=60, check=False)
        if not keep_container:
            sh(base + ["containers", "rm", cid], timeout=60, check=False)

    def delete_all(self):
        """Every task and container of the namespace (the cleanup)."""
        sh, base, env = self.ctx.sh, self.env.ctr_base, self.env
        out = env.ctr("tasks", "ls", "-q", check=False, timeout=30)
        for t in out.split():
            sh(base + ["tasks", "kill", "-s", "KILL", t], timeout=30, check=False)
        time.sleep(0.5)
        for t in out.split():
            sh(base + ["tasks", "rm", "-f", t], timeout=30, check=False)
        for c in env.ctr("containers", "ls", "-q", check=False, timeout=30).split():
            sh(base + ["containers", "rm", c], timeout=30, check=False)

    # ------------------------------------------------------------------ what the shim reports
    def log_fields(self, pos, msg, cid):
        """key=value fields of the shim's log line msg for container cid written after pos."""
        try:
            with open(self.env.ctrd_log, errors="replace") as fh:
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

    def restore_log(self, pos, cid):
        """The shim's own restore timings: its checks at create (metadata,
        runsc version, GPU) and its `runsc restore`."""
        chk = self.log_fields(pos, "restore checked", cid)
        return {"shim_check_ms": to_int(chk.get("ms")), "shim_check_gpu_ms": to_int(chk.get("gpu_ms")),
                "shim_start_ms": to_int(self.log_fields(pos, "restored", cid).get("ms"))}

    @staticmethod
    def metadata(image_dir):
        """The checkpoint's runsc-cuda.json (shim version, timings, GPU facts)."""
        try:
            with open(os.path.join(image_dir, "runsc-cuda.json")) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return {}

    # ------------------------------------------------------------------ ckptctl (the containerd client)
    def ckptctl(self, *args, timeout=900):
        """Runs ckptctl; returns its JSON line with wall_ms added."""
        t0 = mono()
        _, out, _ = self.ctx.sh(self.env.ckptctl_base + list(args), timeout=timeout)
        wall = ms(t0, mono())
        line = [l for l in out.strip().splitlines() if l.startswith("{")]
        res = json.loads(line[-1]) if line else {}
        res["wall_ms"] = wall
        return res

    def restore(self, new_id, logpath, ref=None, from_path=None, like=None):
        """`ckptctl restore` of image ref (or of the directory from_path, with
        the container like's settings) into new_id; returns ckptctl's
        timings, until it returned, and to the workload's first and memory
        lines."""
        ctx = self.ctx
        if os.path.exists(logpath):
            os.remove(logpath)
        args = ["restore", "--log", logpath, "--wait-output"]
        if from_path:
            args += ["--from-path", from_path, "--like", like, new_id]
        else:
            args += [ref, new_id]
        state = {"p": None, "out": None, "err": None}
        ctx.settle()
        t0 = mono()
        p = subprocess.Popen(self.env.ckptctl_base + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
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
            first, mem = self.workload.watch(logpath, t0, failed)
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

    # ------------------------------------------------------------------ containerd's leftovers
    def reclaim_unpacked(self):
        """containerd unpacks each checkpoint image it restores into a
        temporary directory that it never removes."""
        for d in glob.glob(self.ctx.w("tmp", "ctrd-checkpoint*")):
            shutil.rmtree(d, ignore_errors=True)

    def rm_checkpoint_images(self):
        out = self.env.ctr("images", "ls", "-q", check=False)
        refs = [r for r in out.split() if r.startswith("containerd.io/checkpoint/")]
        if refs:
            self.env.ctr("images", "rm", "--sync", *refs, check=False)

    def image_bytes(self, ref):
        """The size ctr lists for image ref ('66.3 MiB')."""
        out = self.env.ctr("images", "ls", check=False)
        for line in out.splitlines():
            f = line.split()
            if f and f[0] == ref and len(f) >= 5:
                return f[3] + " " + f[4]
        return None
