"""The results of a run: every sample, the notes (what was skipped and why)
and the errors, and results.json, which bench/report.py turns into the
markdown table and the plot."""

import json

SCHEMA = 1


class Results:
    def __init__(self, log):
        self.log = log
        self.samples = []
        self.notes = []
        self.errors = []

    def record(self, size, op, path, variant="default", it=0, **fields):
        """Adds a sample: size is (label, MiB), op what was timed (checkpoint,
        restore, start, rss, ...), path who did it (raw, shim-rpc, ...)."""
        s = {"size": size[0], "mib": size[1], "op": op, "path": path, "variant": variant, "iter": it}
        s.update(fields)
        self.samples.append(s)
        shown = " ".join("%s=%s" % (k, v) for k, v in fields.items() if not isinstance(v, (dict, list)))
        self.log("RESULT %s %s %s/%s #%d %s" % (size[0], op, path, variant, it, shown))
        return s

    def error(self, what, e):
        self.errors.append({"what": what, "error": str(e)[-1000:]})
        self.log("ERROR %s: %s" % (what, e))

    def note(self, msg):
        self.notes.append(msg)


def save(result, path):
    """Writes the result document (see Bench.run) as results.json."""
    with open(path, "w") as fh:
        json.dump(result, fh, indent=1)
