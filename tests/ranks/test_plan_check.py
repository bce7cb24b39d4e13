"""The rank-side plan check: a rank refuses to train when its world size, micro batch,
accumulation or global batch differ from the plan's contract (``ranks/runtime.py``,
``PlanGuard`` in ``ranks/callbacks.py``).

In-process, with stand-ins for the distributed state, the Trainer arguments and the DeepSpeed
engine; the distributed world size comes from ``torch.distributed``, patched here.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from accelerate.utils import DistributedType

from launcher.contract import RunContract
from launcher.ranks.callbacks import PlanGuard
from launcher.ranks.runtime import PlanMismatch, check_numbers, numbers_seen

# 2 nodes x 2 ranks, micro batch 2, accumulation 4: 2 x 4 x 4 = 32 sequences per step.
CONTRACT = RunContract(
    run_dir="/runs/check",
    task="sft",
    world_size=4,
    nodes=2,
    processes_per_node=2,
    per_device_batch_size=2,
    gradient_accumulation_steps=4,
    global_batch_size=32,
    max_length=128,
    smoke=False,
)
AS_PLANNED = {
    "world_size": 4,
    "per_device_batch_size": 2,
    "gradient_accumulation_steps": 4,
    "global_batch_size": 32,
}


def state(processes: int = 4, kind: DistributedType = DistributedType.MULTI_GPU) -> Any:
    """What ``PartialState`` tells a rank."""
    return SimpleNamespace(num_processes=processes, distributed_type=kind, process_index=0)


def trainer_args(micro: int = 2, accumulation: int = 4) -> Any:
    return SimpleNamespace(
        per_device_train_batch_size=micro, gradient_accumulation_steps=accumulation
    )


@pytest.fixture
def torch_world(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make ``torch.distributed`` report an initialized group of the given size."""
    import torch.distributed as dist

    def set_world(size: int) -> None:
        monkeypatch.setattr(dist, "is_available", lambda: True)
        monkeypatch.setattr(dist, "is_initialized", lambda: True)
        monkeypatch.setattr(dist, "get_world_size", lambda *args, **kwargs: size)

    return set_world


# --- check_numbers ---------------------------------------------------------------------------------


def test_the_planned_numbers_pass() -> None:
    check_numbers(CONTRACT, dict(AS_PLANNED))


@pytest.mark.parametrize(
    "key,seen",
    [
        ("world_size", 2),
        ("per_device_batch_size", 1),
        ("gradient_accumulation_steps", 8),
        ("global_batch_size", 64),
    ],
)
def test_each_number_that_differs_is_refused(key: str, seen: int) -> None:
    """One number off, the others as planned: each is compared on its own."""
    with pytest.raises(PlanMismatch) as caught:
        check_numbers(CONTRACT, {**AS_PLANNED, key: seen})
    message = str(caught.value)
    assert f"{key}: plan {AS_PLANNED[key]}, rank sees {seen}" in message
    others = set(AS_PLANNED) - {key}
    assert not any(f"{other}: plan" in message for other in others), message
    assert "Plan: 2 x 4 x 4 = 32" in message


def test_accumulation_and_global_batch_are_named_together() -> None:
    """A rank with half the accumulation also has half the global batch: both are shown."""
    seen = {**AS_PLANNED, "gradient_accumulation_steps": 2, "global_batch_size": 16}
    with pytest.raises(PlanMismatch) as caught:
        check_numbers(CONTRACT, seen)
    assert "gradient_accumulation_steps: plan 4, rank sees 2; global_batch_size: plan 32, " in (
        str(caught.value)
    )


# --- numbers_seen ----------------------------------------------------------------------------------


def test_numbers_seen_on_the_planned_world(torch_world: Any) -> None:
    torch_world(4)
    assert numbers_seen(state(4), trainer_args()) == AS_PLANNED
    check_numbers(CONTRACT, numbers_seen(state(4), trainer_args()))


@pytest.mark.parametrize(
    "micro,accumulation,global_batch",
    [(2, 2, 16), (2, 8, 64), (1, 4, 16), (3, 1, 12)],
)
def test_numbers_seen_multiply_micro_accumulation_and_world(
    micro: int, accumulation: int, global_batch: int, torch_world: Any
) -> None:
    torch_world(4)
    seen = numbers_seen(state(4), trainer_args(micro, accumulation))
    assert seen == {
        "world_size": 4,
        "per_device_batch_size": micro,
        "gradient_accumulation_steps": accumulation,
        "global_batch_size": global_batch,
    }
    with pytest.raises(PlanMismatch):
        check_numbers(CONTRACT, seen)


def test_numbers_seen_without_a_process_group_is_a_world_of_one() -> None:
    """A hand-made ``accelerate launch --cpu`` starts one process: no process group."""
    import torch.distributed as dist

    assert not dist.is_initialized()
    seen = numbers_seen(state(1, DistributedType.NO), trainer_args())
    assert seen == {**AS_PLANNED, "world_size": 1, "global_batch_size": 8}
    with pytest.raises(PlanMismatch, match="world_size: plan 4, rank sees 1"):
        check_numbers(CONTRACT, seen)


def test_numbers_seen_trusts_neither_side_alone(torch_world: Any) -> None:
    """accelerate counting fewer processes than torch, or not distributing at all, is a world
    other than the plan's even when torch's group has the planned size."""
    torch_world(4)
    assert numbers_seen(state(2), trainer_args())["world_size"] == 2
    assert numbers_seen(state(4, DistributedType.NO), trainer_args())["world_size"] == 1
    for wrong in (state(2), state(4, DistributedType.NO)):
        with pytest.raises(PlanMismatch, match="world_size: plan 4"):
            check_numbers(CONTRACT, numbers_seen(wrong, trainer_args()))


# --- PlanGuard, before step 1 ----------------------------------------------------------------------


def engine(train_batch_size: int) -> Any:
    """A DeepSpeed engine as the callback sees it: its parsed config's train_batch_size."""
    return SimpleNamespace(config=SimpleNamespace(ds_config={"train_batch_size": train_batch_size}))


def begin(guard: PlanGuard, args: Any, **kwargs: Any) -> None:
    guard.on_train_begin(args, SimpleNamespace(), SimpleNamespace(), **kwargs)


def test_plan_guard_lets_the_planned_run_start(
    torch_world: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    torch_world(4)
    begin(PlanGuard(CONTRACT, state(4)), trainer_args(), model=engine(32), optimizer=None)
    out = capsys.readouterr().out
    assert "[launcher] rank 0 on " in out
    assert "world 4, global batch 32 as planned; optimizer none" in out


@pytest.mark.parametrize(
    "micro,accumulation,key,planned,seen",
    [
        (2, 2, "gradient_accumulation_steps", 4, 2),
        (4, 4, "per_device_batch_size", 2, 4),
    ],
)
def test_plan_guard_stops_other_trainer_arguments(
    micro: int, accumulation: int, key: str, planned: int, seen: int, torch_world: Any
) -> None:
    torch_world(4)
    with pytest.raises(PlanMismatch) as caught:
        begin(PlanGuard(CONTRACT, state(4)), trainer_args(micro, accumulation))
    assert f"{key}: plan {planned}, rank sees {seen}" in str(caught.value)
    # Either way 2 x 4 x 4 = 32 is no longer the global batch.
    assert "global_batch_size: plan 32, rank sees" in str(caught.value)


def test_plan_guard_believes_deepspeeds_train_batch_size(torch_world: Any) -> None:
    """Under DeepSpeed the engine's own train_batch_size is what steps; the Trainer arguments
    can agree with the plan while the engine does not."""
    torch_world(4)
    with pytest.raises(PlanMismatch) as caught:
        begin(PlanGuard(CONTRACT, state(4)), trainer_args(), model=engine(16))
    assert "global_batch_size: plan 32, rank sees 16" in str(caught.value)
    assert "gradient_accumulation_steps" not in str(caught.value).split(". Plan:")[0]


def test_plan_guard_stops_another_world_size(torch_world: Any) -> None:
    torch_world(2)
    with pytest.raises(PlanMismatch, match="world_size: plan 4, rank sees 2"):
        begin(PlanGuard(CONTRACT, state(2)), trainer_args())
