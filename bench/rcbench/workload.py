"""The workload in the benchmark's containers (CPU: the e2e workload's
memhold; GPU: the GPU workload), its command line, and watching its output:
when it is ready, when it runs again after a checkpoint, and how long a
restored one takes to its first line and to the line proving its memory."""

import os
import re
import time

from .common import BenchError, mono, ms


class Workload:
    def __init__(self, ctx):
        self.ctx = ctx
        self.cpu = ctx.mode == "cpu"

    def args(self, mib):
        ctx = self.ctx
        if self.cpu:
            args = ["/workload", "memhold", "--mib", str(int(mib)), "--interval", "1h", "--heartbeat", "20ms"]
        else:
            args = ["/workload", "--gib", "%g" % (mib / 1024), "--interval", "100ms"]
            if ctx.dry:
                args.append("--host-memory")
        if ctx.args.rootfs_write:
            # Like most containers, write something to the root filesystem:
            # runsc's overlay then keeps a filestore file for it.
            args = ["/bin/sh", "-c", "echo bench > /rootfs-marker && exec " + " ".join(args)]
        return args

    def ready_re(self):
        return r"^beat n=2$" if self.cpu else r"^tick=2 "

    # In CPU mode, the first output after a restore is the heartbeat (the
    # process runs again); "memory usable" is the verification of all memory
    # the heartbeat triggers after the pause. In GPU mode every tick verifies
    # all device memory: both are the first tick.
    def first_re(self):
        return r"^beat " if self.cpu else r"^tick="

    def memory_re(self):
        return r"^ok sum=" if self.cpu else r"^tick="

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

    def wait_ready(self, path):
        """Waits until a freshly started workload logging to path is ready."""
        self.wait_count(path, self.ready_re(), 1, 600)

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
            if self.cpu:
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
