"""Raw runsc, as the shim runs it: a bundle of the very spec the shim gave
runsc (its rootfs a fresh copy of the image's files), the global flags the
shim gave `runsc create`, and create/start/checkpoint/restore/delete, and watching a sandbox exit."""

import glob
import json
import os
import re
import select
import shutil
import threading
import time

from .common import TOGGLE_IN_CONTAINER, BenchError, mono, ms, process_alive


class RawRunsc:
    def __init__(self, ctx, env, workload):
        self.ctx = ctx
        self.env = env
        self.workload = workload
        self.flags = {}  # the global flags, as the shim gave them (flags_like_shim)
        self.flags_seen = None  # the same, as recorded in results.json
        self.root = ctx.w("raw-root")

    def flags_like_shim(self, cid):
        """The global flags the shim gave `runsc create` for cid (from runsc's
        own log of its arguments), for raw runsc to use the same; the
        overlay filestore directory, which the shim puts beside the
        container's rw layer, becomes one of this run's."""
        ctx = self.ctx
        flags = {}
        for f in sorted(glob.glob(ctx.w("runsc-logs", cid, "*.create.txt"))):
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
                    v = "root:dir=" + ctx.w("filestore")
                flags[k] = v
            return flags
        # No runsc log: what the shim does by design (pkg/shim: defaultOverlay2).
        flags = dict(self.env.runsc_flags)
        flags.pop("debug-log", None)
        if "overlay2" not in flags and "overlay" not in flags:
            flags["overlay2"] = "root:dir=" + ctx.w("filestore")
        if ctx.gpu:
            flags["nvproxy"] = "true"
        return flags

    def use_flags_of(self, cid):
        """Takes the shim's flags for cid's runsc as raw runsc's from now on."""
        self.flags = self.flags_like_shim(cid)
        self.flags_seen = dict(self.flags)

    def runsc(self, bundle, extra_flags=None):
        args = [self.ctx.b("runsc"), "--root=" + self.root,
                "--log=" + os.path.join(bundle, "log.json"), "--log-format=json"]
        flags = dict(self.flags)
        if "debug-log" in self.env.runsc_flags:
            flags["debug-log"] = self.env.runsc_flags["debug-log"]
        flags.update(extra_flags or {})
        for k in sorted(flags):
            args.append("--%s=%s" % (k, flags[k]))
        return args

    def bundle(self, cid, spec):
        """A bundle for raw runsc: the shim's spec, a fresh copy of the image's files."""
        bundle = self.ctx.w("raw", cid)
        os.makedirs(bundle)
        rootfs = os.path.join(bundle, "rootfs")
        shutil.copytree(self.env.rootfs_src, rootfs, symlinks=True)
        spec = json.loads(json.dumps(spec))
        spec["root"] = {"path": rootfs, "readonly": False}
        spec.get("linux", {}).pop("cgroupsPath", None)
        with open(os.path.join(bundle, "config.json"), "w") as fh:
            json.dump(spec, fh)
        return bundle

    def start(self, cid, spec, logpath):
        """Creates and starts cid; returns its bundle and the ms until the workload is ready."""
        sh = self.ctx.sh
        bundle = self.bundle(cid, spec)
        t0 = mono()
        with open(logpath, "w") as out:
            sh(self.runsc(bundle) + ["create", "--bundle", bundle, "--pid-file", os.path.join(bundle, "init.pid"), cid],
               stdout=out, stderr=out, timeout=300)
        sh(self.runsc(bundle) + ["start", cid], timeout=300)
        self.workload.wait_ready(logpath)
        return bundle, ms(t0, mono())

    def delete(self, cid):
        bundle = self.ctx.w("raw", cid)
        self.ctx.sh(self.runsc(bundle) + ["delete", "--force", cid], timeout=120, check=False)
        shutil.rmtree(bundle, ignore_errors=True)

    def delete_all(self):
        """Every raw container of this run (the cleanup)."""
        for d in glob.glob(self.ctx.w("raw", "*")):
            self.ctx.sh([self.ctx.b("runsc"), "--root=" + self.root, "delete", "--force", os.path.basename(d)], timeout=60, check=False)
            shutil.rmtree(d, ignore_errors=True)

    def checkpoint(self, cid, bundle, image, compression="none", direct=False, tool=TOGGLE_IN_CONTAINER, leave_running=True):
        """`runsc checkpoint` of cid into image; returns its wall time in ms."""
        args = self.runsc(bundle) + ["checkpoint", "--image-path", image]
        if leave_running:
            args.append("--leave-running")
        args.append("--compression=" + compression)
        if direct:
            args.append("--direct")
        if self.ctx.gpu:
            args.append("--cuda-checkpoint-path=" + tool)
        os.makedirs(image)
        self.ctx.settle()
        t, _ = self.ctx.timed(args + [cid], timeout=900)
        return t

    def restore(self, cid, spec, image, logpath, background=True, direct=False):
        """`runsc create` then `runsc restore --detach` of a new container cid
        from image; returns the timings (create, restore, until the CLI
        returned, to the first line, to the memory line)."""
        ctx = self.ctx
        bundle = self.bundle(cid, spec)
        res = {}
        state = {"err": None, "done": False}
        open(logpath, "w").close()

        def chain():
            try:
                with open(logpath, "a") as out:
                    t = mono()
                    ctx.sh(self.runsc(bundle) + ["create", "--bundle", bundle, "--pid-file", os.path.join(bundle, "init.pid"), cid],
                           stdout=out, stderr=out, timeout=300)
                    res["create_ms"] = ms(t, mono())
                args = self.runsc(bundle) + ["restore", "--detach", "--bundle", bundle, "--image-path", image]
                if direct:
                    args.append("--direct")
                if background:
                    args.append("--background")
                t = mono()
                ctx.sh(args + [cid], timeout=900)
                res["restore_ms"] = ms(t, mono())
                res["return_ms"] = ms(t0, mono())
            except BenchError as e:
                state["err"] = str(e)
            state["done"] = True

        ctx.settle()
        t0 = mono()
        th = threading.Thread(target=chain)
        th.start()
        try:
            first, mem = self.workload.watch(logpath, t0, lambda: state["err"])
        finally:
            th.join()
        if state["err"]:
            raise BenchError(state["err"])
        res.update(first_ms=first, memory_ms=mem)
        return res


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
