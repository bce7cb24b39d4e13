"""Cluster profiles and how they combine with a recipe: pure functions, no scheduler needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, launcher

from launcher.backends.profile import ClusterProfile, load_profile
from launcher.backends.slurm import cluster_overrides, executor_parameters
from launcher.backends.slurm_node import NodePlace, node_command
from launcher.contract import RunLayout
from launcher.errors import RecipeError
from launcher.plan.build import build_plan
from launcher.recipe.loader import load_recipe

SFT = REPO / "recipes" / "sft-mistral.yaml"


def test_shipped_profiles_load() -> None:
    dev = load_profile("dev")
    assert (dev.partition, dev.nodes, dev.gpus_per_node) == ("debug", 2, 0)
    gpu = load_profile(str(REPO / "cluster" / "example-gpu.yaml"))
    assert gpu.gpus_per_node == 8 and gpu.exclusive and gpu.setup[0] == "module load cuda/12.4"


def test_unknown_scheduler_option_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nslurm: {reservaton: big, mail-user: me@example.org}\n")
    with pytest.raises(RecipeError) as caught:
        load_profile(str(path))
    (problem,) = caught.value.problems
    assert problem.key == "slurm.reservaton"
    assert "did you mean `reservation`?" in problem.message


def test_unknown_profile_key_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: p\npartiton: gpu\n")
    with pytest.raises(RecipeError) as caught:
        load_profile(str(path))
    assert "p.yaml: partiton: unknown key; did you mean `partition`?" in str(caught.value)


def test_profile_describes_the_nodes_and_the_recipe_the_job() -> None:
    recipe = load_recipe(SFT)  # sets gpus_per_node 1 and time_limit_min 240 itself
    dev = ClusterProfile(name="dev", nodes=2, gpus_per_node=0, cpus_per_node=1, time_limit_min=10)
    assert cluster_overrides(recipe, dev, None) == [
        "distributed.nodes=2",
        "distributed.processes_per_node=1",
        "resources.gpus_per_node=0",  # a CPU cluster gets no GPU request
        "resources.cpus_per_task=1",
    ]  # the recipe's own 240-minute limit stays
    assert cluster_overrides(recipe, dev, 4)[0] == "distributed.nodes=4"


def test_profile_defaults_fill_what_the_recipe_leaves_unset(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(SFT.read_text().replace("  time_limit_min: 240\n", ""))
    recipe = load_recipe(path, ["distributed.processes_per_node=4"])
    gpu = ClusterProfile(name="gpu", nodes=3, gpus_per_node=8, time_limit_min=600)
    overrides = cluster_overrides(recipe, gpu, None)
    assert "distributed.nodes=3" in overrides and "resources.time_limit_min=600" in overrides
    assert not any(o.startswith("distributed.processes_per_node") for o in overrides)


def test_executor_parameters_translate_the_profile() -> None:
    gpu = load_profile(str(REPO / "cluster" / "example-gpu.yaml"))
    recipe = load_recipe(SFT, cluster_overrides(load_recipe(SFT), gpu, None))
    plan = build_plan(recipe, Path("/runs/x"))
    parameters = executor_parameters(plan, gpu)
    assert parameters["nodes"] == 2 and parameters["ntasks_per_node"] == 1
    assert parameters["gpus_per_node"] == 8 and parameters["mem"] == "480GB"
    assert parameters["signal_delay_s"] == 120
    assert parameters["additional_parameters"] == {"requeue": True}
    assert "export NCCL_DEBUG=WARN" in parameters["setup"]
    assert parameters["wckey"] is None


@pytest.mark.process
def test_environment_values_are_quoted_in_the_setup_lines() -> None:
    hostile = "a b'c$(touch x)`y`;z"
    profile = ClusterProfile(name="p", env={"TOKENISH": hostile})
    plan = build_plan(load_recipe(SFT), Path("/runs/x"))
    (line,) = [s for s in executor_parameters(plan, profile)["setup"] if "TOKENISH" in s]
    out = subprocess.run(
        ["bash", "-c", f'{line}; printf %s "$TOKENISH"'], capture_output=True, text=True, check=True
    )
    assert out.stdout == hostile


def test_node_command_carries_the_rendezvous() -> None:
    place = NodePlace(job_id="4242", node_rank=1, num_nodes=2, main_host="n1", attempt=0)
    command = node_command("python", RunLayout(Path("/runs/x")), place)
    assert command[command.index("--machine_rank") + 1] == "1"
    assert command[command.index("--num_machines") + 1] == "2"
    assert command[command.index("--main_process_ip") + 1] == "n1"
    assert command[command.index("--main_process_port") + 1] == str(20000 + 4242)
    assert command[-3:] == ["-m", "launcher.ranks.entry", "/runs/x"]


@pytest.mark.process
def test_submit_dry_run_prints_the_script_without_heavy_imports(tmp_path: Path) -> None:
    out = launcher(
        "submit",
        "sft-mistral",
        "--cluster",
        "dev",
        "--dry-run",
        "--run-dir",
        str(tmp_path / "r"),
        cwd=tmp_path,
    ).stdout
    assert "#SBATCH --nodes=2" in out and "submitit.core._submit" in out
    assert not (tmp_path / "r").exists(), "a dry run must not create the run directory"
    timing = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "launcher",
            "submit",
            "sft-mistral",
            "--cluster",
            "dev",
            "--dry-run",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    heavy = {"torch", "transformers", "deepspeed", "bitsandbytes"}
    imported = {line.rsplit("|", 1)[-1].strip() for line in timing.stderr.splitlines()}
    assert not heavy & imported


def test_the_profiles_null_memory_and_a_smoke_run_ask_for_no_memory() -> None:
    """The shipped ZeRO-3 recipe asks 512 GB per node; the dev profile says memory is not a
    resource there (null): no --mem. A smoke run asks for none on any cluster."""
    recipe = load_recipe(REPO / "recipes" / "sft-mistral-7b-zero3.yaml")
    assert recipe.resources.memory_gb == 512
    dev = load_profile(str(REPO / "cluster" / "dev.yaml"))
    gpu = load_profile(str(REPO / "cluster" / "example-gpu.yaml"))
    assert "resources.memory_gb=null" in cluster_overrides(recipe, dev, 2)
    assert "resources.memory_gb=480" in cluster_overrides(recipe, gpu, None)
    assert "resources.memory_gb=null" in cluster_overrides(recipe, gpu, None, smoke=True)
    planned = load_recipe(recipe_path := REPO / "recipes" / "sft-mistral-7b-zero3.yaml",
                          cluster_overrides(load_recipe(recipe_path), dev, 2))  # fmt: skip
    parameters = executor_parameters(build_plan(planned, Path("/runs/x")), dev)
    assert "mem" not in parameters
