"""2AFC triplets read on demand from a BAPPS-layout folder (the layout ``elpips 2afc`` reads, see
:mod:`elpips.experiments.twoafc`), for training: any subset of triplets, in any order, loaded as one batch."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from elpips.io import load_image

from .twoafc import DatasetError, Triplet, choose_categories, list_triplets, load_judge


@dataclass
class TripletBatch:
    """Triplets loaded together.

    Attributes:
        ref, p0, p1: ``[B, 3, H, W]`` float32 in ``[0, 1]``.
        judge: ``[B]`` float64 in ``[0, 1]``, the fraction of humans who preferred ``p1``.
    """

    ref: torch.Tensor
    p0: torch.Tensor
    p1: torch.Tensor
    judge: torch.Tensor

    def __len__(self) -> int:
        return len(self.judge)


class BappsTriplets:
    """The triplets of some categories of one split, each loaded when asked for.

    Args:
        triplets: the files of every triplet (:func:`elpips.experiments.twoafc.list_triplets`).
        categories: the category of each triplet (same length).
        min_size: smallest image side accepted (the metric's).
    """

    def __init__(self, triplets: Sequence[Triplet], categories: Sequence[str], min_size: int = 1) -> None:
        if len(triplets) != len(categories):
            raise ValueError(f"{len(triplets)} triplets but {len(categories)} category labels")
        self.triplets = list(triplets)
        self.categories = list(categories)
        self.min_size = int(min_size)

    @classmethod
    def from_folder(cls, data_dir: str | os.PathLike, split: str, categories: Sequence[str] | None = None,
                    limit: int | None = None, min_size: int = 1) -> BappsTriplets:
        """Every triplet of ``categories`` (all of the split's when ``None``) of ``DATA/2afc/<split>``, the first
        ``limit`` of each if given; :class:`~elpips.experiments.twoafc.DatasetError` names what is missing."""
        triplets, labels = [], []
        for name in choose_categories(data_dir, split, categories):
            listed = list_triplets(data_dir, split, name, limit)
            triplets += listed
            labels += [name] * len(listed)
        return cls(triplets, labels, min_size)

    def __len__(self) -> int:
        return len(self.triplets)

    def load(self, indices: Sequence[int]) -> TripletBatch:
        """Triplets ``indices`` as one batch; their images must all have one size (BAPPS patches are 64x64)."""
        refs: list[torch.Tensor] = []
        p0s: list[torch.Tensor] = []
        p1s: list[torch.Tensor] = []
        judges = []
        for index in indices:
            triplet = self.triplets[index]
            images = [load_image(path, self.min_size) for path in (triplet.ref, triplet.p0, triplet.p1)]
            if len({tuple(image.shape) for image in images}) != 1:
                raise DatasetError(f"{triplet.ref}, {triplet.p0}, {triplet.p1}: the three images differ in size")
            if refs and images[0].shape != refs[0].shape:
                raise DatasetError(f"{triplet.ref}: {images[0].shape[-2]}x{images[0].shape[-1]} pixels, but other "
                                   f"triplets of its batch are {refs[0].shape[-2]}x{refs[0].shape[-1]} (training "
                                   f"batches need images of one size)")
            for target, image in zip((refs, p0s, p1s), images, strict=False):
                target.append(image)
            judges.append(load_judge(triplet.judge))
        return TripletBatch(torch.cat(refs), torch.cat(p0s), torch.cat(p1s),
                            torch.tensor(judges, dtype=torch.float64))
