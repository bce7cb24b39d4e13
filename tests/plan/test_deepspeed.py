"""The DeepSpeed settings of a plan, by what they do once DeepSpeed reads them.

Golden files pin the exact JSON, but a golden file rewritten after a change agrees with the change.
These tests state the intent independently: each setting is read back through DeepSpeed's own
parser (``DeepSpeedConfig``) and checked against what it is there for, with the numbers worked
out here (the model's hidden size in the recipe, DeepSpeed's loss scaler, the Trainer's optimizer
classes).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from launcher.plan.build import Plan, build_plan
from launcher.recipe.loader import load_recipe

GOLDEN_RECIPE = Path(__file__).resolve().parent / "golden" / "recipe.yaml"
HIDDEN = 256  # model.config.hidden_size of the golden recipe


class DataParallel:
    """Stand-in for DeepSpeed's ``mpu``: two data-parallel ranks."""

    def get_data_parallel_world_size(self) -> int:
        return 2


def zero_plan(stage: int, *extra: str) -> Plan:
    overrides = [
        "distributed.strategy=deepspeed",
        f"distributed.zero_stage={stage}",
        "distributed.processes_per_node=2",
        *extra,
    ]
    return build_plan(
        load_recipe(GOLDEN_RECIPE, overrides),
        Path("/runs/ds"),
        python="python",
        exists=lambda path: False,
    )


@pytest.fixture
def parse(monkeypatch: pytest.MonkeyPatch) -> Any:
    """DeepSpeed's own reading of a plan's DeepSpeed file (on 2 ranks)."""
    import deepspeed.runtime.config as ds_config

    # Without a process group DeepSpeedConfig cannot ask for the rank (see test_plan.py).
    monkeypatch.setattr(ds_config.dist, "get_rank", lambda *args, **kwargs: 0)

    def parsed(plan: Plan) -> Any:
        assert plan.deepspeed is not None
        return ds_config.DeepSpeedConfig(copy.deepcopy(plan.deepspeed), mpu=DataParallel())

    return parsed


# --- fp16: dynamic loss scaling -------------------------------------------------------------------


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_fp16_scales_the_loss_dynamically(
    stage: int, parse: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fp16 gradients under- and overflow: the loss scale must adapt (``loss_scale: 0`` means
    dynamic to DeepSpeed), starting at 2**16, skipping a step on overflow and halving only on the
    second overflow in a row (hysteresis 2), doubling again after 1000 steps without one, never
    below 1."""
    import deepspeed.comm
    import torch
    from deepspeed.runtime.fp16.loss_scaler import CreateLossScaler

    monkeypatch.setattr(deepspeed.comm, "get_rank", lambda *args, **kwargs: 0)
    fp16 = parse(zero_plan(stage, "training.precision=fp16")).float16_config
    assert fp16.enabled
    dynamic = fp16.loss_scale == 0  # DeepSpeedEngine.dynamic_loss_scale()
    assert dynamic, f"a static loss scale of {fp16.loss_scale}"
    # What DeepSpeed's fp16 optimizers build from the parsed section.
    scaler = CreateLossScaler(
        dtype=torch.half,
        static_loss_scale=fp16.loss_scale,
        dynamic_scaling=dynamic,
        dynamic_loss_args=fp16.dynamic_loss_scale_args(),
    )
    assert scaler.dynamic
    assert scaler.cur_scale == 65536
    assert scaler.min_scale == 1
    scaler.update_scale(True)  # first overflow: the step is skipped, the scale kept
    assert scaler.cur_scale == 65536
    scaler.update_scale(True)  # second overflow in a row: halved
    assert scaler.cur_scale == 32768
    for _ in range(990):
        scaler.update_scale(False)
    assert scaler.cur_scale == 32768, "raised before about 1000 steps without overflow"
    for _ in range(20):
        scaler.update_scale(False)
    assert scaler.cur_scale == 65536, "not raised after 1000 steps without overflow"
    scaler.update_scale(True)  # hysteresis is back to 2 after the raise
    assert scaler.cur_scale == 65536


def test_bf16_and_fp32_scale_nothing(parse: Any) -> None:
    for precision in ("bf16", "fp32"):
        parsed = parse(zero_plan(2, f"training.precision={precision}"))
        assert not parsed.float16_config.enabled
        assert parsed.bfloat16_config.enabled == (precision == "bf16")


# --- offload ---------------------------------------------------------------------------------------


def test_offloaded_states_live_in_pinned_cpu_memory(parse: Any) -> None:
    """Pinned (page-locked) host memory is what lets the optimizer states and parameters move
    between CPU and GPU asynchronously; without it every transfer stalls the step."""
    optimizer_only = parse(zero_plan(2, "distributed.offload_optimizer=cpu")).zero_config
    assert optimizer_only.offload_optimizer.device == "cpu"
    assert optimizer_only.offload_optimizer.pin_memory is True
    assert optimizer_only.offload_param is None
    both = parse(
        zero_plan(
            3,
            "distributed.offload_optimizer=cpu",
            "distributed.offload_parameters=cpu",
            "training.precision=fp32",
        )
    ).zero_config
    assert (both.offload_optimizer.device, both.offload_param.device) == ("cpu", "cpu")
    assert both.offload_optimizer.pin_memory is True
    assert both.offload_param.pin_memory is True


# --- buckets and communication ----------------------------------------------------------------------


@pytest.mark.parametrize("stage", [1, 2])
@pytest.mark.parametrize("hidden", [HIDDEN, 384])
def test_zero_1_and_2_buckets_follow_the_hidden_size(stage: int, hidden: int, parse: Any) -> None:
    """ZeRO-1/2 reduce and all-gather gradients and weights in buckets of hidden x hidden values
    (the HF integration's `auto` for reduce_bucket_size), not DeepSpeed's 5e8 default, which
    holds 2 GB of fp32 per bucket however small the model."""
    plan = zero_plan(stage, f"model.config.hidden_size={hidden}")
    zero = parse(plan).zero_config
    assert zero.reduce_bucket_size == hidden * hidden
    assert zero.allgather_bucket_size == hidden * hidden
    assert zero.reduce_scatter is True
    assert zero.contiguous_gradients is True
    # The same number as the HF integration fills into an `auto` reduce_bucket_size.
    assert hf_auto_values(plan, hidden)["reduce_bucket_size"] == hidden * hidden


@pytest.mark.parametrize("hidden", [HIDDEN, 384])
def test_zero_3_buckets_are_the_hf_integrations_auto_values(hidden: int, parse: Any) -> None:
    plan = zero_plan(3, f"model.config.hidden_size={hidden}")
    zero = parse(plan).zero_config
    auto = hf_auto_values(plan, hidden)
    assert zero.reduce_bucket_size == auto["reduce_bucket_size"] == hidden * hidden
    assert zero.prefetch_bucket_size == auto["stage3_prefetch_bucket_size"]
    assert zero.prefetch_bucket_size == int(0.9 * hidden * hidden)
    assert zero.param_persistence_threshold == auto["stage3_param_persistence_threshold"]
    assert zero.param_persistence_threshold == 10 * hidden


def hf_auto_values(plan: Plan, hidden: int) -> dict[str, Any]:
    """What transformers' DeepSpeed integration puts in place of `auto` for a model of this
    hidden size (``HfTrainerDeepSpeedConfig.trainer_config_finalize``)."""
    from types import SimpleNamespace

    from transformers.integrations import unset_hf_deepspeed_config
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    assert plan.deepspeed is not None
    config = copy.deepcopy(plan.deepspeed)
    keys = ["reduce_bucket_size"]
    if config["zero_optimization"]["stage"] == 3:
        keys += ["stage3_prefetch_bucket_size", "stage3_param_persistence_threshold"]
    for key in keys:
        config["zero_optimization"][key] = "auto"
    try:
        hf_config = HfTrainerDeepSpeedConfig(config)
        model = SimpleNamespace(config=SimpleNamespace(hidden_size=hidden))
        args = SimpleNamespace(get_warmup_steps=lambda steps: 0)
        hf_config.trainer_config_finalize(args, model, num_training_steps=20)
        return {key: hf_config.config["zero_optimization"][key] for key in keys}
    finally:
        unset_hf_deepspeed_config()


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_hub_model_of_unknown_size_gets_deepspeeds_own_defaults(stage: int, parse: Any) -> None:
    """A hub model's hidden size is unknown offline: the plan then writes what DeepSpeed would
    use with the key left out."""
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    plan = zero_plan(stage, "model.pretrained=org/some-model", "model.config={}")
    assert plan.parameters is None, "the size must be unknown for this test"
    zero = parse(plan).zero_config
    default = DeepSpeedZeroConfig(stage=stage)
    assert zero.reduce_bucket_size == default.reduce_bucket_size
    if stage < 3:
        assert zero.allgather_bucket_size == default.allgather_bucket_size
    else:
        assert zero.prefetch_bucket_size == default.prefetch_bucket_size
        assert zero.param_persistence_threshold == default.param_persistence_threshold


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_communication_overlaps_the_backward_pass(stage: int, parse: Any) -> None:
    """Gradient reduction runs while the backward pass goes on, at every stage (DeepSpeed does
    it by default under ZeRO-3 only)."""
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    assert parse(zero_plan(stage)).zero_config.overlap_comm is True
    if stage < 3:  # the plan's setting, not DeepSpeed's default, turns it on
        assert DeepSpeedZeroConfig(stage=stage).overlap_comm is False


# --- the Trainer's optimizer under ZeRO -------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd", "adafactor", "paged_adamw_8bit", "adamw_torch"])
def test_zero_accepts_the_trainers_own_optimizer(
    optimizer: str, parse: Any, configured_cpu_state: None
) -> None:
    """The Trainer builds the optimizer and DeepSpeed wraps it; DeepSpeed's engine refuses an
    optimizer outside its tested list (SGD, Adafactor, bitsandbytes' AdamW) unless the config
    allows untested optimizers, which every plan must, or such a recipe would fail at step 0."""
    from deepspeed.runtime.zero.utils import ZERO_SUPPORTED_OPTIMIZERS
    from transformers import Trainer, TrainingArguments

    plan = zero_plan(2, f"training.optimizer={optimizer}")
    args = TrainingArguments(output_dir="/runs/ds/checkpoints", optim=optimizer, use_cpu=True)
    optimizer_class, _ = Trainer.get_optimizer_cls_and_kwargs(args)
    tested = optimizer_class in ZERO_SUPPORTED_OPTIMIZERS
    assert tested == (optimizer == "adamw_torch"), optimizer_class
    assert parse(plan).zero_allow_untested_optimizer is True


@pytest.fixture(scope="module")
def configured_cpu_state() -> Any:
    from accelerate import PartialState

    PartialState(cpu=True)
    yield
    PartialState._reset_state()


# --- the recipe's own settings: distributed.deepspeed ---------------------------------------------


def test_recipe_settings_are_merged_and_deepspeed_reads_them(parse: Any) -> None:
    """Bucket sizes, NVMe offload of the optimizer (ZeRO-3) and a top-level switch, merged key by
    key into the generated JSON; DeepSpeed's own parser reads the result, batch unchanged."""
    plan = zero_plan(
        3,
        "distributed.deepspeed.zero_optimization.reduce_bucket_size=2e8",
        "distributed.deepspeed.zero_optimization.round_robin_gradients=true",
        "distributed.deepspeed.wall_clock_breakdown=true",
        "distributed.offload_optimizer=nvme",
        "distributed.nvme_path=/local/nvme",
        "training.optimizer=adamw_torch",
        "distributed.deepspeed.zero_optimization.offload_optimizer.buffer_count=8",
    )
    config = parse(plan)
    zero = config.zero_config
    assert zero.reduce_bucket_size == 200_000_000 and zero.round_robin_gradients is True
    assert config.wall_clock_breakdown is True
    assert zero.offload_optimizer.device == "nvme" and zero.offload_optimizer.buffer_count == 8
    assert str(zero.offload_optimizer.nvme_path) == "/local/nvme"
    assert zero.param_persistence_threshold == 10 * HIDDEN  # the generated values stay
    assert config.train_batch_size == plan.batch.global_batch
    assert "auto" not in str(plan.deepspeed)


@pytest.mark.parametrize(
    ("override", "key", "message"),
    [
        ("distributed.deepspeed.train_batch_size=64", "train_batch_size", "the recipe sets it"),
        ("distributed.deepspeed.zero_optimization.stage=3", "zero_optimization.stage",
         "`distributed.zero_stage`"),
        ("distributed.deepspeed.bf16.enabled=true", "bf16.enabled", "`training.precision`"),
        ("distributed.deepspeed.zero_optimization.overlap_comm=auto",
         "zero_optimization.overlap_comm", "`auto` is for the launcher"),
        ("distributed.deepspeed.zero_optimization.reduce_bucket_sise=1",
         "zero_optimization.reduce_bucket_sise", "did you mean `reduce_bucket_size`?"),
        ("distributed.deepspeed.wall_clock_breakdwn=true", "wall_clock_breakdwn",
         "did you mean `wall_clock_breakdown`?"),
        ("distributed.deepspeed.zero_optimization.offload_param.nvme_pth=/x",
         "zero_optimization.offload_param.nvme_pth", "did you mean `nvme_path`?"),
        ("distributed.deepspeed.amp={enabled: true}", "amp", "not a DeepSpeed setting"),
        ("distributed.deepspeed.zero_optimization=5", "zero_optimization",
         "5: DeepSpeed reads a mapping here"),
    ],
)  # fmt: skip
def test_settings_deepspeed_does_not_know_or_the_recipe_owns_are_refused(
    override: str, key: str, message: str
) -> None:
    from launcher.errors import RecipeError

    with pytest.raises(RecipeError) as raised:
        zero_plan(2, override)
    (problem,) = raised.value.problems
    assert (problem.source, problem.key) == ("command line", f"distributed.deepspeed.{key}")
    assert message in problem.message


def test_deepspeed_settings_under_ddp_are_refused() -> None:
    from launcher.errors import RecipeError

    with pytest.raises(RecipeError, match="need `distributed.strategy: deepspeed`"):
        load_recipe(GOLDEN_RECIPE, ["distributed.deepspeed.wall_clock_breakdown=true"])


def test_the_field_lists_read_from_source_are_the_libraries_own() -> None:
    """The names `training.extra` and `distributed.deepspeed` are checked against, read without
    importing the libraries, equal what the imported classes have."""
    import dataclasses

    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    from deepspeed.runtime.zero.offload_config import DeepSpeedZeroOffloadOptimizerConfig
    from transformers import TrainingArguments
    from trl import SFTConfig

    from launcher.library_fields import deepspeed_keys, trainer_fields

    def public(fields: Any) -> set[str]:
        return {f.name for f in fields if not f.name.startswith("_")}

    assert trainer_fields(False) == public(dataclasses.fields(TrainingArguments))
    assert trainer_fields(True) == public(dataclasses.fields(SFTConfig))
    keys = deepspeed_keys()
    assert keys is not None
    zero = DeepSpeedZeroConfig.model_fields
    assert set(zero) <= keys.zero
    assert {f.alias for f in zero.values() if f.alias} <= keys.zero
    assert set(DeepSpeedZeroOffloadOptimizerConfig.model_fields) <= keys.offload


def test_plain_annotations_admit_what_they_say() -> None:
    from launcher.library_fields import admits

    assert admits("float | None", 5) and admits("float | None", None)
    assert admits("float", True) is False and admits("int", 2.5) is False
    assert admits("Optional[list[str]]", ["a"]) and admits("bool", "yes") is False
    assert admits("IntervalStrategy | str", "steps") is None  # an enum: not checked here
