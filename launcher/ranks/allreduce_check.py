"""The rank program of ``launcher doctor``: one all-reduce across the ranks of a real launch.

Started by ``launcher doctor`` the way a run's ranks are started (an Accelerate config from
``plan/accelerate.py`` and ``python -m accelerate.commands.launch``), never by hand:

    python -m accelerate.commands.launch --config_file CONFIG.yaml \\
        -m launcher.ranks.allreduce_check RANKS RESULT.json

Each rank sets up its distributed state as a training rank does (``runtime.init_distributed``:
gloo on CPU, NCCL on GPUs), all-reduces ``rank + 1`` and checks the sum is ``n (n + 1) / 2``.
Rank 0 writes what it saw to RESULT.json; a rank that sees another world size than RANKS (the
one-process trap of ``--cpu``) says so and exits 1.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(
            "usage: python -m launcher.ranks.allreduce_check RANKS RESULT.json "
            "(started by launcher doctor)",
            file=sys.stderr,
        )
        return 2
    expected, result_file = int(argv[1]), Path(argv[2])
    rank = int(os.environ.get("RANK", "0"))
    try:
        result = all_reduce(expected)
    except Exception as error:  # reported by the doctor in one line, not as a traceback
        lines = str(error).strip().splitlines()
        print(f"[doctor] rank {rank}: {type(error).__name__}: {lines[0] if lines else ''}")
        return 1
    if result["rank"] == 0:
        result_file.write_text(json.dumps(result, indent=2) + "\n")
    print(f"[doctor] rank {result['rank']}: {result['message']}", flush=True)
    return 0 if result["ok"] else 1


def all_reduce(expected: int) -> dict:
    import torch
    import torch.distributed as dist

    from launcher.ranks.runtime import init_distributed

    state = init_distributed()
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    rank = dist.get_rank() if world > 1 else 0
    found = {"rank": rank, "world_size": world, "expected_world_size": expected}
    if world != expected:
        return {
            **found,
            "ok": False,
            "message": f"world size {world}, expected {expected}: the launch did not start "
            f"{expected} connected ranks",
        }
    backend = dist.get_backend()
    tensor = torch.tensor([float(rank + 1)], device=state.device)
    dist.barrier()  # time the all-reduce, not the other rank's start-up
    started = time.perf_counter()
    dist.all_reduce(tensor)
    if tensor.is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    total, want = tensor.item(), expected * (expected + 1) / 2
    ok = total == want
    message = (
        f"world size {world}, backend {backend}, device {state.device}, sum {total:g} "
        f"{'=' if ok else '!='} {expected}*{expected + 1}/2, {seconds * 1000:.1f} ms"
    )
    dist.destroy_process_group()
    return {
        **found,
        "ok": ok,
        "backend": backend,
        "device": str(state.device),
        "sum": total,
        "expected_sum": want,
        "seconds": seconds,
        "message": message,
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv))
