"""Batch sources for the trainer: each call gives this rank's share of the next global batch, and the source's
position is a small `state_dict` so a run resumes mid-epoch."""

import os
from collections.abc import Mapping

from lumina_mgpt.data.sampler import LengthGroupedSampler, rank_share
from lumina_mgpt.data.shards import Sample, ShardSet
from lumina_mgpt.errors import LuminaError


class ShardSource:
    """Samples from pre-tokenised shard folders, in length-grouped global batches mixed by task ratios."""

    def __init__(
        self,
        folders: list[str | os.PathLike],
        *,
        batch_size: int,
        seed: int,
        rank: int,
        world_size: int,
        task_ratios: Mapping[str, float] | None = None,
        max_length: int | None = None,
        area: int | None = None,
    ):
        self.samples = ShardSet(folders)
        if area is not None:
            for shard in self.samples.shards:
                if shard.metadata.get("area") != str(area):
                    raise LuminaError(
                        f"{shard.path}: tokenised for area {shard.metadata.get('area')}, "
                        f"but the stage trains at area {area}"
                    )
        self.sampler = LengthGroupedSampler(
            self.samples.lengths,
            self.samples.canvas,
            batch_size,
            seed,
            tasks=self.samples.tasks,
            task_ratios=task_ratios,
            max_length=max_length,
        )
        self.rank, self.world_size = rank, world_size
        self.too_long = self.sampler.too_long

    def __iter__(self) -> "ShardSource":
        return self

    def __next__(self) -> list[Sample]:
        return [self.samples[int(i)] for i in rank_share(next(self.sampler), self.rank, self.world_size)]

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.sampler.load_state_dict(state)
