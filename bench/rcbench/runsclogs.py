"""runsc's own logs (the debug-log directory the shim and raw runsc get,
one subdirectory per container): how long a runsc command ran, and the
sandbox's save and load timings, for raw and shim containers alike."""

import glob
import os
import re

from .common import go_duration_ms


def cmd_ms(ctx, cid, verb):
    """How long runsc's `verb` for cid ran, from its own log (first to last
    line; the process start before its first line is not included)."""
    total = None
    for f in sorted(glob.glob(ctx.w("runsc-logs", cid, "runsc.log.*.%s.txt" % verb))):
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


BREAKDOWN = {
    "save": [("cuda_ms", r"cuda-checkpoint on \d+ processes took \[([^\]]+)\]"),
             ("kernel_save_ms", r"Kernel save took \[([^\]]+)\]"),
             ("memory_save_ms", r"Memory files save took \[([^\]]+)\]"),
             ("overall_save_ms", r"Overall save took \[([^\]]+)\]")],
    "load": [("kernel_load_ms", r"Kernel load took \[([^\]]+)\]"),
             ("memory_load_ms", r"Memory files load took \[([^\]]+)\]"),
             ("overall_load_ms", r"Overall load took \[([^\]]+)\]")],
}


def breakdown(ctx, cid, since, kind):
    """The sandbox's own save/load timings (runsc's info log) for cid, from
    log files written after since."""
    out = {}
    for f in sorted(glob.glob(ctx.w("runsc-logs", cid, "*"))):
        try:
            if os.path.getmtime(f) < since:
                continue
            with open(f, errors="replace") as fh:
                text = fh.read()
        except OSError:
            continue
        for key, pat in BREAKDOWN[kind]:
            for m in re.finditer(pat, text):
                out[key] = go_duration_ms(m.group(1))
    return out
