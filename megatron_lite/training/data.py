"""Megatron's pretraining sampler and the data module that feeds the LightningModule (any family)."""

from __future__ import annotations

from collections.abc import Iterator

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import ParallelStrategy, Strategy
from torch.utils.data import DataLoader, Dataset, Sampler

from megatron_lite.config import RunConfig


class MegatronPretrainingSampler(Sampler[list[int]]):
    """Micro-batches of dataset indices in order, starting after `consumed_samples`.

    Samples are consumed in global order: each run of micro_batch_size x data_parallel_size
    indices is split over the ranks, rank r taking the r-th micro-batch. The data position is
    therefore one integer, saved in checkpoints, and a resumed run (or one with another number of
    ranks but the same global batch) reads the very samples an uninterrupted run would.
    """

    def __init__(
        self,
        total_samples: int,
        consumed_samples: int,
        micro_batch_size: int,
        data_parallel_rank: int,
        data_parallel_size: int,
    ) -> None:
        if not 0 <= data_parallel_rank < data_parallel_size:
            raise ValueError(f"data-parallel rank {data_parallel_rank} is not in [0, {data_parallel_size})")
        if consumed_samples < 0:
            raise ValueError(f"consumed_samples must be >= 0, got {consumed_samples}")
        self.total_samples = total_samples
        self.consumed_samples = consumed_samples
        self.micro_batch_size = micro_batch_size
        self.rank = data_parallel_rank
        self.stride = micro_batch_size * data_parallel_size

    def __len__(self) -> int:
        return max(self.total_samples - self.consumed_samples, 0) // self.stride

    @property
    def batches_per_pass(self) -> int:
        """Micro-batches this rank reads in a whole pass, wherever this sampler starts."""
        return self.total_samples // self.stride

    def __iter__(self) -> Iterator[list[int]]:
        last_start = self.total_samples - self.stride
        for start in range(self.consumed_samples, last_start + 1, self.stride):
            first = start + self.rank * self.micro_batch_size
            yield list(range(first, first + self.micro_batch_size))


class ResumableDataLoader(DataLoader):
    """A loader whose sampler may start mid-pass (a resumed run), with the whole pass as length.

    Lightning restores from the checkpoint how many batches of the current epoch the run has done,
    and ends the epoch when that count reaches len(loader). The training set holds one pass for the
    whole run (max_steps global batches), so the epoch is that pass and its length must be the
    pass's. With the batches left as the length, the epoch would end as many batches early as were
    done before the checkpoint, and the next epoch would iterate this loader again from the resume
    point, training on those samples twice.
    """

    def __len__(self) -> int:
        return self.batch_sampler.batches_per_pass


def data_parallel_rank(strategy: Strategy) -> tuple[int, int]:
    """(this process's data-parallel rank, the data-parallel size): DDP's global rank and world
    size; under megatron_lite's strategy the place along the mesh's data_parallel dimension
    alone, so that tensor- and context-parallel ranks of one data-parallel rank read the same
    samples."""
    if not isinstance(strategy, ParallelStrategy):
        return 0, 1
    kwargs = strategy.distributed_sampler_kwargs
    return kwargs["rank"], kwargs["num_replicas"]


class MegatronDataModule(pl.LightningDataModule):
    """Train and validation loaders over already-built datasets.

    The train loader starts at the LightningModule's consumed_samples, which a resumed run has
    restored from its checkpoint before Lightning asks for the loaders; that is the whole data
    position (Lightning's own loader state stays empty). Validation always reads the same first
    limit_val_batches global batches, so its losses are comparable over a run.
    """

    def __init__(self, cfg: RunConfig, train_dataset: Dataset, valid_dataset: Dataset) -> None:
        super().__init__()
        self.cfg = cfg
        self.train_dataset = train_dataset
        self.valid_dataset = valid_dataset

    def _loader(self, dataset: Dataset, consumed_samples: int, num_workers: int) -> DataLoader:
        rank, size = data_parallel_rank(self.trainer.strategy)
        sampler = MegatronPretrainingSampler(
            total_samples=len(dataset),
            consumed_samples=consumed_samples,
            micro_batch_size=self.cfg.model.micro_batch_size,
            data_parallel_rank=rank,
            data_parallel_size=size,
        )
        return ResumableDataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=num_workers,
            pin_memory=self.trainer.strategy.root_device.type == "cuda",
            persistent_workers=num_workers > 0,
            # A loader of its own: starting an epoch must not draw from the global torch RNG,
            # whose state a resumed run restores for dropout.
            generator=torch.Generator().manual_seed(self.cfg.model.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, self.trainer.lightning_module.consumed_samples,
                            self.cfg.model.data.loader_workers()[0])

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.valid_dataset, 0, self.cfg.model.data.loader_workers()[1])
