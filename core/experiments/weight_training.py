"""Training a metric's linear weights on human 2AFC judgements, as the LPIPS project trains them.

The backbone stays frozen. What trains is one non-negative weight per channel of every tap and a small ranking
network that predicts, from the two distances ``d0 = d(ref, p0)`` and ``d1 = d(ref, p1)``, the fraction ``h`` of
humans who preferred ``p1``; the loss is the binary cross-entropy between prediction and ``h``. Each step's
distances come from :mod:`elpips.experiments.reductions` (one E-LPIPS ensemble sample per triplet, drawn anew for
every batch), so a step costs one forward pass of the network without a graph.

Recipes (``RECIPES``; every field of :class:`TrainingSettings` can still be set):

* ``"lpips"`` (default): ``lpips`` 0.1.4 (``lpips/trainer.py``, ``lpips/lpips.py``) with the LPIPS repository's
  ``train.py`` defaults. Weights start as PyTorch starts a bias-free 1x1 convolution, uniform in
  ``[-1/sqrt(C), 1/sqrt(C)]``; ranking network ``Dist2LogitLayer`` (1x1 convolutions 5 -> 32 -> 32 -> 1, LeakyReLU
  0.2, on ``d0, d1, d0 - d1, d0 / (d1 + 0.1), d1 / (d0 + 0.1)``), PyTorch's default initialisation; Adam
  (rate 1e-4, betas 0.5 / 0.999) over both; weights clamped at 0 after every step; 5 epochs at the base rate and 5
  with a rate that drops by ``rate / 5`` after each of them (so the rates are 1, ..., 1, 0.8, 0.6, 0.4, 0.2 times
  the base rate: the first decay epoch still runs at the base rate); batches of 50, shuffled each epoch.
* ``"kettunen"``: the E-LPIPS authors' ``train_run.py``: weights start at 0, Adam betas 0.9 / 0.999 with a rate
  that is 0 for 50 steps and ramps up linearly over the next 50, the loss averaged with its mirror image
  ``BCE(net(d1, d0), 1 - h)``, the ranking network's weights drawn as TensorFlow's ``variance_scaling_initializer``
  draws them (truncated normal, standard deviation ``sqrt(2.6 / fan_in)``) with zero biases, and the network
  evaluated without the ensemble's transformations and dropout (``ensemble=False``), as that script does.

Not reproduced: the LPIPS trainer's dropout (p = 0.5) on the squared feature differences before the linear layer
(the authors' script leaves it off by default); it would need every tap's per-pixel differences instead of their
pixel means. The cross-entropy is computed from logits (``lpips`` applies a sigmoid, then ``BCELoss``).

Reproducibility: the order of each epoch, the initialisation and every chunk's ensemble sample come from seeds
derived from ``settings.seed``; a checkpoint (:func:`elpips.solver.save_checkpoint`: serialised in memory, written
atomically) holds the weights, the ranking network, the optimiser state, the position and the settings, so a
resumed run continues bit-exactly and a resume with other settings is refused (:func:`elpips.record.differences`).
Under ``torchrun`` every rank computes its share of each batch's reductions, every rank receives all of them and
takes the same step: the result is the one-process result.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
from elpips import distributed
from elpips.metric import Metric
from elpips.record import differences
from elpips.solver import check_format, checkpoint_format, load_checkpoint, save_checkpoint
from torch import nn

from .reductions import TripletSource, sharded_reductions, tap_channels
from .twoafc import twoafc_scores

CHECKPOINT_FORMAT = checkpoint_format("train-weights")
RANKING_EPSILON = 0.1
RECIPES: dict[str, dict] = {
    "lpips": {},
    "kettunen": {"beta1": 0.9, "warmup_steps": 50, "symmetric_loss": True, "initialization": "zeros",
                 "ranking_initialization": "variance-scaling", "ensemble": False},
}


@dataclass(frozen=True)
class TrainingSettings:
    """How to train (defaults: the ``"lpips"`` recipe; see the module docstring).

    Attributes:
        epochs: epochs at the base rate; decay_epochs: epochs after them with a decaying rate.
        learning_rate, beta1: Adam's base rate and first-moment decay (the second is 0.999).
        warmup_steps: ``W > 0``: the rate is scaled by ``clip((step - W) / W, 0, 1)``.
        symmetric_loss: average the loss with its mirror image (p0 and p1 swapped, ``1 - h``).
        initialization: ``"lpips"`` (uniform in ``+-1/sqrt(C)``) or ``"zeros"``, unless weights are given.
        ranking_initialization: ``"torch"`` or ``"variance-scaling"``.
        ensemble: E-LPIPS: one ensemble sample per triplet and batch; ``False``: the network without it.
        batch_size: triplets per step; chunk_size: triplets per ensemble-sample draw (and per unit of work
            shared out between processes); val_samples: ensemble samples per validation distance.
        seed: of everything random; checkpoint_every: steps between checkpoints (also at every epoch's end).
        cache_reductions: a deterministic network (LPIPS, or ``ensemble=False``) gives every triplet the same
            reductions in every epoch: compute them once and keep them in memory (``N x 2 x sum C_l`` floats).
    """

    epochs: int = 5
    decay_epochs: int = 5
    learning_rate: float = 1e-4
    beta1: float = 0.5
    warmup_steps: int = 0
    symmetric_loss: bool = False
    initialization: str = "lpips"
    ranking_initialization: str = "torch"
    ensemble: bool = True
    batch_size: int = 50
    chunk_size: int = 10
    val_samples: int = 8
    seed: int = 0
    checkpoint_every: int = 200
    cache_reductions: bool = False

    def __post_init__(self) -> None:
        for name in ("batch_size", "chunk_size", "val_samples", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.epochs < 0 or self.decay_epochs < 0 or self.warmup_steps < 0:
            raise ValueError("epochs, decay_epochs and warmup_steps must be >= 0")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate}")
        if not 0 <= self.beta1 < 1:
            raise ValueError(f"beta1 must be in [0, 1), got {self.beta1}")
        if self.initialization not in ("lpips", "zeros"):
            raise ValueError(f"initialization must be 'lpips' or 'zeros', got {self.initialization!r}")
        if self.ranking_initialization not in ("torch", "variance-scaling"):
            raise ValueError(f"ranking_initialization must be 'torch' or 'variance-scaling', "
                             f"got {self.ranking_initialization!r}")

    @classmethod
    def from_recipe(cls, recipe: str = "lpips", **overrides) -> TrainingSettings:
        """The settings of ``recipe`` (``RECIPES``) with ``overrides`` (``None`` values are ignored)."""
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
        return replace(cls(**RECIPES[recipe]), **{k: v for k, v in overrides.items() if v is not None})

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.decay_epochs


def learning_rate(settings: TrainingSettings, epoch: int, step: int) -> float:
    """The rate of a step of epoch ``epoch`` (1-based) after ``step`` earlier steps (see the recipes)."""
    rate = settings.learning_rate
    if settings.decay_epochs:
        rate *= 1.0 - max(0, epoch - settings.epochs - 1) / settings.decay_epochs
    if settings.warmup_steps:
        rate *= min(max((step - settings.warmup_steps) / settings.warmup_steps, 0.0), 1.0)
    return rate


def derived_seed(seed: int, *parts) -> int:
    """A 63-bit seed from ``seed`` and labels (``"train", epoch, batch, chunk``...): independent streams."""
    text = "/".join(str(part) for part in ("elpips-train-weights", int(seed), *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


class RankingNetwork(nn.Module):
    """LPIPS' ``Dist2LogitLayer``: the logit of the predicted fraction preferring p1, from ``d0, d1`` ``[B]``."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(5, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                                    nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, d0: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
        inputs = torch.stack([d0, d1, d0 - d1, d0 / (d1 + RANKING_EPSILON), d1 / (d0 + RANKING_EPSILON)], dim=-1)
        return self.layers(inputs).squeeze(-1)

    def variance_scaling_(self, generator: torch.Generator) -> None:
        """TensorFlow's ``variance_scaling_initializer()``: truncated normal (2 std), std ``sqrt(1.3 * 2 / fan_in)``;
        zero biases."""
        with torch.no_grad():
            for layer in self.layers:
                if isinstance(layer, nn.Linear):
                    std = math.sqrt(2.6 / layer.in_features)
                    nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std, generator=generator)
                    layer.bias.zero_()


def initial_weights(channels: list[int], initialization: str, generator: torch.Generator) -> list[torch.Tensor]:
    """Per-tap ``[C_l]`` starting weights: ``"lpips"`` uniform in ``[-1/sqrt(C_l), 1/sqrt(C_l)]`` (PyTorch's
    initialisation of a bias-free 1x1 convolution, as the LPIPS trainer starts), or ``"zeros"``."""
    if initialization == "zeros":
        return [torch.zeros(count) for count in channels]
    return [(torch.rand(count, generator=generator) * 2 - 1) / math.sqrt(count) for count in channels]


def split_taps(flat: torch.Tensor, channels: list[int]) -> list[torch.Tensor]:
    """``[sum C_l]`` -> per-tap ``[C_l]`` copies."""
    return [part.detach().clone() for part in torch.split(flat, channels)]


@dataclass
class ValidationSet:
    """Held-out triplets reduced once: ``reductions`` ``[V, 2, sum C_l]`` (mean over ``samples`` ensemble
    samples), ``judge`` ``[V]`` float64, ``categories`` of each triplet."""

    reductions: torch.Tensor
    judge: torch.Tensor
    categories: list[str]


def validation_set(metric: Metric, source: TripletSource, settings: TrainingSettings) -> ValidationSet:
    """Reduce every triplet of ``source`` under ``settings.val_samples`` seeded samples (the same every epoch)."""
    indices = list(range(len(source)))
    reductions, judge = sharded_reductions(metric, source, indices, settings.chunk_size,
                                           lambda chunk: derived_seed(settings.seed, "validation", chunk),
                                           settings.val_samples)
    return ValidationSet(reductions, judge, list(source.categories))


def validation_scores(validation: ValidationSet, weights: torch.Tensor | list[torch.Tensor]) -> dict:
    """2AFC agreement of ``weights`` (flat or per tap) on ``validation``: ``{"categories": {name: score},
    "mean": unweighted mean over categories}`` (as ``elpips 2afc`` reports)."""
    flat = torch.cat(list(weights)) if isinstance(weights, (list, tuple)) else weights
    distances = validation.reductions @ flat.detach().float()
    scores = twoafc_scores(distances[:, 0], distances[:, 1], validation.judge)
    names = sorted(set(validation.categories))
    labels = validation.categories
    per_category = {name: float(scores[[label == name for label in labels]].mean()) for name in names}
    return {"categories": per_category, "mean": sum(per_category.values()) / len(per_category)}


def weight_correlations(learned: list[torch.Tensor], reference: list[torch.Tensor]) -> dict:
    """Pearson correlation of two sets of per-tap weights: ``{"per_tap": [r_l or None], "all": r}`` (``None``
    where a tap's weights are constant in either set)."""
    if [len(w) for w in learned] != [len(w) for w in reference]:
        raise ValueError(f"weights with channels {[len(w) for w in learned]} and {[len(w) for w in reference]} "
                         f"cannot be compared")

    def pearson(a: torch.Tensor, b: torch.Tensor) -> float | None:
        a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
        norm = float(a.norm() * b.norm())
        return float(a @ b) / norm if norm > 0 else None

    return {"per_tap": [pearson(a, b) for a, b in zip(learned, reference, strict=False)],
            "all": pearson(torch.cat(learned), torch.cat(reference))}


@dataclass
class TrainingState:
    """Everything a checkpoint holds. ``epoch`` (1-based) and ``batch`` are the next batch to train."""

    weights: torch.Tensor
    ranking: RankingNetwork
    optimizer: torch.optim.Adam
    epoch: int = 1
    batch: int = 0
    step: int = 0
    sums: dict = field(default_factory=lambda: {"loss": 0.0, "agreement": 0.0, "triplets": 0})
    history: list = field(default_factory=list)


def check_training(metric: Metric, train: TripletSource, validation: TripletSource, settings: TrainingSettings,
                   weights: list[torch.Tensor] | None = None) -> None:
    """``ValueError`` for a run that cannot train, before anything is computed or written: no training or
    validation triplets, starting ``weights`` that do not fit the metric's taps, or cached reductions of a metric
    that draws new ensemble samples for every batch."""
    if len(train) == 0 or len(validation) == 0:
        raise ValueError("training needs at least one training and one validation triplet")
    channels = tap_channels(metric)
    if weights is not None and [len(w) for w in weights] != channels:
        raise ValueError(f"initial weights have channels {[len(w) for w in weights]}, the metric's taps {channels}")
    if settings.cache_reductions and metric.is_stochastic and settings.ensemble:
        raise ValueError(f"cache_reductions: {metric.name} draws new ensemble samples for every batch, so its "
                         f"reductions cannot be cached (use ensemble=False or a deterministic metric)")


def new_state(channels: list[int], settings: TrainingSettings,
              weights: list[torch.Tensor] | None = None) -> TrainingState:
    """Fresh weights (``weights`` if given, else ``settings.initialization``), ranking network and optimiser."""
    generator = torch.Generator().manual_seed(derived_seed(settings.seed, "initialization"))
    start = weights if weights is not None else initial_weights(channels, settings.initialization, generator)
    flat = nn.Parameter(torch.cat([w.detach().float().reshape(-1) for w in start]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(settings.seed, "ranking"))
        ranking = RankingNetwork()
    if settings.ranking_initialization == "variance-scaling":
        ranking.variance_scaling_(generator)
    optimizer = torch.optim.Adam([flat, *ranking.parameters()], lr=settings.learning_rate,
                                 betas=(settings.beta1, 0.999))
    return TrainingState(flat, ranking, optimizer)


def training_step(state: TrainingState, reductions: torch.Tensor, judge: torch.Tensor, rate: float,
                  symmetric: bool) -> tuple[float, torch.Tensor]:
    """One Adam step on a batch (``reductions`` ``[B, 2, sum C]``, ``judge`` ``[B]``), then clamp the weights at
    0. Returns the batch's mean loss and its per-triplet 2AFC scores ``[B]`` (before the step)."""
    distances = reductions @ state.weights  # [B, 2]
    d0, d1 = distances[:, 0], distances[:, 1]
    target = judge.float()
    bce = nn.functional.binary_cross_entropy_with_logits
    loss = bce(state.ranking(d0, d1), target)
    if symmetric:
        loss = 0.5 * (loss + bce(state.ranking(d1, d0), 1 - target))
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for group in state.optimizer.param_groups:
        group["lr"] = rate
    state.optimizer.step()
    with torch.no_grad():
        state.weights.clamp_(min=0)
    return float(loss.detach()), twoafc_scores(d0.detach(), d1.detach(), judge)


def checkpoint_content(state: TrainingState, settings: TrainingSettings, identity: dict) -> dict:
    return {"format": CHECKPOINT_FORMAT, "settings": asdict(settings), **identity, "epoch": state.epoch,
            "batch": state.batch, "step": state.step, "weights": state.weights.detach().clone(),
            "ranking": state.ranking.state_dict(), "optimizer": state.optimizer.state_dict(),
            "sums": dict(state.sums), "history": state.history}


def restore_state(path: str | os.PathLike, settings: TrainingSettings, identity: dict,
                  channels: list[int]) -> TrainingState:
    """The state saved at ``path``; ``ValueError`` naming every difference if it belongs to a run with other
    settings or data."""
    saved = load_checkpoint(path)
    check_format(saved, "train-weights", path)
    recorded = {"settings": saved.get("settings"), **{key: saved.get(key) for key in identity}}
    differing = differences(recorded, {"settings": asdict(settings), **identity})
    if differing:
        raise ValueError(f"cannot resume from '{path}': it was written with other settings: {'; '.join(differing)}")
    state = new_state(channels, settings)
    with torch.no_grad():
        state.weights.copy_(saved["weights"])
    state.ranking.load_state_dict(saved["ranking"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.epoch, state.batch, state.step = int(saved["epoch"]), int(saved["batch"]), int(saved["step"])
    state.sums, state.history = dict(saved["sums"]), list(saved["history"])
    return state


@dataclass
class StepReport:
    """Passed to ``progress`` after every step."""

    epoch: int
    total_epochs: int
    batch: int
    batches: int
    step: int
    loss: float
    learning_rate: float


@dataclass
class TrainingResult:
    """The learned per-tap weights ``[C_l]``, the curve (one record per epoch, epoch 0 the initial weights), the
    validation set (to score other weights on the same samples) and the step a resumed run started from."""

    weights: list[torch.Tensor]
    history: list[dict]
    validation: ValidationSet
    resumed_from: int | None = None


def train_weights(metric: Metric, train: TripletSource, validation: TripletSource,
                  settings: TrainingSettings = TrainingSettings(), weights: list[torch.Tensor] | None = None,
                  checkpoint: str | os.PathLike | None = None, resume: bool = False,
                  progress: Callable[[StepReport], None] | None = None,
                  on_epoch: Callable[[list[dict], list[torch.Tensor]], None] | None = None,
                  held_out: ValidationSet | None = None) -> TrainingResult:
    """Train ``metric``'s linear weights on ``train``, scoring ``validation`` before training and after every epoch.

    Args:
        metric: its network (frozen) and ensemble define the distances; its own linear weights are not used.
        weights: starting weights (per tap ``[C_l]``) instead of ``settings.initialization``.
        checkpoint: file written (by rank 0, atomically: :func:`elpips.solver.save_checkpoint`) every
            ``settings.checkpoint_every`` steps and after every epoch; ``resume=True`` continues from it (same
            settings and data sizes, else ``ValueError`` naming every difference).
        progress: called after every step; on_epoch: called after every epoch with the curve so far (the
            epoch's record last) and the weights.
        held_out: ``validation`` already reduced (:func:`validation_set` with the same metric and settings), so
            that a caller can read and check it before it writes anything; reduced here if ``None``.

    Returns:
        The final weights, the curve and the validation set. Call it on every rank of a process group with the
        same arguments: every rank computes a share of each batch and returns the same result.
    """
    channels = tap_channels(metric)
    identity = {"metric": metric.name, "backbone": metric.weights_info.description, "scale_levels": metric.scale_levels,
                "dropout_keep": metric.dropout_keep, "tap_channels": channels, "train_triplets": len(train),
                "validation_triplets": len(validation)}
    check_training(metric, train, validation, settings, weights)
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    state = (restore_state(checkpoint, settings, identity, channels) if resume and checkpoint is not None
             else new_state(channels, settings, weights))
    resumed_from = state.step if resume else None
    reduce_batch = _batch_reducer(metric, train, settings)
    if held_out is None:
        held_out = validation_set(metric, validation, settings)
    if not state.history:
        state.history.append({"epoch": 0, "validation": validation_scores(held_out, state.weights)})

    def save() -> None:
        if checkpoint is not None and distributed.is_main_process():
            save_checkpoint(checkpoint, checkpoint_content(state, settings, identity))

    while state.epoch <= settings.total_epochs:
        record = _train_epoch(state, len(train), settings, reduce_batch, progress, save)
        state.history.append({**record, "validation": validation_scores(held_out, state.weights)})
        state.epoch, state.batch = state.epoch + 1, 0
        state.sums = {"loss": 0.0, "agreement": 0.0, "triplets": 0}
        save()
        if on_epoch is not None:
            on_epoch(state.history, split_taps(state.weights, channels))
    return TrainingResult(split_taps(state.weights, channels), state.history, held_out, resumed_from)


def _train_epoch(state: TrainingState, count: int, settings: TrainingSettings, reduce_batch,
                 progress: Callable[[StepReport], None] | None, save: Callable[[], None]) -> dict:
    """The remaining batches of ``state.epoch`` (from ``state.batch``); the epoch's record without validation."""
    started, timed = time.perf_counter(), 0
    batches = math.ceil(count / settings.batch_size)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(
        derived_seed(settings.seed, "order", state.epoch))).tolist()
    while state.batch < batches:
        indices = order[state.batch * settings.batch_size:(state.batch + 1) * settings.batch_size]
        reductions, judge = reduce_batch(indices, state.epoch, state.batch)
        rate = learning_rate(settings, state.epoch, state.step)
        loss, scores = training_step(state, reductions, judge, rate, settings.symmetric_loss)
        state.sums = {"loss": state.sums["loss"] + loss * len(indices),
                      "agreement": state.sums["agreement"] + float(scores.sum()),
                      "triplets": state.sums["triplets"] + len(indices)}
        state.batch, state.step, timed = state.batch + 1, state.step + 1, timed + len(indices)
        if progress is not None:
            progress(StepReport(state.epoch, settings.total_epochs, state.batch, batches, state.step, loss, rate))
        if state.step % settings.checkpoint_every == 0:
            save()
    seconds = time.perf_counter() - started
    return {"epoch": state.epoch, "learning_rate": learning_rate(settings, state.epoch, max(0, state.step - 1)),
            "steps": state.step, "train_loss": state.sums["loss"] / max(1, state.sums["triplets"]),
            "train_agreement": state.sums["agreement"] / max(1, state.sums["triplets"]),
            "seconds": seconds, "seconds_per_1000_triplets": 1000 * seconds / timed if timed else None}


def _batch_reducer(metric: Metric, train: TripletSource, settings: TrainingSettings):
    """``reduce(indices, epoch, batch) -> (reductions, judge)`` of a training batch: computed for each batch
    (chunk ``k`` seeded by ``(seed, "train", epoch, batch, k)``), or looked up in reductions of the whole training
    set computed once (``settings.cache_reductions``)."""
    if not settings.cache_reductions:
        def reduce(indices: list[int], epoch: int, batch: int):
            return sharded_reductions(metric, train, indices, settings.chunk_size,
                                      lambda chunk: derived_seed(settings.seed, "train", epoch, batch, chunk),
                                      1, settings.ensemble)
        return reduce
    every, judges = sharded_reductions(metric, train, list(range(len(train))), settings.chunk_size,
                                       lambda chunk: 0, 1, settings.ensemble)

    def look_up(indices: list[int], epoch: int, batch: int):
        return every[indices], judges[indices]
    return look_up

