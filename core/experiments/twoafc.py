"""2AFC agreement with human judgements on BAPPS (Zhang et al. 2018), the LPIPS project's dataset.

Layout read (``scripts/download_dataset.sh`` or ``download_dataset_valonly.sh`` of the LPIPS project,
https://github.com/richzhang/PerceptualSimilarity, unpack it so under ``dataset/``)::

    DATA/2afc/<split>/<category>/ref/NNNNNN.png     reference patch
                                 p0/NNNNNN.png      distortion 0
                                 p1/NNNNNN.png      distortion 1
                                 judge/NNNNNN.npy   fraction of humans who preferred p1, in [0, 1]

Score of one triplet (as in the LPIPS project): ``(d0 < d1)(1 - h) + (d1 < d0) h + (d0 = d1) / 2`` with
``d_i = d(ref, p_i)``. E-LPIPS distances of p0 and p1 use the same ensemble samples (``Metric.compare``).

Under ``torchrun`` the chunks of triplets are shared out between ranks and the scores summed with an
all-reduce; the result equals the single-process one (see :func:`evaluate_2afc`).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from elpips import distributed
from elpips.io import ImageLoadError, load_image
from elpips.metric import Metric

DISTORTIONS = ("ref", "p0", "p1")
BAPPS_HINT = ("expected the BAPPS layout DIR/2afc/<split>/<category>/{ref,p0,p1}/NNNNNN.png and "
              "judge/NNNNNN.npy (get it with scripts/download_dataset_valonly.sh of "
              "https://github.com/richzhang/PerceptualSimilarity, then pass its dataset/ folder)")


class DatasetError(ValueError):
    """The 2AFC data folder is missing or does not have the BAPPS layout."""


@dataclass(frozen=True)
class Triplet:
    """One 2AFC judgement: the three image files and the judgement file."""

    ref: Path
    p0: Path
    p1: Path
    judge: Path


@dataclass
class TwoAFCResult:
    """Scores of one metric.

    Attributes:
        categories: mean score per category, in ``[0, 1]``: the expected fraction of human judges the metric
            agrees with.
        counts: triplets scored per category.
        mean: unweighted mean of the category scores (as the LPIPS paper's tables average them).
        scores: per-triplet scores per category (``[T]`` float64).
        seed: the seed of the ensemble samples (see :func:`evaluate_2afc`).
    """

    categories: dict[str, float]
    counts: dict[str, int]
    mean: float
    scores: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    seed: int | None = None

    @property
    def triplets(self) -> int:
        return sum(self.counts.values())


def twoafc_scores(d0: torch.Tensor, d1: torch.Tensor, judge: torch.Tensor) -> torch.Tensor:
    """Per-triplet agreement ``(d0 < d1)(1 - h) + (d1 < d0) h + (d0 == d1) 0.5``.

    Args:
        d0, d1: ``[T]`` distances from the reference to p0 and p1.
        judge: ``[T]`` fraction of humans preferring p1, in ``[0, 1]``.

    Returns:
        ``[T]`` float64 scores in ``[0, 1]``.
    """
    d0, d1, h = (torch.as_tensor(v).double().flatten().cpu() for v in (d0, d1, judge))
    if not d0.shape == d1.shape == h.shape:
        raise ValueError(f"d0, d1 and judge must have equal lengths, got {len(d0)}, {len(d1)}, {len(h)}")
    if not bool(torch.isfinite(h).all()) or bool(((h < 0) | (h > 1)).any()):
        raise ValueError("human judgements must lie in [0, 1]")
    return (d0 < d1).double() * (1 - h) + (d1 < d0).double() * h + (d0 == d1).double() * 0.5


def split_dir(data_dir: str | os.PathLike, split: str = "val") -> Path:
    """``DATA/2afc/<split>`` (``DATA`` may also be the ``2afc`` folder itself); :class:`DatasetError` if absent."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder; {BAPPS_HINT}")
    base = root / "2afc" if (root / "2afc").is_dir() else root if root.name == "2afc" else None
    if base is None:
        raise DatasetError(f"{root}: has no 2afc/ folder; {BAPPS_HINT}")
    folder = base / split
    if not folder.is_dir():
        splits = sorted(p.name for p in base.iterdir() if p.is_dir())
        raise DatasetError(f"{base}: no split {split!r} (found: {', '.join(splits) or 'none'})")
    return folder


def list_categories(data_dir: str | os.PathLike, split: str = "val") -> list[str]:
    """Category folders of a split, sorted (``cnn``, ``color``, ``deblur``, ``frameinterp``, ...)."""
    folder = split_dir(data_dir, split)
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / "judge").is_dir())
    if not names:
        raise DatasetError(f"{folder}: no category folders with a judge/ folder; {BAPPS_HINT}")
    return names


def choose_categories(data_dir: str | os.PathLike, split: str = "val",
                      categories: Sequence[str] | None = None) -> list[str]:
    """``categories`` checked against the split's folders (all of them when ``None`` or empty)."""
    available = list_categories(data_dir, split)
    chosen = list(categories if categories else available)
    unknown = [name for name in chosen if name not in available]
    if unknown:
        raise DatasetError(f"no category {', '.join(map(repr, unknown))} in split {split!r} "
                           f"(found: {', '.join(available)})")
    if len(set(chosen)) != len(chosen):
        raise ValueError("categories are listed more than once")
    return chosen


def list_triplets(data_dir: str | os.PathLike, split: str, category: str, limit: int | None = None) -> list[Triplet]:
    """The triplets of one category, sorted by id (the first ``limit`` if given); checks every file exists."""
    folder = split_dir(data_dir, split) / category
    if not (folder / "judge").is_dir():
        raise DatasetError(f"{folder}: no judge/ folder; {BAPPS_HINT}")
    for name in DISTORTIONS:
        if not (folder / name).is_dir():
            raise DatasetError(f"{folder}: no {name}/ folder; {BAPPS_HINT}")
    judges = sorted((folder / "judge").glob("*.npy"))
    if not judges:
        raise DatasetError(f"{folder / 'judge'}: no .npy judgement files")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit}")
        judges = judges[:limit]
    triplets = []
    for judge in judges:
        paths = [folder / name / f"{judge.stem}.png" for name in DISTORTIONS]
        for path in paths:
            if not path.is_file():
                raise DatasetError(f"{path}: missing (judgement {judge} has no matching image)")
        ref, p0, p1 = paths
        triplets.append(Triplet(ref, p0, p1, judge))
    return triplets


def load_judge(path: str | os.PathLike) -> float:
    """One ``judge/NNNNNN.npy``: a single value in ``[0, 1]`` (fraction preferring p1)."""
    try:
        values = np.load(path, allow_pickle=False)
    except Exception as error:  # numpy raises several types for corrupt files
        raise DatasetError(f"{path}: cannot be read as a .npy judgement ({type(error).__name__}: {error})") from None
    if values.size != 1 or not np.issubdtype(values.dtype, np.number):
        raise DatasetError(f"{path}: expected one number, got an array of shape {values.shape} ({values.dtype})")
    value = float(values.reshape(-1)[0])
    if not 0.0 <= value <= 1.0:
        raise DatasetError(f"{path}: judgement {value} is outside [0, 1]")
    return value


def _batches(triplets: Sequence[Triplet], batch_size: int, min_size: int):
    """Yield ``(ref, p0, p1 [B,3,H,W], judge [B])`` of consecutive equal-size triplets."""
    current: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]] = []
    for triplet in triplets:
        images = [load_image(path, min_size) for path in (triplet.ref, triplet.p0, triplet.p1)]
        if len({tuple(image.shape) for image in images}) != 1:
            raise ImageLoadError(f"{triplet.ref}, {triplet.p0}, {triplet.p1}: the three images differ in size")
        item = (images[0], images[1], images[2], load_judge(triplet.judge))
        if current and (len(current) == batch_size or current[0][0].shape != item[0].shape):
            yield _stack(current)
            current = []
        current.append(item)
    if current:
        yield _stack(current)


def _stack(items):
    ref, p0, p1, judge = zip(*items, strict=False)
    return torch.cat(ref), torch.cat(p0), torch.cat(p1), torch.tensor(judge, dtype=torch.float64)


def chunk_seed(seed: int, category: str, chunk: int) -> int:
    """Seed of the ensemble samples of chunk ``chunk`` (triplets ``chunk * batch_size ...``) of ``category``:
    a hash of the three, so each chunk's samples are the same whichever process scores it, in whatever order,
    and do not depend on which other categories are scored."""
    digest = hashlib.sha256(f"elpips-2afc/{int(seed)}/{category}/{int(chunk)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def score_triplets(metric: Metric, triplets: Sequence[Triplet], samples: int = 32, batch_size: int = 50,
                   generator: torch.Generator | None = None,
                   progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """``[T]`` 2AFC scores of ``triplets`` under ``metric``, in batches of ``batch_size`` drawing ensemble
    samples from one ``generator`` in order (default: the metric's). :func:`evaluate_2afc` calls it once per
    chunk with the chunk's own generator.

    Args:
        samples: E-LPIPS ensemble samples per distance, shared by p0 and p1 (ignored by LPIPS and L2).
        batch_size: triplets evaluated at once.
        generator: CPU generator for the ensemble samples (default: the metric's).
        progress: called with the number of triplets finished in each batch.
    """
    if samples < 1 or batch_size < 1:
        raise ValueError("samples and batch_size must be positive integers")
    scores = []
    with torch.no_grad():
        for ref, p0, p1, judge in _batches(triplets, batch_size, metric.min_size):
            distances = metric.compare(ref.to(metric.device), [p0.to(metric.device), p1.to(metric.device)],
                                       n=samples if metric.is_stochastic else 1, generator=generator)
            scores.append(twoafc_scores(distances[0], distances[1], judge))
            if progress is not None:
                progress(len(judge))
    return torch.cat(scores) if scores else torch.zeros(0, dtype=torch.float64)


@dataclass(frozen=True)
class Chunk:
    """Triplets ``[start, stop)`` of category ``category`` (its ``index``-th chunk), scored as one unit."""

    category: str
    index: int
    start: int
    stop: int


def plan_chunks(counts: dict[str, int], batch_size: int) -> list[Chunk]:
    """Every category's triplets cut into consecutive chunks of ``batch_size`` (the last may be shorter), in
    category order: the units that are seeded, and shared out between ranks, one by one."""
    if batch_size < 1:
        raise ValueError("batch_size must be a positive integer")
    return [Chunk(name, index, start, min(start + batch_size, count))
            for name, count in counts.items() for index, start in enumerate(range(0, count, batch_size))]


def my_chunks(chunks: list[Chunk]) -> list[Chunk]:
    """This rank's share of ``chunks`` (round robin; all of them without a process group)."""
    return distributed.round_robin(chunks, *distributed.rank_and_world())


def agreed_seed(seed: int | None, generator: torch.Generator | None = None) -> int:
    """``seed``, else one drawn from ``generator`` (else at random); with a process group, rank 0's value."""
    if seed is None:
        if generator is not None:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        else:
            seed = secrets.randbelow(2**62)
    return int(distributed.broadcast_object(int(seed)))


def evaluate_2afc(metric: Metric, data_dir: str | os.PathLike, split: str = "val",
                  categories: Sequence[str] | None = None, samples: int = 32, limit: int | None = None,
                  batch_size: int = 50, generator: torch.Generator | None = None,
                  progress: Callable[[int], None] | None = None, seed: int | None = None) -> TwoAFCResult:
    """Score ``metric`` on the BAPPS 2AFC ``split`` (all categories unless ``categories`` names some).

    ``limit`` caps the triplets per category (quick runs). :class:`DatasetError` (a ``ValueError``) names the
    folder or file when the data is missing or malformed.

    Each chunk of ``batch_size`` consecutive triplets of a category draws its E-LPIPS samples from its own
    generator seeded by :func:`chunk_seed` ``(seed, category, chunk)``; ``seed`` defaults to a number drawn from
    ``generator`` (else from the metric's own generator, seeded by its ``seed``). The result thus depends on
    ``(seed, batch_size, samples)`` only, not on
    how the chunks are spread over processes: inside a ``torch.distributed`` process group (``torchrun``) every
    rank scores its round-robin share of the chunks, a per-triplet score vector (zeros elsewhere) is summed
    over ranks, and every rank returns the single-process result. Call it on every rank with the same
    arguments; ``seed`` and the scores are rank 0's. ``progress`` counts this rank's triplets only.
    """
    chosen = choose_categories(data_dir, split, categories)
    listed = {name: list_triplets(data_dir, split, name, limit) for name in chosen}
    seed = agreed_seed(seed, generator if generator is not None else metric.generator)
    chunks = plan_chunks({name: len(triplets) for name, triplets in listed.items()}, batch_size)
    offsets, total = {}, 0
    for name, triplets in listed.items():
        offsets[name], total = total, total + len(triplets)
    flat = torch.zeros(total, dtype=torch.float64)
    failure = None
    try:
        for chunk in my_chunks(chunks):
            chunk_generator = torch.Generator().manual_seed(chunk_seed(seed, chunk.category, chunk.index))
            values = score_triplets(metric, listed[chunk.category][chunk.start:chunk.stop], samples, batch_size,
                                    chunk_generator, progress)
            start = offsets[chunk.category] + chunk.start
            flat[start:start + len(values)] = values
    except Exception as error:  # reported on every rank below instead of leaving the others waiting
        if not distributed.is_distributed():
            raise
        failure = error
    if distributed.is_distributed():
        distributed.raise_on_every_rank(failure)
        flat = distributed.all_reduce_sum(flat)
    scores = {name: flat[offsets[name]:offsets[name] + len(triplets)].clone() for name, triplets in listed.items()}
    means = {name: float(values.mean()) for name, values in scores.items()}
    return TwoAFCResult(means, {name: len(values) for name, values in scores.items()},
                        float(np.mean(list(means.values()))), scores, seed)


def my_triplet_count(data_dir: str | os.PathLike, split: str = "val", categories: Sequence[str] | None = None,
                     limit: int | None = None, batch_size: int = 50) -> int:
    """How many triplets this rank scores in :func:`evaluate_2afc` (its progress bar's total)."""
    counts = {name: count_triplets(data_dir, split, [name], limit)
              for name in choose_categories(data_dir, split, categories)}
    return sum(chunk.stop - chunk.start for chunk in my_chunks(plan_chunks(counts, batch_size)))


def count_triplets(data_dir: str | os.PathLike, split: str = "val", categories: Sequence[str] | None = None,
                   limit: int | None = None) -> int:
    """How many triplets :func:`evaluate_2afc` will score (for a progress bar's total)."""
    names = choose_categories(data_dir, split, categories)
    total = 0
    for name in names:
        judge = split_dir(data_dir, split) / name / "judge"
        count = len(list(judge.glob("*.npy"))) if judge.is_dir() else 0
        total += count if limit is None else min(limit, count)
    return total
