#!/usr/bin/env python3
"""Workloads of the GPU workload-class matrix (test/e2e/gpu/matrix.sh).

One subcommand per workload class; each runs until killed and prints one
line per step, flushed, in one write:

    @TAG step=N field=value ...

Step lines hold only exact, deterministic values (float.hex of floats, ints),
never times, so two runs of the same subcommand print the same line for the
same step, and a container restored from a checkpoint taken at step K must
print, for every step after K, exactly the line the original prints for it.
Other lines (@TAG ready ..., @TAG error ...) are informational.

    train    class 1 (and 4): deterministic MLP training with AdamW and GIB
             GiB of extra device memory of known content
             @train step=N loss=<hex> params=<hex> ballast=ok|BAD
    graph    class 2: a small decoder-only transformer (hand-written causal
             attention) decoding greedily, one CUDA-graph replay per token;
             the graph also advances a device-side position counter
             @graph step=N token=<id> pos=<n> logits=<hex>
    proc     class 3 (two of them in one container): its own chaotic tanh
             recurrence and MIB MiB of device memory, seeded by --seed
             @<tag> step=N sum=<hex> ballast=ok|BAD
    ipc      class 5: a parent allocates a CUDA tensor and sends it over a
             torch.multiprocessing (spawn) Queue to a child; each writes its
             own half every step and reads the other's
             @parent step=N own=ok|BAD sum=<int> child=alive|dead
             @child step=N own=ok|BAD sum=<int>
             (and every 10 steps `@TAG peer ...` with the other half's value)
    managed  class 6: at most 64 MiB of CUDA managed memory (CuPy's
             malloc_managed, else cuMemAllocManaged through ctypes and torch)
             @managed step=N sum=<int> expect=<int> count=<int> ok=1|0
    late     class 7: a CPU-only loop that initialises CUDA at the step named
             in the trigger file (LATE_TRIGGER, default /tmp/rcuda-late-init,
             written with `ctr task exec` after the checkpoint), then computes
             on the GPU
             @late step=N phase=cpu state=<hex64>
             @late step=N phase=cuda sum=<hex>

Environment: INTERVAL (seconds between steps, default 0.1), GIB (train,
default 1), MIB (proc 256, ipc 64, managed 32), MANAGED_IMPL
(auto|cupy|torch), MANAGED_HOST_TOUCH=1 (also read the managed memory from
the CPU each step), LATE_TRIGGER. MATRIX_FAKE=1 replaces torch and CUDA by
pure-Python stand-ins with the same processes, lines and triggers (the
matrix's DRY mode, and a quick check on any machine).

Determinism: torch.manual_seed, torch.use_deterministic_algorithms(True),
CUBLAS_WORKSPACE_CONFIG=:4096:8 (set here if the environment does not),
cuDNN and TF32 off.
"""
import os
import sys
import time

INTERVAL = float(os.environ.get("INTERVAL", "0.1"))
FAKE = os.environ.get("MATRIX_FAKE", "0") == "1"
M64 = (1 << 64) - 1


def emit(tag, text):
    """One line, one write, flushed: lines of two processes never interleave."""
    sys.stdout.write("@%s %s\n" % (tag, text))
    sys.stdout.flush()


def env_float(name, default):
    return float(os.environ.get(name, str(default)))


def splitmix64(x):
    """One step of splitmix64: (new state, output)."""
    x = (x + 0x9E3779B97F4A7C15) & M64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return x, z ^ (z >> 31)


class FakeRecurrence:
    """Pure-Python stand-in for a GPU computation: a small chaotic tanh map
    whose state lives only in memory (so a restore must bring it back)."""

    def __init__(self, seed, n=32):
        import math
        self.math = math
        s = seed & M64
        self.w = []
        for _ in range(n * n):
            s, z = splitmix64(s)
            self.w.append((z / 2.0 ** 64 - 0.5) * 3.0 / (n ** 0.5))
        self.x = []
        for _ in range(n):
            s, z = splitmix64(s)
            self.x.append(z / 2.0 ** 64 - 0.5)
        self.n = n

    def step(self):
        n, w, x, tanh = self.n, self.w, self.x, self.math.tanh
        self.x = [tanh(sum(w[i * n + j] * x[j] for j in range(n)) + 0.01) for i in range(n)]
        return sum(self.x)


class FakeBallast:
    """Host memory of known content standing in for device memory."""

    def __init__(self, mib):
        self.b = bytearray(int(mib * 2 ** 20))
        for i in range(0, len(self.b), 4096):
            self.b[i] = (i // 4096) & 0xFF

    def check(self):
        return "ok" if all(self.b[i] == (i // 4096) & 0xFF for i in range(0, len(self.b), 4096)) else "BAD"


def torch_setup(tag):
    """Imports torch with the settings that make its GPU arithmetic
    reproducible, or exits with an error line when CUDA is unavailable."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch
    if not torch.cuda.is_available():
        emit(tag, "error no CUDA device visible to torch %s" % torch.__version__)
        sys.exit(2)
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.enabled = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return torch


def device_desc(torch):
    return "device=%s torch=%s" % (torch.cuda.get_device_name(0).replace(" ", "_"), torch.__version__)


class Ballast:
    """Device memory of known content: chunk i of 4 MiB holds the value i."""
    CHUNK = 1 << 20  # float32 elements

    def __init__(self, torch, gib):
        self.torch = torch
        self.k = int(gib * 2 ** 30) // 4 // self.CHUNK
        self.t = None
        if self.k == 0:
            return
        ids = torch.arange(self.k, dtype=torch.float32, device="cuda")
        self.t = torch.empty(self.k, self.CHUNK, dtype=torch.float32, device="cuda")
        self.t.copy_(ids[:, None].expand(self.k, self.CHUNK))
        self.ids = ids[:, None]

    def check(self):
        if self.t is None:
            return "none"
        return "ok" if bool((self.t == self.ids).all().item()) else "BAD"


def sleep_step():
    time.sleep(INTERVAL)


# ---------------------------------------------------------------- class 1


def cmd_train(args):
    tag = "train"
    gib = env_float("GIB", 1)
    t0 = time.time()
    if FAKE:
        rec, ballast = FakeRecurrence(1), FakeBallast(min(gib, 1) * 8)
        emit(tag, "ready fake=1 pid=%d gib=%g setup_s=%.1f" % (os.getpid(), gib, time.time() - t0))
        step = 0
        while True:
            step += 1
            loss = rec.step()
            emit(tag, "step=%d loss=%s params=%s ballast=%s" % (step, loss.hex(), (loss * 3).hex(), ballast.check()))
            sleep_step()
    torch = torch_setup(tag)
    nn = torch.nn
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4096, 1024, generator=g).to(dev)
    y = torch.randn(4096, 16, generator=g).to(dev)
    model = nn.Sequential(
        nn.Linear(1024, 2048), nn.ReLU(),
        nn.Linear(2048, 2048), nn.ReLU(),
        nn.Linear(2048, 16)).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    ballast = Ballast(torch, gib)
    emit(tag, "ready %s pid=%d gib=%g setup_s=%.1f" % (device_desc(torch), os.getpid(), gib, time.time() - t0))
    step = 0
    while True:
        step += 1
        opt.zero_grad(set_to_none=True)
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        params = sum(p.detach().double().sum().item() for p in model.parameters())
        emit(tag, "step=%d loss=%s params=%s ballast=%s" % (step, loss.item().hex(), params.hex(), ballast.check()))
        sleep_step()


# ---------------------------------------------------------------- class 2


def build_gpt(torch, vocab, d, layers, heads, ctx, maxpos):
    nn = torch.nn
    F = torch.nn.functional

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = nn.LayerNorm(d)
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)
            self.ln2 = nn.LayerNorm(d)
            self.fc1 = nn.Linear(d, 4 * d)
            self.fc2 = nn.Linear(4 * d, d)

        def forward(self, x, mask):
            b, t, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
            q = q.view(b, t, heads, d // heads).transpose(1, 2)
            k = k.view(b, t, heads, d // heads).transpose(1, 2)
            v = v.view(b, t, heads, d // heads).transpose(1, 2)
            att = (q @ k.transpose(-2, -1)) * (1.0 / (d // heads) ** 0.5)
            att = att.masked_fill(mask, float("-inf")).softmax(dim=-1)
            y = (att @ v).transpose(1, 2).reshape(b, t, d)
            x = x + self.proj(y)
            return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(vocab, d)
            self.pos = nn.Embedding(maxpos, d)
            self.blocks = nn.ModuleList([Block() for _ in range(layers)])
            self.ln = nn.LayerNorm(d)
            self.head = nn.Linear(d, vocab, bias=False)
            self.register_buffer("mask", torch.triu(torch.ones(ctx, ctx, dtype=torch.bool), 1))

        def forward(self, tokens, positions):
            x = self.tok(tokens) + self.pos(positions)[None]
            for blk in self.blocks:
                x = blk(x, self.mask)
            return self.head(self.ln(x[:, -1]))

    return GPT()


def cmd_graph(args):
    tag = "graph"
    vocab, ctx, maxpos = 1024, 64, 4096
    t0 = time.time()
    if FAKE:
        rec = FakeRecurrence(2)
        emit(tag, "ready fake=1 pid=%d setup_s=%.1f" % (os.getpid(), time.time() - t0))
        step = 0
        while True:
            step += 1
            v = rec.step()
            emit(tag, "step=%d token=%d pos=%d logits=%s" % (step, int(abs(v) * 1e6) % vocab, step, v.hex()))
            sleep_step()
    torch = torch_setup(tag)
    dev = torch.device("cuda")
    model = build_gpt(torch, vocab, 256, 4, 4, ctx, maxpos).to(dev).eval()
    g = torch.Generator().manual_seed(2)
    prompt = torch.randint(0, vocab, (1, ctx), generator=g).to(dev)
    buf = prompt.clone()                                  # the context window, in place
    pos0 = torch.zeros((), dtype=torch.long, device=dev)  # device-side position counter
    ar = torch.arange(ctx, device=dev)
    out_logits = torch.zeros(1, vocab, device=dev)
    out_tok = torch.zeros(1, dtype=torch.long, device=dev)

    def decode_step():
        logits = model(buf, (pos0 + ar) % maxpos)
        nxt = logits.argmax(dim=-1)
        buf.copy_(torch.cat([buf[:, 1:], nxt[:, None]], dim=1))
        pos0.add_(1)
        out_logits.copy_(logits)
        out_tok.copy_(nxt)

    def reset():
        buf.copy_(prompt)
        pos0.zero_()

    with torch.no_grad():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                decode_step()
        torch.cuda.current_stream().wait_stream(side)
        reset()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            decode_step()
        reset()
        torch.cuda.synchronize()
        emit(tag, "ready %s pid=%d setup_s=%.1f" % (device_desc(torch), os.getpid(), time.time() - t0))
        step = 0
        while True:
            step += 1
            graph.replay()
            tok = int(out_tok.item())
            pos = int(pos0.item())
            cs = out_logits.double().sum().item()
            emit(tag, "step=%d token=%d pos=%d logits=%s" % (step, tok, pos, cs.hex()))
            sleep_step()


# ---------------------------------------------------------------- class 3


def cmd_proc(args):
    tag, seed = args.tag, args.seed
    mib = env_float("MIB", 256)
    t0 = time.time()
    if FAKE:
        rec, ballast = FakeRecurrence(seed), FakeBallast(min(mib, 8))
        emit(tag, "ready fake=1 pid=%d setup_s=%.1f" % (os.getpid(), time.time() - t0))
        step = 0
        while True:
            step += 1
            emit(tag, "step=%d sum=%s ballast=%s" % (step, rec.step().hex(), ballast.check()))
            sleep_step()
    torch = torch_setup(tag)
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(1024, 1024, generator=g) * (1.5 / 32)).to(dev)
    b = (torch.randn(1024, generator=g) * 0.1).to(dev)
    x = torch.randn(64, 1024, generator=g).to(dev)
    ballast = Ballast(torch, mib / 1024)
    emit(tag, "ready %s pid=%d mib=%g setup_s=%.1f" % (device_desc(torch), os.getpid(), mib, time.time() - t0))
    step = 0
    while True:
        step += 1
        x = torch.tanh(x @ w + b)
        emit(tag, "step=%d sum=%s ballast=%s" % (step, x.double().sum().item().hex(), ballast.check()))
        sleep_step()


# ---------------------------------------------------------------- class 5


def ipc_loop(tag, half, check_own, read_other, fill, alive=None):
    """Writes the value step into this process's half of the shared buffer,
    checks it and prints its checksum (deterministic); what the other
    process last wrote is read too, but printed on a separate line (when the
    other process wrote it depends on timing)."""
    step = 0
    while True:
        step += 1
        fill(half, step)
        ok, csum = check_own(half, step)
        extra = "" if alive is None else " child=%s" % ("alive" if alive() else "dead")
        emit(tag, "step=%d own=%s sum=%d%s" % (step, "ok" if ok else "BAD", csum, extra))
        if step % 10 == 0:
            emit(tag, "peer step=%d other_half=%s" % (step, read_other(1 - half)))
        sleep_step()


def ipc_child(q, r, fake_shared, fake_n):
    """The spawned child: imports the parent's tensor (CUDA IPC) and keeps
    writing its half (row 1) and reading the parent's (row 0)."""
    try:
        ipc_child_run(q, r, fake_shared, fake_n)
    except BaseException as e:  # noqa: BLE001 - report, then fail
        emit("child", "error %s: %s" % (type(e).__name__, str(e).replace("\n", " | ")[:2000]))
        raise


def ipc_child_run(q, r, fake_shared, fake_n):
    tag = "child"
    t0 = time.time()
    if fake_shared is not None:
        token = q.get(timeout=600)
        r.put("ready pid=%d" % os.getpid())
        emit(tag, "ready fake=1 pid=%d token=%s setup_s=%.1f" % (os.getpid(), token, time.time() - t0))
        n = fake_n

        def fill(h, v):
            for i in range(h * n, (h + 1) * n):
                fake_shared[i] = float(v)

        def check(h, v):
            vals = fake_shared[h * n:(h + 1) * n]
            return all(x == v for x in vals), int(sum(vals))

        ipc_loop(tag, 1, check, lambda h: "%d" % fake_shared[h * n], fill)
    torch = torch_setup(tag)
    t = q.get(timeout=600)
    r.put("ready pid=%d" % os.getpid())
    emit(tag, "ready %s pid=%d shape=%s setup_s=%.1f" % (device_desc(torch), os.getpid(), list(t.shape), time.time() - t0))

    def fill(h, v):
        t[h].fill_(float(v))
        torch.cuda.synchronize()

    def check(h, v):
        return bool((t[h] == v).all().item()), int(torch.sum(t[h], dtype=torch.float64).item())

    ipc_loop(tag, 1, check, lambda h: "%d" % int(t[h][0].item()), fill)


def cmd_ipc(args):
    tag = "parent"
    mib = env_float("MIB", 64)
    t0 = time.time()
    if FAKE:
        import multiprocessing as mp
        ctx = mp.get_context("spawn")
        n = 1024
        shared = ctx.Array("d", 2 * n, lock=False)
        q, r = ctx.Queue(), ctx.Queue()
        p = ctx.Process(target=ipc_child, args=(q, r, shared, n), daemon=True)
        p.start()
        q.put("token-%d" % os.getpid())
        msg = r.get(timeout=600)
        emit(tag, "ready fake=1 pid=%d child_%s setup_s=%.1f" % (os.getpid(), msg.replace(" ", "_"), time.time() - t0))

        def fill(h, v):
            for i in range(h * n, (h + 1) * n):
                shared[i] = float(v)

        def check(h, v):
            vals = shared[h * n:(h + 1) * n]
            return all(x == v for x in vals), int(sum(vals))

        ipc_loop(tag, 0, check, lambda h: "%d" % shared[h * n], fill, p.is_alive)
    torch = torch_setup(tag)
    import torch.multiprocessing as tmp
    ctx = tmp.get_context("spawn")
    t = torch.zeros(2, max(1, int(mib * 2 ** 18) // 2), device="cuda")
    q, r = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=ipc_child, args=(q, r, None, 0), daemon=True)
    p.start()
    q.put(t)  # torch.multiprocessing sends a CUDA IPC handle
    msg = r.get(timeout=600)
    emit(tag, "ready %s pid=%d child_%s mib=%g setup_s=%.1f" % (device_desc(torch), os.getpid(), msg.replace(" ", "_"), mib, time.time() - t0))

    def fill(h, v):
        t[h].fill_(float(v))
        torch.cuda.synchronize()

    def check(h, v):
        return bool((t[h] == v).all().item()), int(torch.sum(t[h], dtype=torch.float64).item())

    ipc_loop(tag, 0, check, lambda h: "%d" % int(t[h][0].item()), fill, p.is_alive)


# ---------------------------------------------------------------- class 6


class CudaArray:
    """A __cuda_array_interface__ view of raw device memory, for torch.as_tensor."""

    def __init__(self, ptr, n, typestr):
        self.__cuda_array_interface__ = {"shape": (n,), "typestr": typestr, "data": (ptr, False), "version": 2, "strides": None}


def managed_cupy(nbytes, n):
    import cupy as cp
    a = cp.ndarray((n,), dtype=cp.float32, memptr=cp.cuda.malloc_managed(nbytes))
    c = cp.ndarray((1,), dtype=cp.int64, memptr=cp.cuda.malloc_managed(8))
    c.fill(0)

    def step(v):
        a.fill(v)
        c[...] += 1
        cp.cuda.Device().synchronize()
        return int(float(a.sum(dtype=cp.float64))), int(c[0])

    desc = "impl=cupy cupy=%s ptr=0x%x" % (cp.__version__, a.data.ptr)
    return step, a.data.ptr, desc


def managed_torch(nbytes, n):
    import ctypes
    torch = torch_setup("managed")
    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    cuda = ctypes.CDLL("libcuda.so.1")
    ctx = ctypes.c_void_p()
    if cuda.cuCtxGetCurrent(ctypes.byref(ctx)) != 0 or not ctx.value:
        dev = ctypes.c_int()
        cuda.cuDeviceGet(ctypes.byref(dev), 0)
        cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev)
        cuda.cuCtxSetCurrent(ctx)
    cuda.cuMemAllocManaged.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t, ctypes.c_uint]
    ptrs = []
    for size in (nbytes, 8):
        p = ctypes.c_uint64()
        rc = cuda.cuMemAllocManaged(ctypes.byref(p), size, 1)  # CU_MEM_ATTACH_GLOBAL
        if rc != 0:
            raise RuntimeError("cuMemAllocManaged(%d) returned CUDA error %d" % (size, rc))
        ptrs.append(p.value)
    a = torch.as_tensor(CudaArray(ptrs[0], n, "<f4"), device="cuda")
    c = torch.as_tensor(CudaArray(ptrs[1], 1, "<i8"), device="cuda")
    c.zero_()

    def step(v):
        a.fill_(float(v))
        c.add_(1)
        s = torch.sum(a, dtype=torch.float64).item()
        return int(s), int(c.item())

    return step, ptrs[0], "impl=torch-ctypes %s ptr=0x%x" % (device_desc(torch), ptrs[0])


def cmd_managed(args):
    tag = "managed"
    mib = min(env_float("MIB", 32), 64)  # never more than 64 MiB of managed memory
    n = int(mib * 2 ** 18)
    nbytes = n * 4
    impl = os.environ.get("MANAGED_IMPL", "auto")
    touch = os.environ.get("MANAGED_HOST_TOUCH", "0") == "1"
    t0 = time.time()
    if FAKE:
        emit(tag, "ready fake=1 pid=%d mib=%g setup_s=%.1f" % (os.getpid(), mib, time.time() - t0))
        step, count = 0, 0
        while True:
            step += 1
            count += 1
            emit(tag, "step=%d sum=%d expect=%d count=%d ok=1" % (step, n * step, n * step, count))
            sleep_step()
    note = ""
    step_fn = None
    if impl in ("auto", "cupy"):
        try:
            step_fn, ptr, desc = managed_cupy(nbytes, n)
            step_fn(0)  # compiles CuPy's kernels now, not in the loop
        except Exception as e:  # noqa: BLE001 - any failure falls back to torch
            if impl == "cupy":
                raise
            step_fn = None
            note = " cupy_failed=%s" % type(e).__name__
    if step_fn is None:
        step_fn, ptr, desc = managed_torch(nbytes, n)
        step_fn(0)
    host = None
    if touch:
        import ctypes
        host = ctypes.c_float.from_address(ptr)
    emit(tag, "ready %s pid=%d mib=%g host_touch=%d%s setup_s=%.1f" % (desc, os.getpid(), mib, touch, note, time.time() - t0))
    # The warm-up call above counted once; the counter now equals the step.
    base = 1
    step = 0
    while True:
        step += 1
        s, count = step_fn(step)
        count -= base
        ok = s == n * step and count == step
        extra = ""
        if host is not None:
            hv = host.value
            ok = ok and hv == float(step)
            extra = " host=%d" % hv
        emit(tag, "step=%d sum=%d expect=%d count=%d%s ok=%d" % (step, s, n * step, count, extra, 1 if ok else 0))
        sleep_step()


# ---------------------------------------------------------------- class 7


def read_trigger(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def late_cuda(state):
    """Initialises CUDA (imports torch) and returns a step function whose
    results depend on the CPU phase's state."""
    if FAKE:
        time.sleep(1)
        rec = FakeRecurrence(state)
        return rec.step, "fake=1"
    torch = torch_setup("late")
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(state & 0x7FFFFFFFFFFFFFFF)
    w = (torch.randn(512, 512, generator=g) * (1.5 / 512 ** 0.5)).to(dev)
    x = [torch.randn(32, 512, generator=g).to(dev)]
    ballast = torch.ones(64 * 2 ** 18, device=dev)  # 64 MiB, so nvidia-smi sees the process

    def step():
        x[0] = torch.tanh(x[0] @ w + 0.01)
        return x[0].double().sum().item() + (ballast[0].item() - 1.0)

    return step, device_desc(torch)


def cmd_late(args):
    tag = "late"
    path = os.environ.get("LATE_TRIGGER", "/tmp/rcuda-late-init")
    emit(tag, "ready cpu-only pid=%d trigger=%s" % (os.getpid(), path))
    state = 7
    init_at = None
    cuda_step = None
    step = 0
    while True:
        step += 1
        if init_at is None:
            init_at = read_trigger(path)
            if init_at is not None:
                emit(tag, "trigger init_at=%d seen_at=%d%s" % (init_at, step, " LATE" if step > init_at else ""))
        if cuda_step is None and init_at is not None and step >= init_at:
            t0 = time.time()
            cuda_step, desc = late_cuda(state)
            emit(tag, "cuda-ready at=%d %s setup_s=%.1f" % (step, desc, time.time() - t0))
        state, z = splitmix64(state)
        if cuda_step is None:
            emit(tag, "step=%d phase=cpu state=%016x" % (step, z))
        else:
            emit(tag, "step=%d phase=cuda sum=%s" % (step, float(cuda_step()).hex()))
        sleep_step()


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("train", "graph", "ipc", "managed", "late"):
        sub.add_parser(name)
    p = sub.add_parser("proc")
    p.add_argument("--tag", required=True)
    p.add_argument("--seed", type=int, required=True)
    args = ap.parse_args(argv)
    try:
        return globals()["cmd_" + args.cmd](args) or 0
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away
        os._exit(141)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - report, then fail
        import traceback
        emit(args.cmd if args.cmd != "proc" else args.tag, "error %s: %s" % (type(e).__name__, str(e).replace("\n", " | ")[:2000]))
        traceback.print_exc()
        sys.stdout.flush()
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
