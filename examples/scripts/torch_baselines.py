#!/usr/bin/env python3
"""Raw baselines for `weightloader bench-gpu`, on the same machine and tensors, in the same run:
  - PyTorch's per-tensor NCCL broadcast of the checkpoint's tensors from GPU 0 to GPU 1 (process group formed
    beforehand, one warm-up round, best of 3);
  - a raw CUDA peer copy of the same number of bytes (one buffer, GPU 0 -> GPU 1, best of 5).
Usage: torch_baselines.py SPECS.json   (SPECS.json from `weightloader bench-gpu --write-specs`). Prints JSON."""
import json
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def broadcast(rank, specs, port, q):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=2, device_id=torch.device("cuda", rank))
    tensors = [torch.empty(shape, dtype=torch.bfloat16, device="cuda") for _, shape in specs]
    if rank == 0:
        for t in tensors:
            t.normal_()
    for t in tensors:  # warm-up: connections, buffers
        dist.broadcast(t, src=0)
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(3):
        dist.barrier()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for t in tensors:
            dist.broadcast(t, src=0)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    total = sum(t.numel() * t.element_size() for t in tensors)
    if rank == 1:
        q.put({"bytes": total, "seconds": best, "GBps": total / best / 1e9, "tensors": len(tensors)})
    dist.barrier()
    dist.destroy_process_group()


def peer_copy(total):
    src = torch.empty(total, dtype=torch.uint8, device="cuda:0")
    dst = torch.empty(total, dtype=torch.uint8, device="cuda:1")
    dst.copy_(src)
    torch.cuda.synchronize(0)
    torch.cuda.synchronize(1)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        dst.copy_(src)
        torch.cuda.synchronize(0)
        torch.cuda.synchronize(1)
        best = min(best, time.perf_counter() - t0)
    return {"bytes": total, "seconds": best, "GBps": total / best / 1e9}


if __name__ == "__main__":
    specs = json.load(open(sys.argv[1]))
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=broadcast, args=(r, specs, 29533, q)) for r in range(2)]
    for p in procs:
        p.start()
    result = {"torch": torch.__version__, "nccl": ".".join(map(str, torch.cuda.nccl.version()))}
    result["broadcast_per_tensor"] = q.get(timeout=600)
    for p in procs:
        p.join()
    result["peer_copy"] = peer_copy(result["broadcast_per_tensor"]["bytes"])
    print(json.dumps(result))
