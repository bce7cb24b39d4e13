"""Checkpoint checksums: what the manifest's xxh3 costs next to the save it vouches for.

    python benchmarks/checksum_cost.py            # a 0.5B-parameter model, 5 rounds
    python benchmarks/checksum_cost.py --quick    # a small one, 1 round, a check that it works

A checkpoint is written the way the Trainer writes one (``save_pretrained`` to safetensors, the
AdamW states with ``torch.save``, RNG and trainer state); then the launcher's manifest is written
twice, without checksums (sizes only, as before) and with them (``checkpointing.verify_checksums``,
the default). The cost is the difference, as a share of the save itself, measured in the same
round (median of interleaved rounds). Goal (issue 14): under 5%. The resume check reads the same
bytes back: the same throughput from the page cache, the disk's read speed from cold storage.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, command_line, machine_line, markdown_table

sys.path.insert(0, str(REPO))
from launcher.checkpoints import write_manifest  # noqa: E402  (the checkout's launcher)

GOAL = 0.05


def build(hidden: int, layers: int):  # type: ignore[no-untyped-def]
    """A Mistral-architecture model and an AdamW that has stepped once (its states exist)."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=32000,
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=max(hidden // 128, 1),
        num_key_value_heads=max(hidden // 512, 1),
    )
    model = MistralForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    return model, optimizer


def save(model, optimizer, folder: Path) -> None:  # type: ignore[no-untyped-def]
    """What a Trainer checkpoint holds, written as the Trainer writes it."""
    import torch

    model.save_pretrained(folder)
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    torch.save({"python": 0, "cpu": torch.get_rng_state()}, folder / "rng_state.pth")
    (folder / "trainer_state.json").write_text('{"global_step": 1}')


def round_once(model, optimizer, root: Path) -> tuple[float, float, float, int]:  # type: ignore[no-untyped-def]
    folder = root / "checkpoint-1"
    start = time.perf_counter()
    save(model, optimizer, folder)
    saved = time.perf_counter()
    write_manifest(folder, 1, world_size=1, checksums=False)
    sizes = time.perf_counter()
    write_manifest(folder, 1, world_size=1, checksums=True)
    summed = time.perf_counter()
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    shutil.rmtree(folder)
    return saved - start, sizes - saved, summed - sizes, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small model, one round")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to save (default: a temp dir)"
    )
    options = parser.parse_args()
    hidden, layers, rounds = (256, 2, 1) if options.quick else (1024, 24, 5)
    model, optimizer = build(hidden, layers)
    parameters = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory(dir=options.dir) as root:
        results = [round_once(model, optimizer, Path(root)) for _ in range(rounds)]
    save_s = statistics.median(r[0] for r in results)
    sizes_s = statistics.median(r[1] for r in results)
    checksum_s = statistics.median(r[2] for r in results)
    size = results[0][3]
    share = (checksum_s - sizes_s) / save_s
    print(machine_line())
    print(f"command: {command_line()}")
    print(f"model: {parameters:,} parameters; checkpoint {size / 2**30:.2f} GiB; {rounds} rounds\n")
    print(
        markdown_table(
            ["step", "median s", "GiB/s", "share of the save"],
            [
                ["save (Trainer files)", f"{save_s:.3f}", f"{size / 2**30 / save_s:.2f}", "1.000"],
                ["manifest, sizes only", f"{sizes_s:.4f}", "", f"{sizes_s / save_s:.4f}"],
                [
                    "manifest with xxh3 checksums",
                    f"{checksum_s:.3f}",
                    f"{size / 2**30 / checksum_s:.2f}",
                    f"{checksum_s / save_s:.4f}",
                ],
            ],
        )
    )
    verdict = "meets" if share < GOAL else "misses"
    print(f"\nchecksums cost {share:.1%} of the save ({verdict} the goal of under {GOAL:.0%})")


if __name__ == "__main__":
    main()
