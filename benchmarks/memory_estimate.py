"""Memory estimate: ``launcher plan``'s per-device model-state memory against the libraries' own.

    python benchmarks/memory_estimate.py            # every recipe model, world size and stage
    python benchmarks/memory_estimate.py --quick    # a few rows

Two tables. First, the plan's estimate for bf16 AdamW against DeepSpeed's own estimators
(``estimate_zero2_model_states_mem_needs`` and ``estimate_zero3_model_states_mem_needs``, the
functions behind the ``*_all_cold`` tables) for the shipped recipes' models, several world sizes,
ZeRO-2/3 and offload: the difference must be 0 bytes. ZeRO-0 and ZeRO-1 have no DeepSpeed
estimator; their rows show the plan's figure only. Second, bitsandbytes' optimizer states: the
plan's bytes against the states a real ``AdamW8bit`` / ``PagedAdamW8bit`` / ``PagedAdamW32bit``
allocates through the Trainer on CPU tensors, for a small Mistral whose tensors fall on both sides
of bitsandbytes' 4096-value threshold.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from common import REPO, command_line, machine_line, markdown_table

sys.path.insert(0, str(REPO))
from launcher.plan.memory import estimate_memory  # noqa: E402  (the checkout's launcher)
from launcher.plan.parameters import ParameterCount, count_parameters  # noqa: E402
from launcher.units import format_bytes  # noqa: E402

MODELS = {
    # name: (architecture, config)
    "sft-mistral (recipe)": (
        "mistral",
        {
            "hidden_size": 2048,
            "intermediate_size": 7168,
            "num_hidden_layers": 24,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "max_position_embeddings": 4096,
        },
    ),
    "Mistral-7B (sft-mistral-7b-zero3)": ("mistral", {}),
    "gpu_sft 1B": (
        "mistral",
        {
            "hidden_size": 2048,
            "intermediate_size": 5632,
            "num_hidden_layers": 16,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
        },
    ),
}
# (GPUs per node, nodes)
WORLDS = [(1, 1), (8, 1), (8, 4)]
SETUPS = [
    # (ZeRO stage, offload optimizer, offload parameters)
    (0, False, False),
    (1, False, False),
    (2, False, False),
    (2, True, False),
    (3, False, False),
    (3, True, False),
    (3, True, True),
]


def deepspeed_gpu_bytes(
    params: ParameterCount, stage: int, opt: bool, par: bool, per_node: int, nodes: int
) -> int | None:
    """DeepSpeed's own per-GPU estimate (bytes), or None where it has no estimator."""
    if stage == 2:
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

        return estimate_zero2_model_states_mem_needs(params.total, per_node, nodes, opt, 1.5)[1]
    if stage == 3:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

        return estimate_zero3_model_states_mem_needs(
            params.total, params.largest_layer, per_node, nodes, opt, par, True, 1.5
        )[1]
    return None


def deepspeed_table(quick: bool) -> tuple[list[tuple[str, ...]], int, int]:
    """The rows, how many were compared with DeepSpeed, and how many of those differ."""
    rows, compared, mismatches = [], 0, 0
    models = list(MODELS.items())[:2] if quick else list(MODELS.items())
    worlds = WORLDS[:2] if quick else WORLDS
    setups = [s for s in SETUPS if s[0] >= 2] if quick else SETUPS
    for name, (architecture, config) in models:
        params = count_parameters(architecture, config, "sft")
        for per_node, nodes in worlds:
            for stage, opt, par in setups:
                plan = estimate_memory(
                    params,
                    zero_stage=stage,
                    offload_optimizer=opt,
                    offload_parameters=par,
                    processes_per_node=per_node,
                    nodes=nodes,
                    precision="bf16",
                    optimizer="adamw_torch",
                    deepspeed=True,
                ).total
                theirs = deepspeed_gpu_bytes(params, stage, opt, par, per_node, nodes)
                compared += theirs is not None
                mismatches += theirs is not None and theirs != plan
                offload = "+".join(x for x, on in (("optimizer", opt), ("params", par)) if on)
                rows.append(
                    (
                        name,
                        f"{params.total:,}",
                        f"{per_node}x{nodes}",
                        str(stage),
                        offload or "none",
                        format_bytes(plan),
                        "n/a" if theirs is None else format_bytes(theirs),
                        "n/a" if theirs is None else f"{plan - theirs:+d}",
                    )
                )
    return rows, compared, mismatches


BNB_SCRIPT = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import bitsandbytes, torch
from transformers import MistralConfig, MistralForCausalLM, Trainer, TrainingArguments
from launcher.architectures import full_config
config = json.loads(sys.argv[2])
out = {}
for optim in ("adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "adamw_torch"):
    bitsandbytes.optim.GlobalOptimManager.get_instance().initialize()
    model = MistralForCausalLM(MistralConfig(**full_config("mistral", config)))
    args = TrainingArguments(output_dir=sys.argv[1], optim=optim, use_cpu=True, report_to=[])
    optimizer = Trainer(model=model, args=args).create_optimizer()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    tensors = {}
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value) and value.numel() > 1:  # not torch AdamW's step counter
                tensors[value.data_ptr()] = value.numel() * value.element_size()
    out[optim] = sum(tensors.values())
print("RESULTS " + json.dumps(out))
"""

BNB_MODEL = {
    "vocab_size": 1000,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def bitsandbytes_table() -> tuple[list[tuple[str, ...]], int]:
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        result = subprocess.run(
            [sys.executable, "-c", BNB_SCRIPT, scratch, json.dumps(BNB_MODEL)],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULTS ")]
    if not lines:
        raise SystemExit(f"bitsandbytes measurement failed:\n{result.stderr[-3000:]}")
    measured = json.loads(lines[0].removeprefix("RESULTS "))
    params = count_parameters("mistral", BNB_MODEL, "sft")
    rows, mismatches = [], 0
    for optimizer, real in measured.items():
        plan = estimate_memory(
            params,
            zero_stage=0,
            offload_optimizer=False,
            offload_parameters=False,
            processes_per_node=1,
            nodes=1,
            precision="fp32",  # no master copy: the optimizer states alone
            optimizer=optimizer,
        ).optimizer_states
        mismatches += plan != real
        naive = {"adamw_8bit": 2, "paged_adamw_8bit": 2}.get(optimizer, 8) * params.total
        rows.append(
            (
                optimizer,
                f"{params.total:,}",
                f"{plan:,}",
                f"{real:,}",
                f"{plan - real:+d}",
                f"{naive:,}",
                f"{real / params.total:.3f}",
            )
        )
    return rows, mismatches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows")
    args = parser.parse_args()
    print("# memory estimate: plan vs DeepSpeed's estimators and bitsandbytes' states\n")
    print(machine_line())
    print(f"command: {command_line()}\n")
    rows, compared, ds_mismatches = deepspeed_table(args.quick)
    headers = (
        "model",
        "parameters",
        "GPUs",
        "ZeRO",
        "offload",
        "plan / GPU",
        "DeepSpeed / GPU",
        "difference B",
    )
    print("bf16 AdamW, model states per GPU (additional_buffer_factor 1.5, zero_init):\n")
    print(markdown_table(headers, rows))
    bnb_rows, bnb_mismatches = bitsandbytes_table()
    print(
        f"\noptimizer states of a {BNB_MODEL['hidden_size']}-wide Mistral through the Trainer "
        "(fp32, CPU tensors):\n"
    )
    headers = (
        "optimizer",
        "parameters",
        "plan B",
        "measured B",
        "difference B",
        "flat 2 or 8 B/param",
        "measured B/param",
    )
    print(markdown_table(headers, bnb_rows))
    print(
        f"\nrows that differ: {ds_mismatches} of {compared} against DeepSpeed, "
        f"{bnb_mismatches} of {len(bnb_rows)} against bitsandbytes"
    )
    return 1 if ds_mismatches or bnb_mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
