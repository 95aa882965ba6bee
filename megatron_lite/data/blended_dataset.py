"""Samples drawn from several datasets in fixed proportions (Megatron's BlendedDataset)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def build_blending_indices(
    weights: Sequence[float], num_samples: int
) -> tuple[np.ndarray, np.ndarray]:
    """(dataset_index [N], dataset_sample_index [N]): sample i is item dataset_sample_index[i] of
    dataset dataset_index[i].

    Each sample goes to the dataset furthest behind its share (weight * samples so far minus what
    it got), Megatron's greedy rule: after every prefix of the sequence, each dataset's count is
    within about one sample of its target, so even a short run sees the intended mixture.
    `weights` must be normalised.
    """
    dataset_index = np.empty(num_samples, dtype=np.int32)
    dataset_sample_index = np.empty(num_samples, dtype=np.int64)
    weights = [float(weight) for weight in weights]
    counts = [0] * len(weights)
    for sample in range(num_samples):
        # Megatron counts the first sample as the first, not the zeroth: max(sample, 1).
        progress = max(sample, 1)
        deficits = [
            weight * progress - count for weight, count in zip(weights, counts, strict=True)
        ]
        behind = deficits.index(max(deficits))  # the first dataset on ties, as np.argmax
        dataset_index[sample] = behind
        dataset_sample_index[sample] = counts[behind]
        counts[behind] += 1
    return dataset_index, dataset_sample_index


class BlendedDataset(torch.utils.data.Dataset):
    """Item i is item dataset_sample_index[i] of datasets[dataset_index[i]]."""

    def __init__(
        self,
        datasets: Sequence[torch.utils.data.Dataset | None],
        dataset_index: np.ndarray,
        dataset_sample_index: np.ndarray,
    ) -> None:
        needed = np.bincount(dataset_index, minlength=len(datasets))
        for number, (dataset, count) in enumerate(zip(datasets, needed, strict=True)):
            available = 0 if dataset is None else len(dataset)
            # Internal invariant: build_gpt_datasets sizes each source from the same indices.
            assert available >= count, (
                f"blended source {number} has {available} samples, needs {count}"
            )
        self.datasets = list(datasets)
        self.dataset_index = dataset_index
        self.dataset_sample_index = dataset_sample_index

    def __len__(self) -> int:
        return self.dataset_index.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} is out of range for {len(self)} samples")
        dataset = self.datasets[int(self.dataset_index[index])]
        return dataset[int(self.dataset_sample_index[index])]
