"""The plan: exact files for fixed recipes (golden), invariants, the libraries' own parsers, smoke.

Golden files live in tests/plan/golden/<case>/, one per file of ``Plan.files()``. After an intended
change, regenerate them and read the diff before committing:

    .venv/bin/pytest tests/plan/test_plan.py -k golden --update-golden
    git diff tests/plan/golden
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import RECIPES, Golden

from launcher.architectures import TINY_CONFIGS, tiny_config
from launcher.plan.batch import BatchNumbers
from launcher.plan.build import Plan, build_plan
from launcher.recipe.loader import load_recipe
from launcher.recipe.schema import Recipe
from launcher.units import format_bytes

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"
GOLDEN_RECIPE = GOLDEN / "recipe.yaml"
GOLDEN_RUN_DIR = Path("/runs/golden")
SHIPPED = sorted((REPO / "recipes").glob("*.yaml"))


def deepspeed(stage: int, processes: int = 2, *extra: str) -> list[str]:
    return [
        "distributed.strategy=deepspeed",
        f"distributed.zero_stage={stage}",
        f"distributed.processes_per_node={processes}",
        *extra,
    ]


# Each case: the golden recipe plus these overrides. Precision and world size vary across cases
# so that each of their branches shows up in some golden file.
CASES: dict[str, list[str]] = {
    "ddp-1rank": [],
    "ddp-2ranks": ["distributed.processes_per_node=2", "training.precision=fp16"],
    "zero0": deepspeed(0),
    "zero1": deepspeed(1, 2, "training.precision=fp16"),
    "zero2": deepspeed(2),
    "zero3": deepspeed(3, 4),
    "zero2-offload-optimizer": deepspeed(2, 2, "distributed.offload_optimizer=cpu"),
    # Several nodes AND several ranks per node, each node keeping its own checkpoints.
    "zero3-2nodes-node-local": deepspeed(
        3,
        2,
        "distributed.nodes=2",
        "checkpointing.use_node_local_storage=true",
        "checkpointing.node_local_dir=/local/{node}/checkpoints",
    ),
    "zero3-offload-both": deepspeed(
        3,
        2,
        "distributed.offload_optimizer=cpu",
        "distributed.offload_parameters=cpu",
        "training.precision=fp32",
    ),
}
DEEPSPEED_CASES = [
    name for name, overrides in CASES.items() if "distributed.strategy=deepspeed" in overrides
]


def case_plan(case: str, run_dir: Path = GOLDEN_RUN_DIR) -> Plan:
    overrides = CASES[case]
    recipe = load_recipe(GOLDEN_RECIPE, overrides)
    return build_plan(
        recipe,
        run_dir,
        source="tests/plan/golden/recipe.yaml",
        overrides=tuple(overrides),
        python="python",
    )


def write_plan(plan: Plan) -> None:
    for path, text in plan.files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture(params=list(CASES))
def case(request: pytest.FixtureRequest) -> str:
    return request.param


# --- golden files --------------------------------------------------------------------------------


def test_golden_files(case: str, golden: Golden) -> None:
    files = {path.name: text for path, text in case_plan(case).files().items()}
    folder = GOLDEN / case
    existing = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    stale = set(existing) - set(files)
    assert not stale, f"{folder}: {sorted(stale)} are no file of the plan any more; delete them"
    golden.check({folder / name: text for name, text in files.items()}, f"the {case} plan")


def test_golden_plan_has_every_file() -> None:
    names = {path.name for path in case_plan("zero2").files()}
    assert names == {
        "recipe.yaml",
        "contract.json",
        "accelerate.yaml",
        "deepspeed.json",
        "trainer_args.json",
        "command.sh",
        "summary.txt",
    }
    assert {path.name for path in case_plan("ddp-1rank").files()} == names - {"deepspeed.json"}
    assert {path.parent for path in case_plan("zero2").files()} == {GOLDEN_RUN_DIR / "plan"}


# --- invariants, checked in code for every case --------------------------------------------------


def walk(value: Any) -> Iterator[Any]:
    """Every key and value of a nested JSON-like structure."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)
    else:
        yield value


def test_batch_numbers_agree_everywhere(case: str) -> None:
    plan = case_plan(case)
    batch, args, contract = plan.batch, plan.trainer_args, plan.contract
    nodes, per_node = plan.recipe.distributed.nodes, plan.recipe.distributed.processes_per_node
    world = nodes * per_node
    expected = (
        plan.recipe.training.per_device_batch_size
        * plan.recipe.training.gradient_accumulation_steps
        * world
    )
    assert batch.world_size == world
    assert batch.global_batch == expected
    assert (args["per_device_train_batch_size"], args["gradient_accumulation_steps"]) == (
        batch.micro_batch,
        batch.accumulation,
    )
    assert json.loads(plan.files()[plan.layout.contract_file]) == {
        "run_dir": str(GOLDEN_RUN_DIR),
        "task": "sft",
        "world_size": world,
        "nodes": nodes,
        "processes_per_node": per_node,
        "per_device_batch_size": 2,
        "gradient_accumulation_steps": 4,
        "global_batch_size": expected,
        "max_length": 128,
        "smoke": False,
        "checkpoints_dir": args["output_dir"],
        "checkpoints_on_each_node": plan.recipe.checkpointing.use_node_local_storage,
    }
    assert contract.global_batch_size == expected
    if plan.deepspeed is not None:
        assert plan.deepspeed["train_batch_size"] == expected
        assert plan.deepspeed["train_micro_batch_size_per_gpu"] == batch.micro_batch
        assert plan.deepspeed["gradient_accumulation_steps"] == batch.accumulation


def test_deepspeed_config_is_concrete_and_minimal(case: str) -> None:
    plan = case_plan(case)
    dist = plan.recipe.distributed
    if dist.strategy == "ddp":
        assert plan.deepspeed is None
        assert plan.layout.deepspeed_file not in plan.files()
        assert plan.trainer_args["deepspeed"] is None
        return
    config = plan.deepspeed
    assert config is not None
    assert "auto" not in list(walk(config))
    assert json.loads(plan.files()[plan.layout.deepspeed_file]) == config
    zero = config["zero_optimization"]
    assert zero["stage"] == dist.zero_stage
    stage3_keys = {key for key in zero if key.startswith("stage3_") or key == "sub_group_size"}
    if dist.zero_stage == 3:
        assert stage3_keys == {
            "stage3_prefetch_bucket_size",
            "stage3_param_persistence_threshold",
            "stage3_max_live_parameters",
            "stage3_max_reuse_distance",
            "stage3_gather_16bit_weights_on_model_save",
            "sub_group_size",
        }
        # The HF integration's `auto` formulas, from the model's hidden size (256).
        assert zero["stage3_prefetch_bucket_size"] == int(0.9 * 256 * 256)
        assert zero["stage3_param_persistence_threshold"] == 10 * 256
    else:
        assert stage3_keys == set()
    if dist.zero_stage > 0:
        assert zero["reduce_bucket_size"] == 256 * 256
    else:
        assert set(zero) == {"stage"}
    assert ("offload_optimizer" in zero) == (dist.offload_optimizer != "none")
    assert ("offload_param" in zero) == (dist.offload_parameters != "none")
    if "offload_optimizer" in zero:
        assert zero["offload_optimizer"]["device"] == "cpu"
    if "offload_param" in zero:
        assert zero["offload_param"]["device"] == "cpu"
    precision = plan.recipe.training.precision
    assert config["bf16"]["enabled"] == (precision == "bf16") == plan.trainer_args["bf16"]
    assert config["fp16"]["enabled"] == (precision == "fp16") == plan.trainer_args["fp16"]
    assert config["gradient_clipping"] == plan.recipe.training.max_grad_norm == 0.5
    assert "optimizer" not in config and "scheduler" not in config
    assert plan.trainer_args["deepspeed"] == str(plan.layout.deepspeed_file)


def test_accelerate_config(case: str) -> None:
    plan = case_plan(case)
    config = plan.accelerate
    assert config["num_processes"] == plan.batch.world_size
    assert config["num_machines"] == plan.batch.nodes
    assert config["use_cpu"] is False
    if plan.recipe.distributed.strategy == "deepspeed":
        assert config["distributed_type"] == "DEEPSPEED"
        assert "mixed_precision" not in config
        assert config["deepspeed_config"] == {
            "deepspeed_config_file": str(plan.layout.deepspeed_file),
            "zero3_init_flag": plan.recipe.distributed.zero_stage == 3,
            "deepspeed_multinode_launcher": "standard",
        }
    else:
        assert config["distributed_type"] == ("MULTI_GPU" if plan.batch.world_size > 1 else "NO")
        expected = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[plan.recipe.training.precision]
        assert config["mixed_precision"] == expected
        assert "deepspeed_config" not in config
    assert yaml.safe_load(plan.files()[plan.layout.accelerate_file]) == config


def test_command_runs_the_rank_entry_through_accelerate(case: str) -> None:
    plan = case_plan(case)
    assert plan.command == (
        "python",
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "/runs/golden/plan/accelerate.yaml",
        "-m",
        "launcher.ranks.entry",
        "/runs/golden",
    )
    assert plan.files()[plan.layout.command_file] == (
        "#!/usr/bin/env bash\nset -euo pipefail\nexec python -m accelerate.commands.launch "
        "--config_file /runs/golden/plan/accelerate.yaml -m launcher.ranks.entry /runs/golden\n"
    )


def test_command_quotes_odd_paths(tmp_path: Path) -> None:
    run_dir = tmp_path / "it's a $HOME dir"
    plan = build_plan(load_recipe(GOLDEN_RECIPE), run_dir, python="/opt/py thon/bin/python")
    script = plan.files()[plan.layout.command_file]
    assert "exec '/opt/py thon/bin/python' -m accelerate.commands.launch --config_file " in script
    assert "'\"'\"'" in script  # the quote in "it's" survives shell quoting
    assert plan.command[-1] == str(run_dir)


def test_recipe_file_round_trips(case: str) -> None:
    plan = case_plan(case)
    stored = yaml.safe_load(plan.files()[plan.layout.recipe_file])
    assert Recipe.model_validate(stored) == plan.recipe


def test_summary(case: str) -> None:
    plan = case_plan(case)
    summary = plan.summary()
    nodes, per_node = plan.recipe.distributed.nodes, plan.recipe.distributed.processes_per_node
    world = nodes * per_node
    rows = dict(line.split("  ", 1) for line in summary.splitlines() if not line.startswith(" "))
    rows = {key.strip(): value.strip() for key, value in rows.items()}
    assert rows["world size"] == f"{world} = {nodes} node(s) x {per_node} process(es)"
    assert rows["global batch"] == (
        f"2 (micro) x 4 (accumulation) x {world} (world: {nodes} node(s) x {per_node}) "
        f"= {8 * world} sequences"
    )
    assert rows["tokens/step"] == f"{8 * world * 128:,} ({8 * world} x 128 max length)"
    dist = plan.recipe.distributed
    if dist.strategy == "ddp":
        assert rows["distributed"] == "DDP"
        assert rows["optimizer"] == "adamw_torch: AdamW (torch)"
    else:
        assert rows["distributed"] == (
            f"DeepSpeed ZeRO-{dist.zero_stage}, optimizer offload: {dist.offload_optimizer}, "
            f"parameter offload: {dist.offload_parameters}"
        )
    if dist.offload_optimizer == "cpu":
        assert rows["optimizer"] == (
            "DeepSpeedCPUAdam (ZeRO optimizer offload runs it in place of adamw_torch)"
        )
    elif dist.strategy == "deepspeed":
        assert rows["optimizer"] == "adamw_torch: AdamW (torch) wrapped by DeepSpeed"
    assert rows["memory/device"].endswith("(model states only, not activations)")
    where = plan.trainer_args["output_dir"]
    if plan.recipe.checkpointing.use_node_local_storage:
        assert (
            f"on each node's own disk in {where} (DeepSpeed use_node_local_storage;"
            in (rows["checkpoints"])
        )
    else:
        shared = " (shared by every node)" if nodes > 1 else ""
        assert rows["checkpoints"].endswith(f", in {where}{shared}"), rows["checkpoints"]
    offloaded = "cpu" in (dist.offload_optimizer, dist.offload_parameters)
    assert plan.memory is not None
    if offloaded:  # what the offload moves to each node's CPU memory
        cpu = format_bytes(plan.memory.cpu_total)
        assert rows["memory/node"] == f"{cpu} of CPU memory (ZeRO offload)"
    else:
        assert "memory/node" not in rows
    assert " = parameters " in rows["memory/device"]
    assert rows["task"].startswith("sft: mistral built from config, ")
    assert rows["steps"] == "20 (max_steps)"
    overrides = f" + overrides: {' '.join(CASES[case])}" if CASES[case] else ""
    assert rows["recipe"] == f"tests/plan/golden/recipe.yaml{overrides}"
    assert plan.files()[plan.layout.summary_file] == summary + "\n"


def test_memory_estimate_shrinks_with_zero_and_offload() -> None:
    parameters = 1_692_928  # embeddings and untied head 2 x 1000 x 256, 2 layers of 590,336, norm
    assert case_plan("zero0").parameters.total == parameters
    totals = {case: case_plan(case).memory.total for case in CASES}
    # bf16 weights 2 + gradients 2 + fp32 master 4 + Adam 8 bytes per parameter, nothing sharded.
    assert totals["ddp-1rank"] == totals["ddp-2ranks"] == totals["zero0"] == 16 * parameters
    assert totals["zero0"] > totals["zero1"] > totals["zero2"] > totals["zero2-offload-optimizer"]
    # ZeRO-Offload keeps only the 16-bit weights on the device.
    assert totals["zero2-offload-optimizer"] == 2 * parameters
    assert totals["zero3"] < totals["zero2"]
    assert totals["zero3-offload-both"] < totals["zero3"]


def test_building_twice_gives_identical_files(case: str) -> None:
    recipe = load_recipe(GOLDEN_RECIPE, CASES[case])
    before = recipe.model_dump()
    first = build_plan(recipe, GOLDEN_RUN_DIR, python="python").files()
    second = build_plan(recipe, GOLDEN_RUN_DIR, python="python").files()
    assert first == second
    assert recipe.model_dump() == before


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
@pytest.mark.parametrize("smoke", [False, True], ids=["full", "smoke"])
def test_building_a_shipped_recipe_is_pure(path: Path, smoke: bool, tmp_path: Path) -> None:
    recipe = load_recipe(path)
    before = recipe.model_dump()
    run = tmp_path / "run"
    first = build_plan(recipe, run, smoke=smoke, python="python").files()
    assert build_plan(recipe, run, smoke=smoke, python="python").files() == first
    assert recipe.model_dump() == before
    assert not run.exists(), "planning must not write anything"


# --- the libraries' own parsers ------------------------------------------------------------------


def test_accelerate_reads_the_config_file(case: str, tmp_path: Path) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    plan = case_plan(case, tmp_path / "run")
    write_plan(plan)
    config = load_config_from_file(str(plan.layout.accelerate_file))
    assert config.distributed_type.value == plan.accelerate["distributed_type"]
    assert config.num_processes == plan.batch.world_size
    assert config.mixed_precision == plan.accelerate.get("mixed_precision")


def test_accelerate_launch_accepts_the_command(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``accelerate launch`` does with the plan's command, up to starting processes."""
    import accelerate.utils.launch
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    plan = case_plan(case, tmp_path / "run")
    write_plan(plan)
    assert plan.command[1:3] == ("-m", "accelerate.commands.launch")
    # The port check depends on what else runs on this machine, not on the plan.
    monkeypatch.setattr(accelerate.utils.launch, "is_port_in_use", lambda port: False)
    args = launch_command_parser().parse_args(list(plan.command[3:]))
    args, defaults, mixed_precision_from_config = _validate_launch_command(args)
    assert args.num_processes == plan.batch.world_size
    assert (args.training_script, args.training_script_args) == (
        "launcher.ranks.entry",
        [str(plan.layout.root)],
    )
    assert args.module
    if plan.deepspeed is not None:
        assert args.use_deepspeed
        check_deepspeed_plugin(plan, args, defaults, mixed_precision_from_config, monkeypatch)
    elif plan.batch.world_size > 1:
        assert args.multi_gpu
        env = accelerate.utils.launch.prepare_multi_gpu_env(args)
        assert env["ACCELERATE_MIXED_PRECISION"] == plan.accelerate["mixed_precision"]
    else:
        assert not args.multi_gpu
        cmd, env = accelerate.utils.launch.prepare_simple_launcher_cmd_env(args)
        assert cmd[1:] == ["-m", "launcher.ranks.entry", str(plan.layout.root)]
        assert env["ACCELERATE_MIXED_PRECISION"] == plan.accelerate["mixed_precision"]


@pytest.mark.parametrize("stage", [2, 3])
def test_each_node_starts_its_ranks_with_torch_launcher_under_deepspeed(
    stage: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SLURM node's real `accelerate launch` command, as accelerate resolves it: DeepSpeed on 2
    nodes x 2 ranks goes through torch's launcher with this node's rank in a world of 4, not
    through the `deepspeed`/pdsh launcher (which wants a hostfile, starts a world of one node and
    writes the environment to `.deepspeed_env`)."""
    import accelerate.utils.launch
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    from launcher.backends.slurm_node import NodePlace, node_command

    recipe = load_recipe(GOLDEN_RECIPE, [*deepspeed(stage, 2), "distributed.nodes=2"])
    plan = build_plan(recipe, tmp_path / "run", python="python")
    write_plan(plan)
    monkeypatch.setattr(accelerate.utils.launch, "is_port_in_use", lambda port: False)
    place = NodePlace(job_id="77", node_rank=1, num_nodes=2, main_host="n1", attempt=0)

    def resolved(config: dict[str, Any]) -> tuple[list[str] | None, Any]:
        plan.layout.accelerate_file.write_text(yaml.safe_dump(config))
        command = node_command("python", plan.layout, place)
        args = launch_command_parser().parse_args(command[3:])
        args, defaults, _ = _validate_launch_command(args)
        # What `accelerate launch`'s deepspeed_launcher sets before it prepares the command.
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        cmd, _ = accelerate.utils.launch.prepare_deepspeed_cmd_env(args)
        return cmd, args

    cmd, args = resolved(plan.accelerate)
    assert cmd is None, f"DeepSpeed's own launcher would run: {cmd}"
    assert (args.nnodes, args.node_rank, args.nproc_per_node) == ("2", 1, "2")
    rendezvous = getattr(args, "rdzv_endpoint", None) or f"{args.master_addr}:{args.master_port}"
    assert rendezvous == f"n1:{place.port}"
    # Without the plan's choice accelerate takes pdsh: the failure this test exists for.
    default = yaml.safe_load(yaml.safe_dump(plan.accelerate))
    del default["deepspeed_config"]["deepspeed_multinode_launcher"]
    cmd, _ = resolved(default)
    assert cmd is not None and cmd[0] == "deepspeed" and "pdsh" in cmd


def check_deepspeed_plugin(
    plan: Plan,
    args: Any,
    defaults: Any,
    mixed_precision_from_config: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """accelerate refuses a DeepSpeed config file whose settings the accelerate config repeats."""
    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env
    from transformers.integrations import unset_hf_deepspeed_config

    # As accelerate's launch_command does before deepspeed_launcher.
    fields = list(defaults.deepspeed_config)
    if mixed_precision_from_config:
        fields.append("mixed_precision")
    args.deepspeed_fields_from_accelerate_config = ",".join(fields)
    _, env = prepare_deepspeed_cmd_env(args)
    assert env["ACCELERATE_DEEPSPEED_CONFIG_FILE"] == str(plan.layout.deepspeed_file)
    for key, value in env.items():
        if key.startswith("ACCELERATE_"):
            monkeypatch.setenv(key, value)
    try:
        plugin = DeepSpeedPlugin()
        assert plugin.zero_stage == plan.recipe.distributed.zero_stage
        # accelerate silences DeepSpeed's step printing itself; everything else is read as written.
        read = {**plugin.deepspeed_config, "steps_per_print": plan.deepspeed["steps_per_print"]}
        assert read == plan.deepspeed
        assert plugin.zero3_init_flag == (plan.recipe.distributed.zero_stage == 3)
    finally:
        unset_hf_deepspeed_config()


def recipe_world(plan: Plan) -> int:
    """The world size the recipe asks for, computed here: what the cross-checks below compare
    the plan's files with (feeding them the plan's own number would hide a wrong product)."""
    return plan.recipe.distributed.nodes * plan.recipe.distributed.processes_per_node


class DataParallel:
    """Stand-in for DeepSpeed's ``mpu``: the data-parallel world size the recipe asks for."""

    def __init__(self, world_size: int):
        self.world_size = world_size

    def get_data_parallel_world_size(self) -> int:
        return self.world_size


@pytest.mark.parametrize("case", DEEPSPEED_CASES)
def test_deepspeed_parses_the_config(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import deepspeed.runtime.config as ds_config

    plan = case_plan(case)
    # DeepSpeedConfig asks deepspeed.comm for the rank before it asks the mpu for the world size;
    # without a process group that raises and it silently falls back to a world of 1.
    monkeypatch.setattr(ds_config.dist, "get_rank", lambda *args, **kwargs: 0)
    world = recipe_world(plan)  # from the recipe, not from the plan's own arithmetic
    parsed = ds_config.DeepSpeedConfig(copy.deepcopy(plan.deepspeed), mpu=DataParallel(world))
    assert parsed.world_size == world
    assert parsed.train_batch_size == plan.batch.global_batch
    assert parsed.train_micro_batch_size_per_gpu == plan.batch.micro_batch
    assert parsed.gradient_accumulation_steps == plan.batch.accumulation
    assert parsed.zero_optimization_stage == plan.recipe.distributed.zero_stage
    assert parsed.gradient_clipping == plan.recipe.training.max_grad_norm
    precision = plan.recipe.training.precision
    assert parsed.bfloat16_config.enabled == (precision == "bf16")
    assert parsed.float16_config.enabled == (precision == "fp16")
    zero = parsed.zero_config
    offload_optimizer = plan.recipe.distributed.offload_optimizer
    offload_parameters = plan.recipe.distributed.offload_parameters
    assert (
        zero.offload_optimizer.device if zero.offload_optimizer else "none"
    ) == offload_optimizer
    assert (zero.offload_param.device if zero.offload_param else "none") == offload_parameters
    if plan.recipe.distributed.zero_stage == 3:
        assert zero.gather_16bit_weights_on_model_save is True
        assert (
            zero.prefetch_bucket_size
            == plan.deepspeed["zero_optimization"]["stage3_prefetch_bucket_size"]
        )


@pytest.fixture(scope="module")
def configured_state() -> Iterator[None]:
    """The single-process CPU state a rank creates before its TrainingArguments (ranks/runtime)."""
    from accelerate import PartialState

    PartialState(cpu=True)
    yield
    PartialState._reset_state()


class OnWorld:
    """TrainingArguments as seen on ``world_size`` ranks (this test process is a single one)."""

    def __init__(self, args: Any, world_size: int):
        self._args = args
        self.world_size = world_size

    def __getattr__(self, name: str) -> Any:
        return getattr(self._args, name)


def rank_training_arguments(plan: Plan) -> Any:
    """The rank's TrainingArguments (ranks/trainers.py), built by the library from the plan.

    ``TrainingArguments(deepspeed=...)`` needs a DeepSpeed distributed state, which only a rank
    started by ``accelerate launch`` has; for DeepSpeed plans the arguments are built without it
    and the DeepSpeed file is checked against them by the integration's own cross-check below.
    """
    from transformers import TrainingArguments
    from trl import SFTConfig

    kwargs = dict(plan.trainer_args)
    if plan.deepspeed is not None:
        assert kwargs.pop("deepspeed") == str(plan.layout.deepspeed_file)
    factory = SFTConfig if plan.recipe.task == "sft" else TrainingArguments
    args = factory(**kwargs, use_cpu=True)
    if plan.deepspeed is not None:
        check_hf_deepspeed_config(plan, args)
    return args


def check_hf_deepspeed_config(plan: Plan, args: Any) -> None:
    from transformers.integrations import unset_hf_deepspeed_config
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    try:
        hf_config = HfTrainerDeepSpeedConfig(copy.deepcopy(plan.deepspeed))
        on_world = OnWorld(args, recipe_world(plan))
        hf_config.trainer_config_process(on_world)
        # Raises listing every DeepSpeed value that differs from the TrainingArguments.
        hf_config.trainer_config_finalize(on_world, model=None, num_training_steps=args.max_steps)
        assert hf_config.mismatches == []
    finally:
        unset_hf_deepspeed_config()


def test_trainer_accepts_the_arguments(case: str, tmp_path: Path, configured_state: None) -> None:
    plan = case_plan(case, tmp_path / "run")
    write_plan(plan)
    args = rank_training_arguments(plan)
    assert type(args).__name__ == "SFTConfig"
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 8
    assert args.max_steps == 20
    assert args.learning_rate == 3e-4
    assert args.max_length == 128
    saving = plan.recipe.checkpointing
    if saving.use_node_local_storage:  # one folder per run under node_local_dir, {node} kept
        assert args.save_on_each_node and plan.deepspeed is not None
        assert plan.deepspeed["checkpoint"] == {"use_node_local_storage": True}
        assert args.output_dir.startswith(f"{saving.node_local_dir}/{plan.layout.root.name}-")
        assert plan.contract.checkpoints_folder("n7") == Path(
            args.output_dir.replace("{node}", "n7")
        )
    else:
        assert not args.save_on_each_node
        assert plan.deepspeed is None or "checkpoint" not in plan.deepspeed
        assert args.output_dir == str(plan.layout.checkpoints_dir)
        assert plan.contract.checkpoints_folder("n7") == plan.layout.checkpoints_dir


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
@pytest.mark.parametrize("smoke", [False, True], ids=["full", "smoke"])
def test_trainer_accepts_shipped_recipe_arguments(
    path: Path, smoke: bool, tmp_path: Path, configured_state: None
) -> None:
    plan = build_plan(load_recipe(path), tmp_path / "run", smoke=smoke, exists=lambda p: False)
    write_plan(plan)
    args = rank_training_arguments(plan)
    expected = {"sft": "SFTConfig"}.get(plan.recipe.task, "TrainingArguments")
    assert type(args).__name__ == expected
    assert args.eval_strategy.value == plan.recipe.training.eval_strategy


# --- several nodes AND several ranks per node ---------------------------------------------------
#
# One node, or as many nodes as ranks per node, hides a world size computed as a maximum or a sum
# (1 x n = max(1, n); 2 x 2 = 2 + 2): 2 nodes x 3 ranks tell a product from both.

NODES, PER_NODE = 2, 3
WORLD = 6  # 2 x 3, by hand
GLOBAL_BATCH = 48  # 2 (micro) x 4 (accumulation) x 6, the golden recipe's batch settings


@pytest.mark.parametrize(
    "nodes,per_node,micro,accumulation,world,global_batch",
    [
        (2, 3, 2, 4, 6, 48),
        (3, 2, 5, 1, 6, 30),
        (4, 8, 1, 16, 32, 512),
        (1, 7, 3, 2, 7, 42),
        (5, 1, 2, 3, 5, 30),
    ],
)
def test_batch_numbers_multiply_nodes_and_ranks(
    nodes: int, per_node: int, micro: int, accumulation: int, world: int, global_batch: int
) -> None:
    batch = BatchNumbers(
        nodes=nodes,
        processes_per_node=per_node,
        micro_batch=micro,
        accumulation=accumulation,
        max_length=100,
    )
    assert batch.world_size == world
    assert batch.global_batch == global_batch
    assert batch.tokens_per_step == global_batch * 100
    assert batch.arithmetic() == (
        f"{micro} (micro) x {accumulation} (accumulation) x {world} "
        f"(world: {nodes} node(s) x {per_node}) = {global_batch}"
    )


MULTI_NODE = {
    "ddp": [f"distributed.nodes={NODES}", f"distributed.processes_per_node={PER_NODE}"],
    "zero1": deepspeed(1, PER_NODE, f"distributed.nodes={NODES}", "training.precision=fp16"),
    "zero3": deepspeed(3, PER_NODE, f"distributed.nodes={NODES}"),
}


@pytest.mark.parametrize("overrides", MULTI_NODE.values(), ids=MULTI_NODE.keys())
def test_two_nodes_of_three_ranks_everywhere(
    overrides: list[str], tmp_path: Path, configured_state: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import deepspeed.runtime.config as ds_config

    plan = build_plan(load_recipe(GOLDEN_RECIPE, overrides), tmp_path / "run", python="python")
    contract = json.loads(plan.files()[plan.layout.contract_file])
    assert {key: contract[key] for key in ("world_size", "nodes", "processes_per_node")} == {
        "world_size": WORLD,
        "nodes": NODES,
        "processes_per_node": PER_NODE,
    }
    assert (contract["per_device_batch_size"], contract["gradient_accumulation_steps"]) == (2, 4)
    assert contract["global_batch_size"] == GLOBAL_BATCH
    assert (plan.accelerate["num_processes"], plan.accelerate["num_machines"]) == (WORLD, NODES)
    args = plan.trainer_args
    assert (args["per_device_train_batch_size"], args["gradient_accumulation_steps"]) == (2, 4)
    lines = [line.split("  ", 1) for line in plan.summary().splitlines() if line[0] != " "]
    rows = {name.strip(): value.strip() for name, value in lines}
    assert rows["world size"] == f"{WORLD} = {NODES} node(s) x {PER_NODE} process(es)"
    assert rows["tokens/step"] == f"{GLOBAL_BATCH * 128:,} ({GLOBAL_BATCH} x 128 max length)"
    write_plan(plan)
    # The Trainer's own arguments and, for DeepSpeed, the HF integration's cross-check of
    # train_batch_size against world x micro x accumulation, with the recipe's world of 2 x 3.
    assert recipe_world(plan) == WORLD
    rank_training_arguments(plan)
    if plan.deepspeed is None:
        return
    assert plan.deepspeed["train_batch_size"] == GLOBAL_BATCH
    written = json.loads(plan.layout.deepspeed_file.read_text())
    assert (written["train_batch_size"], written["train_micro_batch_size_per_gpu"]) == (48, 2)
    # DeepSpeed's own parser checks train_batch_size = micro x accumulation x its world size.
    monkeypatch.setattr(ds_config.dist, "get_rank", lambda *args, **kwargs: 0)
    parsed = ds_config.DeepSpeedConfig(written, mpu=DataParallel(WORLD))
    assert (parsed.world_size, parsed.train_batch_size) == (WORLD, GLOBAL_BATCH)
    assert parsed.gradient_accumulation_steps == 4


# --- smoke ---------------------------------------------------------------------------------------

SMOKE_EXPECTED = {
    # recipe: (architecture, tokenizer algorithm, trained tokenizer's vocabulary)
    "classification-imdb": ("distilbert", "wordpiece", 512),
    "mlm-scratch": ("distilbert", "wordpiece", 512),
    "ner": ("bert", "wordpiece", 512),
    "sft-mistral-7b-zero3": ("mistral", "byte_level_bpe", 512),
    "sft-mistral": ("mistral", "byte_level_bpe", 512),
    "sft-qlora-7b": ("qwen2", "byte_level_bpe", 512),
}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_smoke_shrinks_a_shipped_recipe(path: Path) -> None:
    original = load_recipe(path)
    run_dir = Path("/runs/smoke")
    plan = build_plan(original, run_dir, smoke=True, python="python", exists=lambda p: False)
    recipe, smoke = plan.recipe, original.smoke
    architecture, algorithm, vocab = SMOKE_EXPECTED[path.stem]

    assert recipe.model.pretrained is None
    assert recipe.model.architecture == architecture == original.model.architecture
    for key, value in tiny_config(architecture).items():
        assert recipe.model.config[key] == value

    assert recipe.tokenizer.pretrained is None
    assert recipe.tokenizer.train is not None
    assert (recipe.tokenizer.train.algorithm, recipe.tokenizer.train.vocab_size) == (
        algorithm,
        vocab,
    )

    assert recipe.data.dataset is None and recipe.data.dataset_config is None
    expected_files = {"train": "/runs/smoke/smoke-data/train.jsonl"}
    if original.data.eval_split:
        expected_files["eval"] = "/runs/smoke/smoke-data/eval.jsonl"
        assert recipe.data.eval_split == "eval"
    assert recipe.data.files == expected_files
    assert (recipe.data.format, recipe.data.train_split) == ("json", "train")
    assert recipe.data.max_length == min(original.data.max_length, smoke.max_length)
    assert recipe.data.text_column == original.data.text_column
    assert recipe.data.labels == original.data.labels

    assert recipe.training.max_steps == smoke.max_steps
    assert recipe.training.precision == "fp32"
    assert recipe.training.per_device_batch_size <= smoke.max_batch_size
    assert recipe.task == original.task
    assert recipe.distributed == original.distributed

    assert plan.smoke and plan.contract.smoke
    assert len(plan.smoke_notes) == 4
    summary = plan.summary()
    for note in plan.smoke_notes:
        assert note in summary
    assert "\nsmoke          model: tiny " in summary
    assert "\nprecision      fp32\n" in summary
    assert plan.memory is not None, "a tiny model built from config has a known size"


def test_smoke_notes_for_a_hub_model() -> None:
    plan = build_plan(
        load_recipe(REPO / "recipes" / "classification-imdb.yaml"),
        Path("/runs/smoke"),
        smoke=True,
        exists=lambda p: False,
    )
    assert plan.smoke_notes == (
        "model: tiny distilbert built from config (dim=64, hidden_dim=128, n_layers=2, n_heads=4) "
        "instead of distilbert/distilbert-base-uncased",
        "tokenizer: wordpiece with 512 tokens trained on the smoke data instead of "
        "distilbert/distilbert-base-uncased (hub tokenizers are not fetched for smoke runs)",
        "data: 96 generated samples with the recipe's columns in /runs/smoke/smoke-data instead "
        "of stanfordnlp/imdb, max length 64",
        "training: 6 steps in fp32, micro batch 4, checkpoint and eval every 3 steps",
    )
    training = plan.recipe.training
    assert (training.eval_strategy, training.eval_steps) == ("steps", 3)
    assert (plan.recipe.checkpointing.strategy, plan.recipe.checkpointing.every_steps) == (
        "steps",
        3,
    )


SMOKE_LOCAL = """\
name: local
task: mlm
model:
  pretrained: {model}
tokenizer:
  pretrained: {model}
data:
  files:
    train: {train}
    validation: {validation}
  format: text
  train_split: train[:1000]
  eval_split: validation
training:
  eval_strategy: epoch
"""


def test_smoke_keeps_local_files_and_slices_them(tmp_path: Path) -> None:
    model = tmp_path / "my model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "bert"}))
    train, validation = tmp_path / "train.txt", tmp_path / "valid.txt"
    train.write_text("a line\n")
    validation.write_text("another line\n")
    path = tmp_path / "local.yaml"
    path.write_text(SMOKE_LOCAL.format(model=model, train=train, validation=validation))
    plan = build_plan(load_recipe(path), tmp_path / "run", smoke=True)
    data = plan.recipe.data
    assert data.files == {"train": str(train), "validation": str(validation)}
    assert (data.train_split, data.eval_split) == ("train[:96]", "validation[:24]")
    assert data.format == "text"
    model_section = plan.recipe.model
    # The architecture comes from the folder's config.json, read without transformers.
    assert (model_section.pretrained, model_section.architecture) == (None, "bert")
    assert model_section.config == TINY_CONFIGS["bert"]
    # A local tokenizer can be had offline: it is kept.
    assert plan.recipe.tokenizer.pretrained == str(model)
    assert plan.smoke_notes == (
        "model: tiny bert built from config (hidden_size=64, intermediate_size=128, "
        f"num_hidden_layers=2, num_attention_heads=4) instead of {model}",
        "data: first 96 samples of the recipe's local files, max length 64",
        "training: 6 steps in fp32, micro batch 4, checkpoint and eval every 3 steps",
    )


def test_smoke_needs_an_architecture_for_an_unknown_model(tmp_path: Path) -> None:
    from launcher.errors import RecipeError

    path = tmp_path / "r.yaml"
    path.write_text("name: r\ntask: sft\nmodel: {pretrained: org/model}\ndata: {dataset: d}\n")
    with pytest.raises(RecipeError) as caught:
        build_plan(load_recipe(path), tmp_path / "run", smoke=True, exists=lambda p: False)
    (problem,) = [str(p) for p in caught.value.problems]
    assert problem.startswith(
        "--smoke: model.architecture: needed to build a tiny model like 'org/model' (no "
        "config.json for org/model in the hub cache ("
    )
    assert problem.endswith(
        "`hf download org/model config.json` puts it there); set it to the model's model_type: "
        "mistral, llama, qwen2, gemma, phi3, gpt2, falcon... or distilbert, bert"
    )


def test_local_pretrained_model_sizes_come_from_its_config(tmp_path: Path) -> None:
    model = tmp_path / "mistral-7b"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "mistral", "hidden_size": 4096}))
    child = tmp_path / "child.yaml"
    child.write_text(
        f"base: {REPO / 'recipes' / 'sft-mistral-7b-zero3.yaml'}\n"
        f"name: local-7b\nmodel: {{pretrained: {model}, config: {{}}}}\n"
    )
    plan = build_plan(load_recipe(child), tmp_path / "run")
    assert plan.deepspeed["zero_optimization"]["reduce_bucket_size"] == 4096 * 4096


def test_trainer_arguments_without_a_recipe_key_pass_through_and_owned_ones_are_refused() -> None:
    from launcher.errors import RecipeError

    golden = Path(__file__).resolve().parent / "golden" / "recipe.yaml"
    recipe = load_recipe(golden, ["training.extra.neftune_noise_alpha=5"])
    plan = build_plan(recipe, Path("/runs/x"), python="python", exists=lambda path: False)
    assert plan.trainer_args["neftune_noise_alpha"] == 5
    assert "pass-through   Trainer: neftune_noise_alpha=5\n" in plan.summary()
    refused = {
        "training.extra.per_device_train_batch_size=4": "use `training.per_device_batch_size`",
        "training.extra.output_dir=/elsewhere": "`--run-dir`",
        "training.extra.hub_token=hf_x": "secrets come from the environment only",
        "training.extra.resume_from_checkpoint=true": "resumes from its newest complete",
        "training.extra.neftune_alpha=5": "did you mean `neftune_noise_alpha`?",
        # Plain annotations are checked: a YAML word where a number or a switch goes.
        "training.extra.neftune_noise_alpha=nan": "'nan': the Trainer takes `float | None` here",
        "training.extra.torch_compile=yes": "'yes': the Trainer takes `bool` here",
        "training.extra.eval_accumulation_steps=2.5": "2.5: the Trainer takes `int | None` here",
    }
    for override, message in refused.items():
        with pytest.raises(RecipeError) as raised:
            load_recipe(golden, [override])
        (problem,) = raised.value.problems
        assert problem.key == override.split("=")[0] and message in problem.message, problem
    classification = RECIPES / "classification-imdb.yaml"
    with pytest.raises(RecipeError, match="an SFTConfig field, for `task: sft` only"):
        load_recipe(classification, ["training.extra.completion_only_loss=true"])
