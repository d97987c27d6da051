"""Tables, targets and a plot from a bench.py results.json (standard library only)."""

import json
import os
import statistics

# The targets.
OVERHEAD_RATIO = 1.02
OVERHEAD_MS = 50
RSS_LIMIT_MIB = 64
E2E_RATIO = 1.5


def _vals(res, size, op, path, variant, field):
    out = []
    for s in res.get("samples", []):
        if s["size"] == size and s["op"] == op and s["path"] == path and (variant is None or s["variant"] == variant):
            v = s.get(field)
            if isinstance(v, (int, float)):
                out.append(v)
    return out


def med(res, size, op, path, variant, field):
    v = _vals(res, size, op, path, variant, field)
    return statistics.median(v) if v else None


def med_expr(res, size, op, path, variant, fn):
    """Median over the samples of fn(sample), skipping samples it cannot
    compute (a field missing)."""
    out = []
    for s in res.get("samples", []):
        if s["size"] == size and s["op"] == op and s["path"] == path and (variant is None or s["variant"] == variant):
            try:
                v = fn(s)
            except (KeyError, TypeError):
                continue
            if isinstance(v, (int, float)):
                out.append(v)
    return statistics.median(out) if out else None


def spread(res, size, op, path, variant, field):
    v = _vals(res, size, op, path, variant, field)
    return (min(v), max(v)) if len(v) > 1 else None


def sizes(res):
    seen = {}
    for s in res.get("samples", []):
        seen.setdefault(s["size"], s["mib"])
    return sorted(seen, key=lambda k: seen[k])


def add(*xs):
    return None if any(x is None for x in xs) else sum(xs)


def sub(a, b):
    return None if a is None or b is None else a - b


def fms(v):
    if v is None:
        return "–"
    if abs(v) >= 10000:
        return "%.1f s" % (v / 1000)
    return "%d ms" % round(v)


def fms_spread(res, size, op, path, variant, field, v=None):
    if v is None:
        v = med(res, size, op, path, variant, field)
    sp = spread(res, size, op, path, variant, field)
    if v is None or sp is None:
        return fms(v)
    return "%s (%d–%d)" % (fms(v), sp[0], sp[1])


def fbytes(v):
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if v >= div:
            return "%.1f %s" % (v / div, unit)
    return "%d B" % v


def fratio(a, b):
    if a is None or not b:
        return "–"
    return "%.2fx" % (a / b)


def summary(res):
    """Per-size figures the tables and targets use."""
    out = {}
    for sz in sizes(res):
        m = lambda op, path, variant, field: med(res, sz, op, path, variant, field)  # noqa: E731
        d = {}
        d["raw_ckpt"] = m("checkpoint", "raw", "none", "ms")
        d["image_bytes"] = m("checkpoint", "raw", "none", "image_bytes")
        d["shim_ckpt"] = m("checkpoint", "shim-rpc", "none", "ms")
        d["shim_internal"] = sub(m("checkpoint", "shim-rpc", "none", "shim_total_ms"), m("checkpoint", "shim-rpc", "none", "shim_runsc_ms"))
        d["shim_runsc"] = m("checkpoint", "shim-rpc", "none", "shim_runsc_ms")
        d["shim_ckpt_gpu"] = m("checkpoint", "shim-rpc", "none", "shim_gpu_discovery_ms")
        d["ctr_path"] = m("checkpoint", "ctr-path", "none", "ms")
        d["ctr_image"] = m("checkpoint", "ctr-image", "none", "ms")
        d["ctr_image_bytes"] = next((s.get("image_bytes") for s in res["samples"] if s["size"] == sz and s["path"] == "ctr-image"), None)
        d["client_image"] = m("checkpoint", "client-steps", "none", "ms")
        d["steps"] = {k: m("checkpoint", "client-steps", "none", k) for k in
                      ("pause_ms", "rpc_ms", "rw_diff_ms", "rw_diff_bytes", "image_ms", "resume_ms", "shim_total_ms", "packed_bytes")}
        d["packing"] = sub(d["steps"]["rpc_ms"], d["steps"]["shim_total_ms"])
        d["rss_shim"] = m("rss", "shim-after-checkpoints", "default", "vmhwm_mib")
        d["rss_restored_shim"] = m("restore", "shim-path", "background", "restored_shim_vmhwm_mib")
        d["rss_containerd"] = m("rss", "containerd", "default", "vmhwm_mib")
        d["raw_restore"] = add(m("restore", "raw", "background", "create_ms"), m("restore", "raw", "background", "restore_ms"))
        d["raw_first"] = m("restore", "raw", "background", "first_ms")
        d["raw_memory"] = m("restore", "raw", "background", "memory_ms")
        d["shim_restore"] = add(m("restore", "shim-path", "background", "task_create_ms"), m("restore", "shim-path", "background", "start_ms"))
        d["shim_container"] = m("restore", "shim-path", "background", "container_ms")
        d["shim_check"] = m("restore", "shim-path", "background", "shim_check_ms")
        d["shim_check_gpu"] = m("restore", "shim-path", "background", "shim_check_gpu_ms")
        d["shim_first_own"] = sub(m("restore", "shim-path", "background", "first_output_ms"), d["shim_container"])
        d["shim_first"] = m("restore", "shim-path", "background", "first_ms")
        d["shim_memory"] = m("restore", "shim-path", "background", "memory_ms")
        d["image_first"] = m("restore", "shim-image", "background", "first_ms")
        d["image_memory"] = m("restore", "shim-image", "background", "memory_ms")
        d["image_container"] = m("restore", "shim-image", "background", "container_ms")
        d["unpack"] = sub(m("restore", "shim-image", "background", "task_create_ms"), m("restore", "shim-path", "background", "task_create_ms"))
        d["raw_exit"] = m("checkpoint-exit", "raw", "none", "ms")
        d["shim_exit"] = m("checkpoint-exit", "shim-rpc", "none", "ms")
        d["shim_exit_internal"] = sub(m("checkpoint-exit", "shim-rpc", "none", "shim_total_ms"), m("checkpoint-exit", "shim-rpc", "none", "shim_runsc_ms"))
        d["shim_exit_runsc"] = m("checkpoint-exit", "shim-rpc", "none", "shim_runsc_ms")
        d["shim_gpu_discovery"] = m("checkpoint-exit", "shim-rpc", "none", "shim_gpu_discovery_ms")
        # What the shim and containerd add around runsc, measured within
        # the same operation (runsc's own time varies far more between runs
        # than the shim's part on a small host).
        d["added_ckpt"] = med_expr(res, sz, "checkpoint", "shim-rpc", "none", lambda s: s["ms"] - s["shim_runsc_ms"])
        raw_teardown = med_expr(res, sz, "checkpoint-exit", "raw", "none", lambda s: s["ms"] - s["returned_ms"])
        shim_exit_around = med_expr(res, sz, "checkpoint-exit", "shim-rpc", "none", lambda s: s["ms"] - s["shim_runsc_ms"])
        d["added_exit"] = sub(shim_exit_around, raw_teardown)
        d["raw_teardown"] = raw_teardown
        raw_around = med_expr(res, sz, "restore", "raw", "background",
                              lambda s: s["create_ms"] + s["restore_ms"] - s["runsc_create_ms"] - s["runsc_restore_ms"])
        shim_around = med_expr(res, sz, "restore", "shim-path", "background",
                               lambda s: s["task_create_ms"] + s["start_ms"] - s["runsc_create_ms"] - s["runsc_restore_ms"])
        d["added_restore"] = sub(shim_around, raw_around)
        d["raw_e2e"] = add(d["raw_ckpt"], d["raw_first"])
        d["ctr_e2e"] = add(d["ctr_image"], d["image_first"])
        # The same through a directory: `ctr task checkpoint --image-path`,
        # then a restore from that directory (containerd's RestoreFromPath,
        # what the CRI's restore and nerdctl-less tools can use).
        d["path_e2e"] = add(d["ctr_path"], d["shim_first"])
        out[sz] = d
    return out


def targets(res, summ):
    rows = []
    for sz, d in summ.items():
        for what, added, raw, shim_v, note in (
                ("a checkpoint", d["added_ckpt"], d["raw_ckpt"], d["shim_ckpt"], "task API call minus the shim's runsc checkpoint"),
                ("an exit checkpoint", d["added_exit"], d["raw_exit"], d["shim_exit"],
                 "around the shim's runsc checkpoint (freeze, stop, exit recorded) minus raw runsc's teardown after its CLI returns"),
                ("a restore", d["added_restore"], d["raw_restore"], d["shim_restore"],
                 "task create+start minus runsc create+restore (runsc's logs), minus the same for raw runsc")):
            if added is None or raw is None:
                continue
            limit = raw * (OVERHEAD_RATIO - 1) + OVERHEAD_MS
            rows.append(("shim adds ≤ 2%% + 50 ms to %s (%s)" % (what, sz), added <= limit,
                         "adds %s (limit %s; %s). Medians of separate runs: shim %s, raw %s" % (
                             fms(added), fms(limit), note, fms(shim_v), fms(raw))))
        if d["raw_first"] is not None and d["shim_first_own"] is not None:
            limit = d["raw_first"] * OVERHEAD_RATIO + OVERHEAD_MS
            rows.append(("first output after restore: shim ≤ raw + 2%% + 50 ms (%s)" % sz, d["shim_first_own"] <= limit,
                         "shim %s vs raw %s (limit %s; medians of separate runs)" % (fms(d["shim_first_own"]), fms(d["raw_first"]), fms(limit))))
        if d["raw_e2e"] is not None and d["ctr_e2e"] is not None:
            rows.append(("end to end (ctr checkpoint → image → first output) ≤ 1.5x raw (%s)" % sz, d["ctr_e2e"] <= E2E_RATIO * d["raw_e2e"],
                         "%s vs %s (%s)" % (fms(d["ctr_e2e"]), fms(d["raw_e2e"]), fratio(d["ctr_e2e"], d["raw_e2e"]))))
        if d["raw_e2e"] is not None and d["path_e2e"] is not None:
            rows.append(("end to end through a directory (ctr checkpoint --image-path → restore from it → first output) ≤ 1.5x raw (%s)" % sz,
                         d["path_e2e"] <= E2E_RATIO * d["raw_e2e"],
                         "%s vs %s (%s)" % (fms(d["path_e2e"]), fms(d["raw_e2e"]), fratio(d["path_e2e"], d["raw_e2e"]))))
    rss = [d["rss_shim"] for d in summ.values() if d["rss_shim"] is not None]
    if rss:
        rows.append(("shim peak RSS < 64 MiB while checkpointing", max(rss) < RSS_LIMIT_MIB, "max VmHWM %.1f MiB" % max(rss)))
    for cold in (False, True):
        for sz, (variant, first) in defaults_best(res, cold).items():
            dv = "cold" if cold else "background"
            dflt = med(res, sz, "restore", "raw", dv, "first_ms")
            sp = spread(res, sz, "restore", "raw", dv, "first_ms")
            fastest = dflt is not None and dflt <= first
            # A variant faster by less than the default's own scatter (or
            # than 5%) is not measurably faster.
            tie = dflt is not None and (dflt <= first * 1.05 or (sp is not None and sp[0] <= first))
            rows.append(("defaults fastest to first output after restore%s (%s)" % (", cold page cache" if cold else "", sz),
                         fastest or tie,
                         "default %s%s; fastest %s: %s%s" % (fms(dflt), " (%d–%d)" % sp if sp else "", variant, fms(first),
                                                            "" if fastest or not tie else " (within the default's scatter)")))
    return rows


RESTORE_VARIANTS = [
    ("background", "uncompressed, background (default)"),
    ("no-background", "uncompressed, no background"),
    ("direct", "uncompressed, O_DIRECT read, background"),
    ("flate-best-speed", "flate-best-speed (no background)"),
    ("written-direct", "image written with O_DIRECT, background"),
    ("cold", "cold cache, background"),
    ("cold-no-background", "cold cache, no background"),
    ("cold-direct", "cold cache, O_DIRECT read, background"),
]


def defaults_best(res, cold=False):
    """Per size where at least two of them ran, the restore variant with the
    fastest first output, among the warm-cache ones (or the cold-cache ones)."""
    out = {}
    for sz in sizes(res):
        measured = []
        for v, _ in RESTORE_VARIANTS:
            f = med(res, sz, "restore", "raw", v, "first_ms")
            if v.startswith("cold") == cold and f is not None:
                measured.append((f, v))
        if len(measured) >= 2:
            f, v = min(measured)
            out[sz] = (v, f)
    return out


def row(*cells):
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown(res):
    summ = summary(res)
    h = res.get("host", {})
    v = res.get("versions", {})
    ref = res.get("reference", {})
    a = res.get("args", {})
    L = []
    title = "GPU" if res["mode"] == "gpu" else "CPU"
    if res.get("dry"):
        title += " (dry run: host memory, no GPU)"
    L.append("# Checkpoint/restore benchmark: %s" % title)
    L.append("")
    L.append("- Date: %s; %s iteration(s) per size; bench.py took %ss" % (res.get("date"), a.get("iterations"), res.get("elapsed_s")))
    L.append("- Host: %s, %s cores, %s GiB RAM, kernel %s; disk %s; load average %s at the start, %s at the end" % (
        h.get("cpu"), h.get("cores"), h.get("ram_gib"), h.get("kernel"), h.get("disk"), h.get("loadavg_start"), h.get("loadavg_end")))
    if h.get("gpu"):
        L.append("- GPU: %s" % h["gpu"])
    L.append("- Versions: %s; %s; shim %s" % (v.get("runsc"), v.get("containerd"), v.get("shim")))
    refs = []
    if "disk_write_gbs" in ref:
        refs.append("disk write %.2f GB/s, read %.2f GB/s (O_DIRECT)" % (ref["disk_write_gbs"], ref.get("disk_read_gbs", 0)))
    if "mem_copy_gbs" in ref:
        refs.append("host memory copy %.1f GB/s" % ref["mem_copy_gbs"])
    if "pcie_htod_gbs" in ref:
        refs.append("PCIe host→device %.1f GB/s, device→host %.1f GB/s" % (ref["pcie_htod_gbs"], ref["pcie_dtoh_gbs"]))
    if refs:
        L.append("- Physical reference: " + "; ".join(refs))
    if res.get("nvidia_cuda_checkpoint"):
        L.append("- NVIDIA cuda-checkpoint: %s" % res["nvidia_cuda_checkpoint"])
    elif res.get("mode") == "gpu" and not res.get("dry"):
        L.append("- NVIDIA cuda-checkpoint: not on this host (not on PATH, no --nvidia-cuda-checkpoint), so the toggle tools were not compared")
    L.append("")
    L.append("Medians (min–max over iterations where there are several). Every checkpoint leaves the container running "
             "(`--leave-running`, as the shim always asks runsc); every restore is a new container beside the original. "
             "See bench/README.md for exactly what each column includes.")
    L.append("")

    L.append("## Checkpoint")
    L.append("")
    L.append(row("Size", "Image", "raw runsc", "shim (task API)", "shim − raw (medians)", "shim adds around runsc", "shim's own work",
                 "ctr --image-path", "ctr → image", "client → image", "containerd packing", "rw-layer diff", "shim peak RSS"))
    L.append(row(*["---"] * 13))
    for sz, d in summ.items():
        L.append(row(sz, fbytes(d["image_bytes"]), fms_spread(res, sz, "checkpoint", "raw", "none", "ms"),
                     fms_spread(res, sz, "checkpoint", "shim-rpc", "none", "ms"),
                     "%s, %s" % (fms(sub(d["shim_ckpt"], d["raw_ckpt"])), fratio(d["shim_ckpt"], d["raw_ckpt"])),
                     fms(d["added_ckpt"]),
                     fms(d["shim_internal"]) + (" (GPU discovery %s)" % fms(d["shim_ckpt_gpu"]) if d["shim_ckpt_gpu"] else ""),
                     fms(d["ctr_path"]), fms(d["ctr_image"]), fms(d["client_image"]), fms(d["packing"]),
                     "%s (%s)" % (fms(d["steps"]["rw_diff_ms"]), fbytes(d["steps"]["rw_diff_bytes"])),
                     "%.1f MiB" % d["rss_shim"] if d["rss_shim"] is not None else "–"))
    L.append("")

    if any(d["raw_exit"] is not None for d in summ.values()):
        L.append("Checkpoints that stop the container, until it has stopped: raw `runsc checkpoint` (runsc stops the sandbox; "
                 "timed until the sandbox process is gone, and until the CLI returns) vs the shim's exit checkpoint through "
                 "the task service (it freezes the sandbox, saves with `--leave-running`, stops it and returns once the exit is "
                 "recorded, so a failed save never costs the container; GPU: also until the device memory is released).")
        L.append("")
        L.append(row("Size", "raw runsc: stopped", "raw: CLI returns", "shim (task API)", "shim − raw (medians)", "of which runsc",
                     "shim adds around runsc", "GPU discovery"))
        L.append(row(*["---"] * 8))
        for sz, d in summ.items():
            if d["raw_exit"] is None and d["shim_exit"] is None:
                continue
            L.append(row(sz, fms_spread(res, sz, "checkpoint-exit", "raw", "none", "ms"),
                         fms(med(res, sz, "checkpoint-exit", "raw", "none", "returned_ms")),
                         fms_spread(res, sz, "checkpoint-exit", "shim-rpc", "none", "ms"),
                         "%s, %s" % (fms(sub(d["shim_exit"], d["raw_exit"])), fratio(d["shim_exit"], d["raw_exit"])),
                         fms(d["shim_exit_runsc"]), fms(d["added_exit"]), fms(d["shim_gpu_discovery"])))
        L.append("")

    L.append("## Restore")
    L.append("")
    L.append(row("Size", "raw create+restore", "raw first output", "raw memory verified", "shim create+restore",
                 "shim adds around runsc", "shim's checks (GPU)", "shim first output", "shim − raw (first output, medians)",
                 "shim memory verified", "from image: first output", "containerd unpack", "restored shim RSS"))
    L.append(row(*["---"] * 13))
    for sz, d in summ.items():
        chk = fms(d["shim_check"])
        if d["shim_check_gpu"]:
            chk += " (%s)" % fms(d["shim_check_gpu"])
        L.append(row(sz, fms(d["raw_restore"]), fms_spread(res, sz, "restore", "raw", "background", "first_ms"),
                     fms(d["raw_memory"]), fms(d["shim_restore"]), fms(d["added_restore"]), chk, fms(d["shim_first_own"]),
                     "%s, %s" % (fms(sub(d["shim_first_own"], d["raw_first"])), fratio(d["shim_first_own"], d["raw_first"])),
                     fms(d["shim_memory"]), fms(d["image_first"]), fms(d["unpack"]),
                     "%.1f MiB" % d["rss_restored_shim"] if d["rss_restored_shim"] is not None else "–"))
    L.append("")

    L.append("## End to end")
    L.append("")
    L.append(row("Size", "raw: checkpoint + restore to first output", "ctr checkpoint → image, then image → first output", "ratio",
                 "of which containerd: rw diff + packing", "containerd: container + unpack",
                 "ctr checkpoint --image-path, then restore from the directory → first output", "ratio"))
    L.append(row(*["---"] * 8))
    for sz, d in summ.items():
        L.append(row(sz, fms(d["raw_e2e"]), fms(d["ctr_e2e"]), fratio(d["ctr_e2e"], d["raw_e2e"]),
                     fms(add(d["steps"]["rw_diff_ms"], d["packing"])), fms(add(d["image_container"], d["unpack"])),
                     fms(d["path_e2e"]), fratio(d["path_e2e"], d["raw_e2e"])))
    L.append("")

    steps = [(sz, d["steps"]) for sz, d in summ.items() if d["steps"]["rpc_ms"] is not None]
    if steps:
        L.append("## Where containerd's checkpoint time goes (client, into the content store)")
        L.append("")
        L.append(row("Size", "pause", "checkpoint call", "of which shim", "of which packing", "rw-layer diff", "index + image record", "resume", "total"))
        L.append(row(*["---"] * 9))
        for sz, s in steps:
            L.append(row(sz, fms(s["pause_ms"]), fms(s["rpc_ms"]), fms(s["shim_total_ms"]), fms(sub(s["rpc_ms"], s["shim_total_ms"])),
                         "%s (%s)" % (fms(s["rw_diff_ms"]), fbytes(s["rw_diff_bytes"])), fms(s["image_ms"]), fms(s["resume_ms"]),
                         fms(summ[sz]["client_image"])))
        L.append("")

    bd_rows = []
    for sz in summ:
        ck = {k: med(res, sz, "checkpoint", "raw", "none", k) for k in ("cuda_ms", "kernel_save_ms", "memory_save_ms", "overall_save_ms")}
        ld = {k: med(res, sz, "restore", "raw", "background", k) for k in ("kernel_load_ms", "memory_load_ms", "overall_load_ms")}
        if any(x is not None for x in list(ck.values()) + list(ld.values())):
            bd_rows.append((sz, ck, ld))
    if bd_rows:
        L.append("## Where runsc's time goes (raw runsc, the sandbox's own log)")
        L.append("")
        L.append(row("Size", "checkpoint (CLI)", "CUDA toggle", "kernel save", "memory save", "sandbox save total", "restore (CLI)",
                     "kernel load", "memory load", "sandbox load total"))
        L.append(row(*["---"] * 10))
        for sz, ck, ld in bd_rows:
            L.append(row(sz, fms(summ[sz]["raw_ckpt"]), fms(ck["cuda_ms"]), fms(ck["kernel_save_ms"]), fms(ck["memory_save_ms"]),
                         fms(ck["overall_save_ms"]), fms(med(res, sz, "restore", "raw", "background", "restore_ms")),
                         fms(ld["kernel_load_ms"]), fms(ld["memory_load_ms"]), fms(ld["overall_load_ms"])))
        L.append("")
        L.append("With `--background` the sandbox loads memory after `runsc restore` returns: its load total can exceed the restore.")
        L.append("")

    if defaults_best(res) or any(_vals(res, sz, "checkpoint", "raw", "flate-best-speed", "ms") for sz in summ):
        L.append("## Options (raw runsc; the shim passes them through)")
        L.append("")
        L.append(row("Size", "Variant", "checkpoint", "image", "restore returns", "first output", "memory verified"))
        L.append(row(*["---"] * 7))
        for sz in summ:
            ck_none = med(res, sz, "checkpoint", "raw", "none", "ms")
            for v, desc in RESTORE_VARIANTS:
                f = med(res, sz, "restore", "raw", v, "first_ms")
                if f is None:
                    continue
                ck = ck_none
                img = med(res, sz, "checkpoint", "raw", "none", "image_bytes")
                if v in ("flate-best-speed", "written-direct"):
                    cv = "direct" if v == "written-direct" else v
                    ck = med(res, sz, "checkpoint", "raw", cv, "ms")
                    img = med(res, sz, "checkpoint", "raw", cv, "image_bytes")
                L.append(row(sz, desc, fms(ck), fbytes(img), fms(med(res, sz, "restore", "raw", v, "return_ms")), fms(f),
                             fms(med(res, sz, "restore", "raw", v, "memory_ms"))))
        L.append("")

    tool = [sz for sz in summ if _vals(res, sz, "checkpoint", "raw-tool", None, "ms")]
    if tool:
        L.append("## CUDA toggle: the project's tool vs NVIDIA's cuda-checkpoint (raw runsc)")
        L.append("")
        L.append(row("Size", "Tool", "checkpoint", "CUDA toggle (sandbox log)", "restore returns", "first output"))
        L.append(row(*["---"] * 6))
        for sz in tool:
            for v in ("toggle-tool", "nvidia-cuda-checkpoint"):
                L.append(row(sz, v, fms(med(res, sz, "checkpoint", "raw-tool", v, "ms")), fms(med(res, sz, "checkpoint", "raw-tool", v, "cuda_ms")),
                             fms(med(res, sz, "restore", "raw-tool", v, "return_ms")), fms(med(res, sz, "restore", "raw-tool", v, "first_ms"))))
        L.append("")

    L.append("## Targets")
    L.append("")
    L.append(row("Target", "Met", "Figures"))
    L.append(row("---", "---", "---"))
    for name, ok, fig in targets(res, summ):
        L.append(row(name, "yes" if ok else "**no**", fig))
    L.append("")
    if res.get("notes"):
        L.append("Notes: " + "; ".join(res["notes"]))
        L.append("")
    if res.get("errors"):
        L.append("Errors:")
        for e in res["errors"]:
            L.append("- %s: %s" % (e["what"], e["error"].replace("\n", " ")[:400]))
        L.append("")
    return "\n".join(L)


def svg(res):
    """Per size, checkpoint and restore-to-first-output bars, one scale per panel."""
    summ = summary(res)
    ck_bars = [("raw runsc", "raw_ckpt", "#4c72b0"), ("shim (task API)", "shim_ckpt", "#55a868"),
               ("ctr --image-path", "ctr_path", "#c44e52"), ("ctr → image", "ctr_image", "#8172b2")]
    rs_bars = [("raw runsc", "raw_first", "#4c72b0"), ("shim, from directory", "shim_first", "#55a868"),
               ("shim, from image", "image_first", "#8172b2")]
    bar_h, gap, left, panel_w, label_w = 16, 4, 70, 330, 130
    rows = list(summ.items())
    row_h = max(len(ck_bars), len(rs_bars)) * (bar_h + gap) + 24
    width = left + 2 * (label_w + panel_w + 70)
    height = 70 + row_h * len(rows) + 20
    o = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">' % (width, height),
         '<rect width="100%" height="100%" fill="white"/>']
    title = "%s checkpoint/restore, %s" % ("GPU" if res["mode"] == "gpu" else "CPU", res.get("date", ""))
    o.append('<text x="10" y="20" font-size="14" font-weight="bold">%s</text>' % esc(title))
    px = [left, left + label_w + panel_w + 70]
    o.append('<text x="%d" y="45" font-weight="bold">checkpoint (ms)</text>' % (px[0] + label_w))
    o.append('<text x="%d" y="45" font-weight="bold">restore until the first output, as the caller sees it (ms)</text>' % (px[1] + label_w))
    y = 60
    for sz, d in rows:
        o.append('<text x="10" y="%d" font-weight="bold">%s</text>' % (y + 14, esc(sz)))
        for x0, bars in zip(px, (ck_bars, rs_bars)):
            vals = [d.get(k) for _, k, _ in bars]
            top = max([v for v in vals if v] or [1])
            yy = y
            for (name, key, color), v in zip(bars, vals):
                o.append('<text x="%d" y="%d" text-anchor="end">%s</text>' % (x0 + label_w - 6, yy + bar_h - 4, esc(name)))
                if v is not None:
                    w = max(1, panel_w * v / top)
                    o.append('<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>' % (x0 + label_w, yy, w, bar_h, color))
                    o.append('<text x="%.1f" y="%d">%d</text>' % (x0 + label_w + w + 4, yy + bar_h - 4, round(v)))
                else:
                    o.append('<text x="%d" y="%d" fill="#999">not measured</text>' % (x0 + label_w + 4, yy + bar_h - 4))
                yy += bar_h + gap
        y += row_h
    o.append("</svg>")
    return "\n".join(o) + "\n"


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write(res, outdir, name):
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, name + ".json"), "w") as fh:
        json.dump(res, fh, indent=1)
    with open(os.path.join(outdir, name + ".md"), "w") as fh:
        fh.write(markdown(res) + "\n")
    with open(os.path.join(outdir, name + ".svg"), "w") as fh:
        fh.write(svg(res))
