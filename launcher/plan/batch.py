"""World size, micro batch, accumulation and global batch: one consistent set of numbers.

Everything that states a batch size (the DeepSpeed JSON, the Trainer arguments, the summary, the
check inside each rank) reads it from :class:`BatchNumbers`, so the numbers cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from launcher.recipe.schema import Recipe


@dataclass(frozen=True)
class BatchNumbers:
    nodes: int
    processes_per_node: int
    micro_batch: int
    accumulation: int
    max_length: int

    @property
    def world_size(self) -> int:
        return self.nodes * self.processes_per_node

    @property
    def global_batch(self) -> int:
        """Sequences per optimizer step: micro batch x accumulation x world size."""
        return self.micro_batch * self.accumulation * self.world_size

    @property
    def tokens_per_step(self) -> int:
        """Token positions per optimizer step (all real tokens when SFT packs its rows)."""
        return self.global_batch * self.max_length

    def arithmetic(self) -> str:
        return (
            f"{self.micro_batch} (micro) x {self.accumulation} (accumulation) x "
            f"{self.world_size} (world: {self.nodes} node(s) x {self.processes_per_node}) "
            f"= {self.global_batch}"
        )


def batch_numbers(recipe: Recipe) -> BatchNumbers:
    return BatchNumbers(
        nodes=recipe.distributed.nodes,
        processes_per_node=recipe.distributed.processes_per_node,
        micro_batch=recipe.training.per_device_batch_size,
        accumulation=recipe.training.gradient_accumulation_steps,
        max_length=recipe.data.max_length,
    )
