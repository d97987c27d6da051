#!/usr/bin/env python3
"""Deterministic PyTorch training loop for the GPU scenario (run.sh, phase 5).

A small MLP trains with SGD on fixed random data, deterministically (same
seeds, deterministic algorithms), and holds GIB GiB of extra device memory
filled with a known value. Every step prints one line whose numbers are
exact (float.hex):

    step=N loss=<hex> params=<hex> ballast=ok|BAD

Two runs print the same lines for the same steps, so a copy restored from a
checkpoint taken at step K must print, for every step after K, exactly what
the original prints for it. Environment: GIB (default 1), INTERVAL seconds
between steps (default 0.1).
"""
import os
import sys
import time

import torch


def main():
    gib = float(os.environ.get("GIB", "1"))
    interval = float(os.environ.get("INTERVAL", "0.1"))
    if not torch.cuda.is_available():
        print("no CUDA device", flush=True)
        return 2
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4096, 1024, generator=g).to(dev)
    y = torch.randn(4096, 16, generator=g).to(dev)
    model = torch.nn.Sequential(
        torch.nn.Linear(1024, 2048), torch.nn.ReLU(),
        torch.nn.Linear(2048, 2048), torch.nn.ReLU(),
        torch.nn.Linear(2048, 16)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    ballast = torch.full((int(gib * 2**30) // 4,), 1.2345, device=dev)
    print("ready device=%s torch=%s" % (torch.cuda.get_device_name(0), torch.__version__), flush=True)
    step = 0
    while True:
        step += 1
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        params = sum(p.detach().double().sum().item() for p in model.parameters())
        ok = bool((ballast == 1.2345).all().item())
        print("step=%d loss=%s params=%s ballast=%s" % (step, loss.item().hex(), params.hex(), "ok" if ok else "BAD"), flush=True)
        time.sleep(interval)


if __name__ == "__main__":
    sys.exit(main())
