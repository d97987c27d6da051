"""What is measured, size by size (bench/README.md, "What is measured,
exactly"): the core pairs (raw runsc and the shim's task service, each
checkpoint restored at once), the option matrix (raw runsc), containerd's own
paths (ctr --image-path, ctr into the content store, the client step by
step), checkpoints that stop the container, and NVIDIA's cuda-checkpoint;
with the time budget that decides which optional phases run."""

import datetime
import json
import os
import shutil
import time

from . import runsclogs
from .common import NV_TOOL_IN_CONTAINER, TOGGLE_IN_CONTAINER, BenchError, Context, dir_bytes, mono, ms, parse_size, proc_mem, to_int
from .env import Env
from .raw import ExitWatch, RawRunsc
from .reference import can_drop_caches, drop_caches, host_info, loadavg, reference, versions
from .results import SCHEMA, save
from .shim import Shim
from .workload import Workload


class Bench:
    def __init__(self, args):
        self.ctx = ctx = Context(args)
        self.args = args
        self.mode = ctx.mode
        self.out = ctx.out
        self.results = ctx.results
        self.log, self.record, self.error = ctx.log, ctx.results.record, ctx.results.error
        self.uid, self.settle, self.need_disk = ctx.uid, ctx.settle, ctx.need_disk
        self.sizes = [(s, parse_size(s)) for s in args.sizes.split()]
        self.env = Env(ctx)
        self.workload = Workload(ctx)
        self.raw = RawRunsc(ctx, self.env, self.workload)
        self.shim = Shim(ctx, self.env, self.workload)
        self.can_drop = False
        self.versions_ = {}

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
        slog, rlog = self.ctx.logpath(sid + ".log"), self.ctx.logpath(rid + ".log")
        t = self.shim.run(sid, mib, slog)
        self.record(size, "start", "shim", start_ms=t)
        spec = self.shim.spec(sid)
        self.raw.use_flags_of(sid)
        with open(os.path.join(self.ctx.out, "spec-%s.json" % label), "w") as fh:
            json.dump(spec, fh, indent=1)
        rbundle, t = self.raw.start(rid, spec, rlog)
        self.record(size, "start", "raw", start_ms=t)
        spid = self.shim.pid(sid)
        if spid:
            self.record(size, "rss", "shim-idle", **proc_mem(spid))

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
            self.record(size, "rss", "shim-after-checkpoints", **proc_mem(spid))
        if self.env.ctrd:
            self.record(size, "rss", "containerd", **proc_mem(self.env.ctrd.pid))

        # GPU: NVIDIA's cuda-checkpoint instead of the project's tool.
        if self.mode == "gpu" and self.env.nv_tool and self.in_list("nv", label) and self.budget_ok(size, remaining, 2.5) \
                and self.need_disk(gib, "NVIDIA cuda-checkpoint"):
            self.nvidia_tool(size, spec)

        self.shim.kill(sid)
        self.raw.delete(rid)
        self.log("=== %s done in %ds" % (label, mono() - t_size))
        return mono() - t_size

    def core_raw(self, size, it, spec, rid, rbundle, rlog, keep=False):
        """One raw runsc checkpoint, restored at once; returns the image
        directory when keep is set (else removes it)."""
        img = self.ctx.w("images", self.uid("raw"))
        before = self.workload.mark(rlog)
        since = time.time()
        t = self.raw.checkpoint(rid, rbundle, img)
        self.workload.wait_idle_after(rlog, before)
        bd = runsclogs.breakdown(self.ctx, rid, since, "save")
        self.record(size, "checkpoint", "raw", "none", it, ms=t, image_bytes=dir_bytes(img), **bd)
        new = self.uid("rawr")
        since = time.time()
        r = self.raw.restore(new, spec, img, self.ctx.logpath(new + ".log"))
        r.update(runsclogs.breakdown(self.ctx, new, since, "load"))
        r["runsc_create_ms"] = runsclogs.cmd_ms(self.ctx, new, "create")
        r["runsc_restore_ms"] = runsclogs.cmd_ms(self.ctx, new, "restore")
        self.record(size, "restore", "raw", "background", it, **r)
        self.raw.delete(new)
        if keep:
            return img
        shutil.rmtree(img, ignore_errors=True)
        return None

    def core_shim(self, size, it, sid, slog):
        """One checkpoint through containerd's task service, restored at once
        from its directory by the containerd client."""
        img = self.ctx.w("images", self.uid("shim"))
        before = self.workload.mark(slog)
        self.settle()
        r = self.shim.ckptctl("checkpoint", "--rpc", "--image-path", img, sid)
        self.workload.wait_idle_after(slog, before)
        meta = self.shim.metadata(img)
        if meta.get("shim_version"):
            self.versions_["shim"] = meta["shim_version"]
        tm = meta.get("timings_ms", {})
        self.record(size, "checkpoint", "shim-rpc", "none", it, ms=r["rpc_ms"], wall_ms=r["wall_ms"],
                    shim_runsc_ms=tm.get("runsc"), shim_total_ms=tm.get("total"), shim_gpu_discovery_ms=tm.get("gpu_discovery"),
                    image_bytes=dir_bytes(img))
        new = self.uid("shimr")
        pos = self.env.log_pos()
        r = self.shim.restore(new, self.ctx.logpath(new + ".log"), from_path=img, like=sid)
        r.update(self.shim.restore_log(pos, new))
        r["runsc_create_ms"] = runsclogs.cmd_ms(self.ctx, new, "create")
        r["runsc_restore_ms"] = runsclogs.cmd_ms(self.ctx, new, "restore")
        npid = self.shim.pid(new)
        if npid:
            r.update({"restored_shim_" + k: v for k, v in proc_mem(npid).items()})
        self.record(size, "restore", "shim-path", "background", it, **r)
        self.shim.kill(new)
        shutil.rmtree(img, ignore_errors=True)

    def extras(self, size, it, remaining, spec, sid, slog, rid, rbundle, rlog):
        """The optional phases of one size: checkpoint options (raw runsc),
        and containerd's own paths for the shim."""
        label, mib = size
        gib = mib / 1024
        images = self.ctx.w("images")
        # Defaults: checkpoint options (raw runsc).
        if self.in_list("matrix", label):
            for variant, comp, direct in (("flate-best-speed", "flate-best-speed", False), ("direct", "none", True)):
                if not self.budget_ok(size, remaining, 3 if comp != "none" else 1):
                    break
                if not self.need_disk(gib, "checkpoint %s" % variant):
                    continue
                img = os.path.join(images, self.uid("raw"))
                before = self.workload.mark(rlog)
                try:
                    t = self.raw.checkpoint(rid, rbundle, img, compression=comp, direct=direct)
                    self.workload.wait_idle_after(rlog, before)
                    self.record(size, "checkpoint", "raw", variant, it, ms=t, image_bytes=dir_bytes(img))
                    # Restored at once, as the core pairs: a compressed image
                    # cannot restore in the background; one written with
                    # O_DIRECT is not in the page cache.
                    new = self.uid("rawr")
                    r = self.raw.restore(new, spec, img, self.ctx.logpath(new + ".log"), background=comp == "none")
                    self.record(size, "restore", "raw", variant if comp != "none" else "written-direct", it, **r)
                    self.raw.delete(new)
                except BenchError as e:
                    self.error("%s checkpoint %s" % (label, variant), e)
                shutil.rmtree(img, ignore_errors=True)

        # containerd's paths: ctr with an image path, ctr into the content
        # store (restored from the image), the client step by step.
        if self.in_list("ctr_path", label) and self.budget_ok(size, remaining, 1) and self.need_disk(gib, "ctr --image-path"):
            img = os.path.join(images, self.uid("ctr"))
            before = self.workload.mark(slog)
            try:
                self.settle()
                t, _ = self.ctx.timed(self.env.ctr_base + ["tasks", "checkpoint", "--image-path", img, sid], timeout=900)
                self.workload.wait_idle_after(slog, before)
                tm = self.shim.metadata(img).get("timings_ms", {})
                self.record(size, "checkpoint", "ctr-path", "none", it, ms=t, shim_total_ms=tm.get("total"), shim_runsc_ms=tm.get("runsc"))
            except BenchError as e:
                self.error("%s ctr --image-path" % label, e)
            self.shim.rm_checkpoint_images()
            shutil.rmtree(img, ignore_errors=True)
        if self.in_list("store", label) and self.budget_ok(size, remaining, 4) and self.need_disk(3 * gib, "content store"):
            try:
                before = self.workload.mark(slog)
                pos = self.env.log_pos()
                self.settle()
                t, out = self.ctx.timed(self.env.ctr_base + ["tasks", "checkpoint", sid], timeout=900)
                ref = out.strip().splitlines()[-1]
                self.workload.wait_idle_after(slog, before)
                lg = self.shim.log_fields(pos, "checkpoint written", sid)
                self.record(size, "checkpoint", "ctr-image", "none", it, ms=t, shim_total_ms=to_int(lg.get("total_ms")),
                            shim_runsc_ms=to_int(lg.get("runsc_ms")), image_bytes=self.shim.image_bytes(ref))
                new = self.uid("shimi")
                pos = self.env.log_pos()
                r = self.shim.restore(new, self.ctx.logpath(new + ".log"), ref=ref)
                r.update(self.shim.restore_log(pos, new))
                self.record(size, "restore", "shim-image", "background", it, **r)
                self.shim.kill(new)
                self.shim.reclaim_unpacked()
                self.shim.rm_checkpoint_images()
                time.sleep(1.1)  # checkpoint image names have a one-second resolution
                before = self.workload.mark(slog)
                pos = self.env.log_pos()
                self.settle()
                r = self.shim.ckptctl("checkpoint", "--steps", sid)
                self.workload.wait_idle_after(slog, before)
                lg = self.shim.log_fields(pos, "checkpoint written", sid)
                r.pop("ref", None)
                self.record(size, "checkpoint", "client-steps", "none", it, ms=r.pop("checkpoint_ms"),
                            shim_total_ms=to_int(lg.get("total_ms")), shim_runsc_ms=to_int(lg.get("runsc_ms")), **r)
            except BenchError as e:
                self.error("%s content store" % label, e)
            self.shim.rm_checkpoint_images()
            self.shim.reclaim_unpacked()

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
        images = self.ctx.w("images")
        rid = self.uid("rawx")
        rlog = self.ctx.logpath(rid + ".log")
        img = os.path.join(images, self.uid("rawx"))
        try:
            bundle, _ = self.raw.start(rid, spec, rlog)
            with open(os.path.join(bundle, "init.pid")) as fh:
                pid = int(fh.read().strip())
            since = time.time()
            self.settle()
            exited = ExitWatch(pid)
            t0 = mono()
            t = self.raw.checkpoint(rid, bundle, img, leave_running=False)
            # runsc returns once the image is saved; the sandbox exits
            # after that. The shim returns once the exit is recorded.
            stopped = ms(t0, exited.wait(120))
            bd = runsclogs.breakdown(self.ctx, rid, since, "save")
            self.record(size, "checkpoint-exit", "raw", "none", it, ms=stopped, returned_ms=t, image_bytes=dir_bytes(img), **bd)
        except BenchError as e:
            self.error("%s raw exit checkpoint" % label, e)
        self.raw.delete(rid)
        shutil.rmtree(img, ignore_errors=True)
        sid = self.uid("shimx")
        img = os.path.join(images, sid)
        try:
            self.shim.run(sid, mib, self.ctx.logpath(sid + ".log"))
            self.settle()
            r = self.shim.ckptctl("checkpoint", "--rpc", "--exit", "--image-path", img, sid)
            meta = self.shim.metadata(img)
            tm = meta.get("timings_ms", {})
            gpu = meta.get("gpu") or {}
            self.record(size, "checkpoint-exit", "shim-rpc", "none", it, ms=r["rpc_ms"], shim_runsc_ms=tm.get("runsc"),
                        shim_total_ms=tm.get("total"), shim_gpu_discovery_ms=tm.get("gpu_discovery"),
                        released_after_exit=gpu.get("released_after_exit"), image_bytes=dir_bytes(img))
        except BenchError as e:
            self.error("%s shim exit checkpoint" % label, e)
        self.shim.kill(sid)
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
                    drop_caches()
                r = self.raw.restore(new, spec, img, self.ctx.logpath(new + ".log"), background=bg, direct=direct)
                self.record(size, "restore", "raw", variant, it, **r)
            except BenchError as e:
                self.error("%s restore %s" % (size[0], variant), e)
            self.raw.delete(new)

    def nvidia_tool(self, size, spec):
        label, mib = size
        nid = "rawnv-%s" % label
        nlog = self.ctx.logpath(nid + ".log")
        nspec = json.loads(json.dumps(spec))
        nspec["mounts"].append({"destination": NV_TOOL_IN_CONTAINER, "type": "bind", "source": self.env.nv_tool,
                                "options": ["bind", "ro", "nosuid", "nodev"]})
        try:
            nbundle, _ = self.raw.start(nid, nspec, nlog)
            for tool, variant in ((TOGGLE_IN_CONTAINER, "toggle-tool"), (NV_TOOL_IN_CONTAINER, "nvidia-cuda-checkpoint")):
                img = self.ctx.w("images", self.uid("nv"))
                before = self.workload.mark(nlog)
                since = time.time()
                t = self.raw.checkpoint(nid, nbundle, img, tool=tool)
                self.workload.wait_idle_after(nlog, before)
                bd = runsclogs.breakdown(self.ctx, nid, since, "save")
                self.record(size, "checkpoint", "raw-tool", variant, 0, ms=t, **bd)
                new = self.uid("rawnvr")
                since = time.time()
                r = self.raw.restore(new, nspec, img, self.ctx.logpath(new + ".log"))
                r.update(runsclogs.breakdown(self.ctx, new, since, "load"))
                self.record(size, "restore", "raw-tool", variant, 0, **r)
                self.raw.delete(new)
                shutil.rmtree(img, ignore_errors=True)
        except BenchError as e:
            self.error("%s NVIDIA cuda-checkpoint" % label, e)
        self.raw.delete(nid)

    def budget_ok(self, size, remaining, factor):
        """Whether an optional phase of about factor checkpoint+restore pairs
        (of one path, at this size) fits in --budget, keeping time for the
        core of the sizes still to come (estimated linearly from this one's,
        plus 20 s each for starting containers)."""
        if not self.args.budget:
            return True
        label, mib = size
        core = [s for s in self.results.samples if s["size"] == label and s["path"] in ("raw", "shim-rpc", "shim-path")
                and s["variant"] in ("none", "background") and s["op"] in ("checkpoint", "restore")]
        op_s = sum((s.get("ms") if s["op"] == "checkpoint" else (s.get("memory_ms") or s.get("return_ms"))) or 0 for s in core) / 1000.0
        iters = max(1, len([s for s in core if s["path"] == "raw" and s["op"] == "checkpoint"]))
        unit = op_s / iters  # one core iteration: raw and shim, checkpoint and restore
        need = factor * unit / 2
        reserve = sum(20 + 1.3 * unit * (r / mib) * self.args.iterations for r in remaining)
        ok = self.ctx.elapsed() + need + reserve < self.args.budget
        if not ok:
            self.results.note("%s: an optional phase (~%ds) skipped to stay within the %ds budget" % (label, need, self.args.budget))
            self.log("SKIP optional phase at %s: budget (elapsed %ds, need %ds, reserve %ds)" % (label, self.ctx.elapsed(), need, reserve))
        return ok

    # ------------------------------------------------------------------ main
    def run(self):
        ctx, args = self.ctx, self.args
        self.log("bench: mode %s%s, sizes %s, %d iteration(s), bin %s, work %s" % (
            ctx.mode, " (dry)" if ctx.dry else "", args.sizes, args.iterations, ctx.bin, ctx.work))
        result = {"schema": SCHEMA, "mode": ctx.mode, "dry": ctx.dry,
                  "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "args": {k: v for k, v in vars(args).items() if k not in ("func",)}}
        self.versions_ = versions(ctx)
        try:
            self.env.setup()
            result["host"] = host_info(ctx)
            load1 = float(result["host"]["loadavg_start"].split()[0]) if result["host"]["loadavg_start"] != "?" else 0
            if load1 > (os.cpu_count() or 1):
                self.results.note("the host was busy when the run began (load average %s on %d cores): expect noise" % (
                    result["host"]["loadavg_start"], os.cpu_count() or 1))
                self.log("WARNING: load average %s on %d cores; the figures will be noisy" % (result["host"]["loadavg_start"], os.cpu_count() or 1))
            self.can_drop = can_drop_caches() and not args.no_cold
            result["reference"] = reference(ctx, self.env.gpu_env())
            if self.env.nv_tool:
                result["nvidia_cuda_checkpoint"] = self.env.nv_tool
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
            result["host"]["loadavg_end"] = loadavg()
        result["versions"] = self.versions_
        result["raw_runsc_flags"] = self.raw.flags_seen
        result["samples"] = self.results.samples
        result["notes"] = self.results.notes
        result["errors"] = self.results.errors
        result["elapsed_s"] = round(ctx.elapsed(), 1)
        path = os.path.join(ctx.out, "results.json")
        save(result, path)
        self.log("results in %s (%ds)" % (path, ctx.elapsed()))
        return result

    # ------------------------------------------------------------------ cleanup
    def cleanup_containers(self):
        if not self.env.ctrd:
            return
        self.shim.delete_all()
        self.raw.delete_all()

    def cleanup(self):
        self.log("cleanup")
        try:
            self.cleanup_containers()
        except Exception as e:  # noqa: BLE001 - cleanup goes on
            self.log("cleanup: %s" % e)
        self.env.stop()
