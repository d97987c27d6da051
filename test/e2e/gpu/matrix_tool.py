#!/usr/bin/env python3
"""Host-side helper of the GPU workload-class matrix (matrix.sh); standard
library only, so it runs with any python3 on the host.

    steps LOG                          the step lines so far, per tag (JSON)
    wait LOG [--min-step N | --after STEPS --by K] [--ntags K] [--timeout S] [--t0-ms T]
                                       waits until every tag reached the step; JSON
    compare --ref A --new B (--count N | --through S) [--lo STEPS --hi STEPS]
            [--pre-steps STEPS --pre-log P] [--timeout S]
                                       compares B's step lines with A's (JSON)
    meta DIR                           summary of DIR/runsc-cuda.json (JSON)
    report --res DIR --out DIR [--events FILE] [--gpu DIR] [--dry MODE] [--started-ms T]
                                       matrix.json, matrix.md and a summary

Workload lines are `@TAG step=N ...` (matrix_workload.py) or `count=N`
(workload-cpu counter; a second counter starts at 1000000 and is tag
count.b). Lines are compared as whole strings: they hold only exact values.
"""
import argparse
import json
import os
import re
import sys
import time

STEP_RE = re.compile(r"^@(?P<tag>[A-Za-z0-9_.-]+) step=(?P<step>\d+)(?: |$)")
COUNT_RE = re.compile(r"^count=(?P<step>\d+)\s*$")
ERROR_RE = re.compile(r"^@(?P<tag>[A-Za-z0-9_.-]+) error (?P<msg>.*)$")
BAD_RE = re.compile(r"=BAD\b| ok=0\b")


def now_ms():
    return int(time.time() * 1000)


def parse_log(path):
    """Returns ({tag: {step: line}}, [error lines], [other lines])."""
    steps, errors, other = {}, [], []
    try:
        with open(path, errors="replace") as f:
            data = f.read()
    except OSError:
        return steps, errors, other
    # Only complete lines: the writer may be in the middle of one.
    for line in data.split("\n")[:-1]:
        line = line.rstrip("\r")
        m = STEP_RE.match(line)
        if m:
            tag, step = m.group("tag"), int(m.group("step"))
        else:
            m = COUNT_RE.match(line)
            if not m:
                if ERROR_RE.match(line):
                    errors.append(line)
                elif line.strip():
                    other.append(line)
                continue
            step = int(m.group("step"))
            tag = "count" if step < 1000000 else "count.b"
        steps.setdefault(tag, {}).setdefault(step, line)
    return steps, errors, other


def summary(steps):
    return {t: {"first": min(s), "last": max(s), "n": len(s)} for t, s in sorted(steps.items())}


def load_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def out(obj):
    print(json.dumps(obj, sort_keys=True))


# ---------------------------------------------------------------- steps / wait


def cmd_steps(a):
    steps, errors, _ = parse_log(a.log)
    out({"steps": summary(steps), "errors": errors[-3:]})


def cmd_wait(a):
    t0 = a.t0_ms or now_ms()
    base = load_json(a.after, {}).get("steps", {}) if a.after else {}
    deadline = time.time() + a.timeout
    while True:
        steps, errors, other = parse_log(a.log)
        summ = summary(steps)
        if base:
            targets = {t: v["last"] + a.by for t, v in base.items()}
        else:
            targets = {t: a.min_step for t in summ}
        ok = len(summ) >= a.ntags and all(t in summ and summ[t]["last"] >= n for t, n in targets.items())
        if ok or errors or time.time() > deadline:
            res = {"ok": ok, "ms": now_ms() - t0, "steps": summ}
            if errors:
                res["errors"] = errors[-3:]
            if not ok and other:
                res["tail"] = other[-5:]
            if base:
                bad = [line for t, v in base.items() for s, line in sorted(steps.get(t, {}).items())
                       if s > v["last"] and BAD_RE.search(line)]
                res["after_lines"] = sum(1 for t, v in base.items() for s in steps.get(t, {}) if s > v["last"])
                res["after_bad"] = len(bad)
                if bad:
                    res["bad_example"] = bad[0]
            out(res)
            return 0 if ok else 1
        time.sleep(0.02)


# ---------------------------------------------------------------- compare


def cmd_compare(a):
    deadline = time.time() + a.timeout
    lo = load_json(a.lo, {}).get("steps", {}) if a.lo else {}
    hi = load_json(a.hi, {}).get("steps", {}) if a.hi else {}
    pre = load_json(a.pre_steps, {}).get("steps", {}) if a.pre_steps else {}
    while True:
        ref, ref_err, _ = parse_log(a.ref)
        new, new_err, new_other = parse_log(a.new)
        tags = sorted(set(ref) | set(pre) | set(lo))
        ranges = {}
        for t in tags:
            if t not in new:
                continue
            first = min(new[t])
            last = first + a.count - 1 if a.count else a.through
            ranges[t] = (first, last)
        complete = tags and all(
            t in ranges and all(s in new[t] and s in ref.get(t, {}) for s in range(ranges[t][0], ranges[t][1] + 1))
            for t in tags)
        if complete or ref_err or new_err or time.time() > deadline:
            break
        time.sleep(0.05)
    res = {"tags": {}, "compared": 0, "mismatched": 0, "missing": 0, "examples": []}
    if ref_err:
        res["ref_errors"] = ref_err[-2:]
    if new_err:
        res["new_errors"] = new_err[-2:]
    if not complete and new_other:
        res["new_tail"] = new_other[-5:]
    for t in tags:
        info = {}
        res["tags"][t] = info
        if t not in ranges:
            info["absent"] = True
            res["missing"] += 1
            continue
        first, last = ranges[t]
        info.update({"first": first, "last": last})
        cmp_n = mism = miss = 0
        for s in range(first, last + 1):
            r, n = ref.get(t, {}).get(s), new[t].get(s)
            if r is None or n is None:
                miss += 1
                continue
            cmp_n += 1
            if r != n:
                mism += 1
                if len(res["examples"]) < 3:
                    res["examples"].append({"tag": t, "step": s, "ref": r, "new": n})
        info.update({"compared": cmp_n, "mismatched": mism, "missing": miss})
        if lo or hi:
            lo_last = lo.get(t, {}).get("last")
            hi_last = hi.get(t, {}).get("last")
            info["window"] = [lo_last, hi_last]
            info["in_window"] = (lo_last is None or first > lo_last) and (hi_last is None or first <= hi_last + 1)
        if pre:
            p_last = pre.get(t, {}).get("last")
            info["pre_last"] = p_last
            info["continues"] = p_last is not None and first == p_last + 1
        older = [s for s in new[t] if s < first]
        if older:
            info["older_steps"] = len(older)
        res["compared"] += cmp_n
        res["mismatched"] += mism
        res["missing"] += miss
    if a.pre_log:
        # Cross-process determinism: the checkpointed original's own steps
        # before the checkpoint against the reference's.
        p, _, _ = parse_log(a.pre_log)
        pc = pm = 0
        for t, lines in p.items():
            for s, line in lines.items():
                r = ref.get(t, {}).get(s)
                if r is None:
                    continue
                pc += 1
                if r != line:
                    pm += 1
                    if len(res["examples"]) < 3:
                        res["examples"].append({"tag": t, "step": s, "ref": r, "pre": line})
        res["pre_compared"], res["pre_mismatched"] = pc, pm
    res["equal"] = bool(tags) and res["compared"] > 0 and res["mismatched"] == 0 and res["missing"] == 0
    if lo or hi:
        res["in_window"] = all(i.get("in_window", False) for i in res["tags"].values())
    if pre:
        res["continues"] = all(i.get("continues", False) for i in res["tags"].values())
    out(res)
    return 0 if res["equal"] else 1


# ---------------------------------------------------------------- meta


def cmd_meta(a):
    path = os.path.join(a.dir, "runsc-cuda.json")
    files = []
    try:
        files = sorted(os.listdir(a.dir))
    except OSError:
        pass
    size = 0
    for f in files:
        try:
            size += os.path.getsize(os.path.join(a.dir, f))
        except OSError:
            pass
    res = {"dir_exists": os.path.isdir(a.dir), "files": len(files), "bytes": size, "present": os.path.isfile(path)}
    m = load_json(path)
    if isinstance(m, dict):
        g = m.get("gpu") or {}
        res.update({
            "leave_running": m.get("leave_running"),
            "shim_version": m.get("shim_version"),
            "timings_ms": m.get("timings_ms"),
            "gpu_used_memory_bytes": g.get("used_memory_bytes"),
            "gpu_released_after_exit": g.get("released_after_exit"),
            "gpu_restore_verified": g.get("restore_verified"),
            "gpu_source": g.get("source"),
            "driver": g.get("driver_version"),
        })
        res = {k: v for k, v in res.items() if v is not None}
    out(res)


# ---------------------------------------------------------------- report

EVENT_RE = re.compile(r"^(?P<ts>.*?) (?P<ns>\S+) (?P<topic>/\S+)(?: (?P<body>.*))?$")


def parse_events(path):
    evs = []
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return evs
    for line in lines:
        m = EVENT_RE.match(line)
        if not m:
            continue
        body = m.group("body") or ""
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            payload = {"raw": body}
        # The shim's own topics carry containerd's ContainerUpdate: the
        # container's id and the fact's fields as labels (non-strings as JSON).
        if m.group("topic").startswith("/runsc-cuda/") and isinstance(payload, dict) and "labels" in payload:
            fact = {"container_id": payload.get("id")}
            for k, v in (payload.get("labels") or {}).items():
                try:
                    fact[k] = json.loads(v)
                except ValueError:
                    fact[k] = v
            payload = fact
        if not isinstance(payload, dict):
            payload = {"value": payload}
        evs.append({"ts": m.group("ts"), "ts_ms": ts_ms(m.group("ts")), "topic": m.group("topic"), "payload": payload})
    return evs


def ts_ms(ts):
    """ctr's timestamps (2026-12-01 09:16:24.072972611 +0000 UTC) in epoch ms."""
    import calendar
    m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.(\d+))? \+0000", ts)
    if not m:
        return None
    secs = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
    return secs * 1000 + int((m.group(2) or "0")[:3].ljust(3, "0"))


def events_for(evs, names, removed):
    """The events of the case's containers; those after the matrix began
    removing a container are marked (they are the removal's)."""
    res = []
    for e in evs:
        p = e["payload"]
        cid = p.get("container_id") or p.get("id")
        if cid in names:
            r = num(removed.get(cid))
            e = dict(e, removal=bool(r and e.get("ts_ms") and e["ts_ms"] >= r))
            res.append(e)
    return res


def load_facts(path):
    facts = {}
    try:
        with open(path, errors="replace") as f:
            for line in f:
                line = line.rstrip("\n")
                if "\t" not in line:
                    continue
                kind, key, val = (line.split("\t", 2) + [""])[:3]
                if kind == "j":
                    try:
                        val = json.loads(val)
                    except ValueError:
                        val = {"unparsed": val}
                facts[key] = val
    except OSError:
        pass
    return facts


def num(v, default=None):
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def first_line(s, n=300):
    s = (s or "").strip()
    lines = [x.strip() for x in re.split(r"\n| \| ", s) if "DEPRECATION" not in x and x.strip()]
    s = " | ".join(lines)
    return s if len(s) <= n else s[: n - 3] + "..."


CASES = [
    # case, class, title, expectation key on a GPU
    ("1-leave-running", 1, "PyTorch training (AdamW), leave-running checkpoint, clone", "roundtrip"),
    ("1-exit", 1, "PyTorch training, exit checkpoint, restore vs twin", "exit"),
    ("2-leave-running", 2, "transformer decoding with CUDA-graph replay", "roundtrip"),
    ("3-leave-running", 3, "two CUDA processes in one container", "roundtrip"),
    ("3-exit", 3, "two CUDA processes, exit checkpoint, restore vs twin", "exit"),
    ("4-clones", 4, "class 1's image restored as 3 concurrent clones", "clones"),
    ("5-ipc", 5, "CUDA IPC (torch.multiprocessing spawn child)", "ipc-stopped"),
    ("5-ipc-annotated", 5, "CUDA IPC with annotation io.containerd.runsc-cuda.v1.cuda-ipc=true", "refused-kept-ipc"),
    ("6-managed", 6, "CUDA managed memory (<= 64 MiB)", "refused-kept-managed"),
    ("7-late-init", 7, "CUDA initialised only after the checkpoint", "roundtrip"),
]

EXPECTED_TEXT = {
    "roundtrip": "leave-running checkpoint succeeds, original keeps running, clone bit-exact",
    "exit": "exit checkpoint succeeds, task stops, restore continues bit-exact (vs twin)",
    "clones": "3 concurrent clones beside the running original, each bit-exact",
    "ipc-stopped": "checkpoint fails naming CUDA IPC; container stopped (137), reason on /runsc-cuda/exit; no image",
    "refused-kept-ipc": "checkpoint refused (CUDA IPC) before any toggle; workload keeps running",
    "refused-kept-managed": "checkpoint fails naming managed memory; rolled back, workload keeps running correctly",
    "dry-any": "DRY: no CUDA; recorded only",
}


def exit_status_of(evs):
    st, reason = None, None
    for e in evs:
        p = e["payload"]
        if e["topic"] == "/runsc-cuda/exit":
            st = p.get("exit_status", st)
            reason = p.get("reason", reason)
        elif e["topic"] == "/tasks/exit" and (p.get("id") in (None, p.get("container_id"))):
            if st is None:
                st = p.get("exit_status", 0)
    return st, reason


def judge(case, expect, f, evs):
    """Returns (verdict, observed text, details dict)."""
    if not f:
        return "skipped", "not run", {}
    if f.get("skipped"):
        return "skipped", f["skipped"], {}
    d = {}
    if f.get("started") != "1":
        return "unexpected", "workload did not start: " + first_line(f.get("start_error"), 400), d
    ck_rc = num(f.get("ckpt_rc"))
    err = first_line(f.get("ckpt_out"), 600)
    meta = f.get("meta") if isinstance(f.get("meta"), dict) else {}
    image = bool(meta.get("present"))
    # The task's state right after the checkpoint call and a while later
    # (a failed checkpoint may stop the container asynchronously).
    status = f.get("status_later") or f.get("status_after", "?")
    prog = f.get("progress") if isinstance(f.get("progress"), dict) else {}
    progressed = bool(prog.get("ok"))
    after_bad = prog.get("after_bad", 0)
    cmp_ = f.get("compare") if isinstance(f.get("compare"), dict) else {}
    rst = f.get("restore") if isinstance(f.get("restore"), dict) else {}
    d.update({k: f[k] for k in ("ckpt_ms", "gpu_state", "trigger", "status_later") if k in f})
    for k in ("warm", "first"):
        if isinstance(f.get(k), dict) and f[k].get("ms") is not None:
            d[k + "_ms"] = f[k]["ms"]
    if rst:
        d["restore_ms"] = rst.get("restore_ms")
    d["image"] = {k: meta.get(k) for k in ("files", "bytes", "gpu_used_memory_bytes", "gpu_released_after_exit", "gpu_restore_verified") if k in meta}
    status_txt, reason = exit_status_of(evs)
    if status_txt is not None:
        d["exit_status"] = status_txt
    if reason:
        d["exit_reason"] = first_line(reason, 300)
    topics = sorted({e["topic"] for e in evs if e["topic"].startswith("/runsc-cuda/")})
    if topics:
        d["shim_topics"] = topics

    ck_desc = "checkpoint ok" if ck_rc == 0 else "checkpoint FAILED (rc %s): %s" % (ck_rc, err)
    img_desc = "image written" if image else ("no image" if not meta.get("files") else "no runsc-cuda.json but %d file(s) left" % meta["files"])
    task_desc = "task %s" % status
    if f.get("status_later") and f.get("status_after") and f["status_after"] != f["status_later"]:
        task_desc = "task %s right after, %s later" % (f["status_after"], f["status_later"])
    if progressed:
        task_desc += ", kept printing (%d lines after%s)" % (prog.get("after_lines", 0), ", %d BAD" % after_bad if after_bad else "")
    elif status == "RUNNING":
        task_desc += ", but no new steps"

    def cmp_desc(c, what="clone"):
        if not c:
            return "%s not compared" % what
        if c.get("equal"):
            s = "%s bit-exact for %d step(s)" % (what, c.get("compared", 0))
        else:
            s = "%s DIFFERS: %d mismatched, %d missing of %d" % (what, c.get("mismatched", 0), c.get("missing", 0),
                                                                 c.get("compared", 0) + c.get("missing", 0))
            ex = c.get("examples") or []
            if ex:
                s += " (first at %s step %s)" % (ex[0].get("tag"), ex[0].get("step"))
            errs = c.get("new_errors") or c.get("ref_errors")
            if errs:
                s += "; error: " + first_line(errs[-1], 200)
        if c.get("in_window") is False:
            s += "; first step outside the checkpoint window"
        if c.get("continues") is False:
            s += "; does NOT continue where the original stopped"
        if c.get("pre_mismatched"):
            s += "; original and twin differ before the checkpoint (%d)" % c["pre_mismatched"]
        return s

    def restore_desc():
        if f.get("restore_rc") is None:
            return None
        if num(f.get("restore_rc")) != 0:
            return "restore FAILED: " + first_line(f.get("restore_out"), 300)
        return None

    if expect in ("roundtrip", "dry-any") or (expect == "exit"):
        parts = [ck_desc]
        if ck_rc == 0:
            parts.append(img_desc)
        parts.append(task_desc)
        rd = restore_desc()
        if rd:
            parts.append(rd)
        elif image:
            parts.append(cmp_desc(cmp_, "restored" if expect == "exit" else "clone"))
        if case.startswith("7") and isinstance(cmp_, dict):
            cuda = f.get("cuda_lines")
            if cuda is not None:
                parts.append("%s CUDA-phase step(s) compared" % cuda)
        observed = "; ".join(parts)
        if expect == "exit":
            good = ck_rc == 0 and image and status == "STOPPED" and num(f.get("restore_rc")) == 0 and cmp_.get("equal") \
                and cmp_.get("continues") and not cmp_.get("pre_mismatched")
            if good:
                return "as expected", "round-trip bit-exact (exit checkpoint; restored continues, equal to twin)", d
        else:
            good = ck_rc == 0 and image and progressed and not after_bad and num(f.get("restore_rc")) == 0 \
                and cmp_.get("equal") and cmp_.get("in_window", True)
            if case.startswith("7") and "cuda_lines" in f:  # (DRY=counter has no CUDA phase)
                good = good and num(f.get("cuda_lines"), 0) > 0
            if good:
                return "as expected", "round-trip bit-exact", d
        if expect == "dry-any":
            return "recorded", observed, d
        return "unexpected", observed, d

    if expect == "clones":
        if ck_rc is None:
            return "skipped", "class 1's checkpoint did not run", d
        clones = []
        for n in ("m4a", "m4b", "m4c"):
            if n + ".restore_rc" not in f:
                continue
            first = f.get(n + ".first") if isinstance(f.get(n + ".first"), dict) else {}
            clones.append({"name": n, "restore_rc": num(f.get(n + ".restore_rc")), "restore": f.get(n + ".restore"),
                           "restore_out": f.get(n + ".restore_out"), "first_ms": first.get("ms"),
                           "compare": f.get(n + ".compare") if isinstance(f.get(n + ".compare"), dict) else {}})
        d["clones"] = clones
        parts, good = [], bool(clones)
        for c in clones:
            ok = c.get("restore_rc") == 0 and (c.get("compare") or {}).get("equal")
            good = good and ok
            if c.get("restore_rc") != 0:
                parts.append("%s: restore FAILED: %s" % (c.get("name"), first_line(c.get("restore_out"), 200)))
            else:
                parts.append("%s: %s, first step after %s ms" % (c.get("name"), cmp_desc(c.get("compare")), c.get("first_ms")))
        good = good and progressed
        if not progressed:
            parts.append("original stopped printing")
        if good:
            return "as expected", "3 concurrent clones bit-exact beside the running original", d
        return "unexpected", "; ".join(parts) or "no clones restored", d

    # Refusals.
    want = {"ipc-stopped": "CUDA IPC", "refused-kept-ipc": "CUDA IPC", "refused-kept-managed": "managed memory"}[expect]
    names_it = want.lower() in (f.get("ckpt_out") or "").lower()
    parts = [ck_desc if ck_rc != 0 else "checkpoint SUCCEEDED"]
    if ck_rc != 0:
        parts.append("error %s '%s'" % ("names" if names_it else "does NOT name", want))
    parts.append(img_desc)
    parts.append(task_desc)
    if status_txt is not None:
        parts.append("exit status %s" % status_txt)
    if reason:
        parts.append("reason on /runsc-cuda/exit: %s" % first_line(reason, 200))
    elif expect == "ipc-stopped":
        parts.append("no /runsc-cuda/exit event")
    if f.get("gpu_state"):
        parts.append("CUDA state after: %s" % f["gpu_state"])
    if ck_rc == 0 and image:
        rd = restore_desc()
        parts.append(rd or cmp_desc(cmp_))
    observed = "; ".join(parts)
    if expect == "ipc-stopped":
        good = ck_rc != 0 and names_it and not image and status == "STOPPED" and num(status_txt) == 137 and bool(reason)
        if good:
            return "as expected", "refused; workload stopped with reason (exit 137): " + first_line(reason, 200), d
    else:
        good = ck_rc != 0 and names_it and not image and status == "RUNNING" and progressed and not after_bad
        # The toggle tool's view of each process after the refusal, where it
        # could be asked: all must be running (nothing left toggled).
        states = [x.split("=", 1)[1] for x in (f.get("gpu_state") or "").split() if "=" in x]
        known = [x for x in states if x in ("running", "locked", "checkpointed", "failed")]
        if known and any(x != "running" for x in known):
            good = False
        if good:
            return "as expected", "refused; workload kept running%s" % (" with correct checksums" if expect.endswith("managed") else ""), d
    return "unexpected", observed, d


def md_escape(s):
    return str(s).replace("|", "\\|").replace("\n", " ")


def cmd_report(a):
    evs = parse_events(a.events) if a.events else []
    rows = []
    for case, cls, title, expect in CASES:
        f = load_facts(os.path.join(a.res, case + ".tsv"))
        if a.dry != "0":
            expect = "dry-any" if case.startswith(("5", "6")) else expect
        names = f.get("names") if isinstance(f.get("names"), list) else []
        removed = {k.split(".", 1)[1]: v for k, v in f.items() if k.startswith("removed.")}
        cev = events_for(evs, set(names), removed)
        verdict, observed, details = judge(case, expect, f, [e for e in cev if not e["removal"]])
        if f.get("interrupted") and verdict != "as expected":
            verdict, observed = "interrupted", "%s; so far: %s" % (f["interrupted"], observed)
        shim_events = [{"topic": e["topic"], "payload": e["payload"], "at_removal": e["removal"]}
                       for e in cev if e["topic"].startswith("/runsc-cuda/")]
        task_exits = [dict(e["payload"], at_removal=e["removal"]) for e in cev if e["topic"] == "/tasks/exit"]
        row = {"case": case, "class": cls, "title": title, "expected": EXPECTED_TEXT[expect],
               "verdict": verdict, "observed": observed, "details": details,
               "containers": names, "shim_events": shim_events, "task_exits": task_exits,
               "facts": {k: v for k, v in f.items() if k != "names" and not k.startswith("removed.")}}
        rows.append(row)
    gpu = []
    if a.gpu and os.path.isdir(a.gpu):
        for name in sorted(os.listdir(a.gpu)):
            g = load_json(os.path.join(a.gpu, name))
            if g:
                gpu.append(g)
    counts = {}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    env = load_json(os.path.join(a.res, "env.json"), {})
    doc = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "dry": a.dry, "env": env,
           "wall_s": round((now_ms() - a.started_ms) / 1000.0, 1) if a.started_ms else None,
           "verdicts": counts, "cases": rows, "gpu_memory": gpu}
    with open(os.path.join(a.out, "matrix.json"), "w") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)
    lines = ["# GPU workload-class matrix", ""]
    lines.append("%s; %s; dry=%s; wall %s s; %s" % (doc["date"], env.get("gpu", "no GPU"), a.dry, doc["wall_s"],
                                                  ", ".join("%s: %d" % kv for kv in sorted(counts.items()))))
    if env:
        lines += ["", "runsc %s; containerd %s; shim %s; torch python %s" % (env.get("runsc"), env.get("containerd"),
                                                                           env.get("shim"), env.get("torch_py"))]
    lines += ["", "| class | case | expected | observed | verdict | checkpoint ms | restore ms | restore to first step ms |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d = r["details"]
        first = d.get("first_ms", "")
        if r["case"] == "4-clones" and d.get("clones"):
            first = "/".join(str(c.get("first_ms", "?")) for c in d["clones"])
        rest = d.get("restore_ms", "")
        if r["case"] == "4-clones" and d.get("clones"):
            rest = "/".join(str((c.get("restore") or {}).get("restore_ms", "?")) for c in d["clones"])
        lines.append("| %s | %s | %s | %s | **%s** | %s | %s | %s |" % (
            r["class"], r["case"], md_escape(r["expected"]), md_escape(r["observed"]), r["verdict"],
            d.get("ckpt_ms", "") if r["case"] != "4-clones" else "", rest if rest is not None else "", first))
    lines += ["", "## Details", ""]
    for r in rows:
        d = dict(r["details"])
        d.pop("clones", None)
        lines.append("- **%s** (%s): %s" % (r["case"], r["title"], md_escape(json.dumps(d, sort_keys=True))))
        for e in r["shim_events"]:
            lines.append("  - event %s %s%s" % (e["topic"], md_escape(json.dumps(e["payload"], sort_keys=True))[:500],
                                                 " (at removal)" if e["at_removal"] else ""))
        for x in r["task_exits"]:
            lines.append("  - /tasks/exit %s status %s%s" % (x.get("container_id"), x.get("exit_status", 0),
                                                           " (removal)" if x["at_removal"] else ""))
    if gpu:
        lines += ["", "## GPU memory (nvidia-smi)", "", "| when | used MiB (GPU 0) | compute apps (container: MiB) |", "|---|---|---|"]
        for g in gpu:
            apps = ", ".join("%s: %s" % (x.get("container") or x.get("pid"), x.get("mib")) for x in g.get("apps", []))
            lines.append("| %s | %s | %s |" % (md_escape(g.get("label")), g.get("used_mib"), md_escape(apps)))
    with open(os.path.join(a.out, "matrix.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    w = max(len(r["case"]) for r in rows)
    print("%-*s  %-12s %8s %8s %8s  %s" % (w, "case", "verdict", "ckpt_ms", "rest_ms", "first_ms", "observed"))
    for r in rows:
        d = r["details"]
        print("%-*s  %-12s %8s %8s %8s  %s" % (w, r["case"], r["verdict"], d.get("ckpt_ms", "-"), d.get("restore_ms", "-") or "-",
                                               d.get("first_ms", "-"), r["observed"][:400]))
    return 0 if all(r["verdict"] in ("as expected", "skipped", "recorded") for r in rows) else 1


# ---------------------------------------------------------------- gpu snapshot


def cmd_gpusnap(a):
    """Turns nvidia-smi output (files written by matrix.sh) into one JSON
    record, naming each compute app's container by its sandbox's cmdline."""
    used = None
    try:
        with open(a.used) as f:
            used = num(f.read().strip().splitlines()[0].strip())
    except (OSError, IndexError):
        pass
    apps = []
    try:
        with open(a.apps) as f:
            for line in f:
                parts = [p.strip() for p in line.split(",")]
                if len(parts) < 2 or not parts[0].isdigit():
                    continue
                pid, mib = int(parts[0]), num(parts[1])
                apps.append({"pid": pid, "mib": mib, "container": container_of(pid, a.names.split(","))})
    except OSError:
        pass
    out({"label": a.label, "t_ms": now_ms(), "used_mib": used, "apps": apps})


def container_of(pid, names):
    """The container whose sandbox process pid is: runsc's sandbox process
    (runsc-sandbox ... boot ... ID) ends its command line with the sandbox id."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            args = [x.decode(errors="replace") for x in f.read().split(b"\0") if x]
    except OSError:
        return None
    for x in reversed(args):
        if x in names:
            return x
    return None


def cmd_selftest(a):
    """Checks judge() on made-up facts of each expected outcome, and that
    near misses are reported as unexpected."""
    ok_cmp = {"equal": True, "compared": 10, "in_window": True}
    prog = {"ok": True, "after_lines": 5, "after_bad": 0}
    base = {"started": "1", "ckpt_ms": "100", "progress": prog}
    exit137 = [{"topic": "/runsc-cuda/exit", "payload": {"container_id": "x", "exit_status": 137, "reason": "CUDA IPC: restore failed"}}]
    ipc_err = "ctr: checkpoint failed: the container uses CUDA IPC (CUDA_ERROR_INVALID_VALUE)"
    cases = [
        ("1-leave-running", "roundtrip", dict(base, ckpt_rc="0", meta={"present": True}, status_after="RUNNING", restore_rc="0", compare=ok_cmp), [], "as expected"),
        ("1-leave-running", "roundtrip", dict(base, ckpt_rc="0", meta={"present": True}, status_after="RUNNING", restore_rc="0",
                                              compare={"equal": False, "compared": 10, "mismatched": 1, "examples": [{"tag": "train", "step": 9}]}), [], "unexpected"),
        ("1-leave-running", "roundtrip", dict(base, ckpt_rc="1", ckpt_out="boom", meta={"present": False}, status_after="RUNNING"), [], "unexpected"),
        ("1-exit", "exit", dict(base, ckpt_rc="0", meta={"present": True}, status_after="STOPPED", restore_rc="0",
                                compare=dict(ok_cmp, continues=True, pre_mismatched=0)), [], "as expected"),
        ("1-exit", "exit", dict(base, ckpt_rc="0", meta={"present": True}, status_after="STOPPED", restore_rc="0",
                                compare=dict(ok_cmp, continues=False)), [], "unexpected"),
        ("5-ipc", "ipc-stopped", dict(base, ckpt_rc="1", ckpt_out=ipc_err, meta={"present": False}, status_after="STOPPED",
                                      progress={"ok": False}), exit137, "as expected"),
        ("5-ipc", "ipc-stopped", dict(base, ckpt_rc="1", ckpt_out=ipc_err, meta={"present": False}, status_after="PAUSED",
                                      progress={"ok": False}), [], "unexpected"),
        ("5-ipc", "ipc-stopped", dict(base, ckpt_rc="0", meta={"present": True}, status_after="RUNNING", restore_rc="0", compare=ok_cmp), [], "unexpected"),
        ("5-ipc-annotated", "refused-kept-ipc", dict(base, ckpt_rc="1", ckpt_out="refused: CUDA IPC annotation", meta={"present": False},
                                                     status_after="RUNNING"), [], "as expected"),
        ("6-managed", "refused-kept-managed", dict(base, ckpt_rc="1", ckpt_out="uses managed memory: CUDA_ERROR_NOT_SUPPORTED",
                                                    meta={"present": False}, status_after="RUNNING"), [], "as expected"),
        ("6-managed", "refused-kept-managed", dict(base, ckpt_rc="1", ckpt_out="uses managed memory", meta={"present": False},
                                                    status_after="RUNNING", progress=dict(prog, after_bad=2)), [], "unexpected"),
        ("6-managed", "refused-kept-managed", dict(base, ckpt_rc="1", ckpt_out="uses managed memory", meta={"present": False},
                                                    status_after="RUNNING", gpu_state="1=checkpointed"), [], "unexpected"),
        ("5-ipc-annotated", "refused-kept-ipc", dict(base, ckpt_rc="1", ckpt_out="CUDA IPC", meta={"present": False},
                                                     status_after="RUNNING", gpu_state="1=running 40=running"), [], "as expected"),
        ("7-late-init", "roundtrip", dict(base, ckpt_rc="0", meta={"present": True}, status_after="RUNNING", restore_rc="0",
                                          compare=ok_cmp, cuda_lines="0"), [], "unexpected"),
        ("4-clones", "clones", dict(base, ckpt_rc="0", **{"m4a.restore_rc": "0", "m4a.compare": ok_cmp, "m4b.restore_rc": "0",
                                                          "m4b.compare": ok_cmp, "m4c.restore_rc": "1", "m4c.restore_out": "x"}), [], "unexpected"),
        ("4-clones", "clones", dict(base, ckpt_rc="0", **{n + k: v for n in ("m4a", "m4b", "m4c") for k, v in
                                                          ((".restore_rc", "0"), (".compare", ok_cmp))}), [], "as expected"),
        ("2-leave-running", "roundtrip", {}, [], "skipped"),
    ]
    bad = 0
    for case, expect, facts, evs, want in cases:
        verdict, observed, _ = judge(case, expect, facts, evs)
        flag = "ok " if verdict == want else "BAD"
        bad += verdict != want
        print("%s %-16s %-22s %-12s %s" % (flag, case, expect, verdict, observed[:150]))
    print("%d of %d wrong" % (bad, len(cases)))
    return 1 if bad else 0


def main(argv):
    ap = argparse.ArgumentParser(description="GPU matrix helper")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("steps")
    p.add_argument("log")
    p = sub.add_parser("wait")
    p.add_argument("log")
    p.add_argument("--min-step", type=int, default=1)
    p.add_argument("--after")
    p.add_argument("--by", type=int, default=3)
    p.add_argument("--ntags", type=int, default=1)
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--t0-ms", type=int, default=0)
    p = sub.add_parser("compare")
    p.add_argument("--ref", required=True)
    p.add_argument("--new", required=True)
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--through", type=int, default=0)
    p.add_argument("--lo")
    p.add_argument("--hi")
    p.add_argument("--pre-steps")
    p.add_argument("--pre-log")
    p.add_argument("--timeout", type=float, default=60)
    p = sub.add_parser("meta")
    p.add_argument("dir")
    p = sub.add_parser("report")
    p.add_argument("--res", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--events")
    p.add_argument("--gpu")
    p.add_argument("--dry", default="0")
    p.add_argument("--started-ms", type=int, default=0)
    sub.add_parser("selftest")
    p = sub.add_parser("gpusnap")
    p.add_argument("--label", required=True)
    p.add_argument("--used", required=True)
    p.add_argument("--apps", required=True)
    p.add_argument("--names", default="")
    a = ap.parse_args(argv)
    if a.cmd == "compare" and not (a.count or a.through):
        ap.error("compare needs --count or --through")
    return {"steps": cmd_steps, "wait": cmd_wait, "compare": cmd_compare, "meta": cmd_meta,
            "report": cmd_report, "gpusnap": cmd_gpusnap, "selftest": cmd_selftest}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
