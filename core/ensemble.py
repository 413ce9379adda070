"""Which pieces of the E-LPIPS ensemble are on: :class:`EnsembleConfig` (see docs/algorithm.md#ensemble).

The ensemble of E-LPIPS is a set of random input transformations (scaling, offset, flips, x/y swap, colour
permutation, colour scaling) plus dropout inside the network. An :class:`EnsembleConfig` switches each piece on or
off and holds its parameters. It is immutable and checked on construction: a parameter of a piece that is off
(a colour mode with colour scaling off, a maximum offset with the offset off, ...) is an error, so every
configuration has one spelling and two equal configurations mean the same metric.

``EnsembleConfig()`` is the full E-LPIPS of the reference; ``EnsembleConfig.none()`` switches everything off
(the deterministic LPIPS-style evaluation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from .validation import check_positive_int

DEFAULT_MAX_OFFSET = 7
"""The reference's maximum offset: every image grows by 7 pixels in each dimension (pad mode)."""
DEFAULT_COLOR_MODE = "color"
COLOR_MODES: tuple[str, ...] = ("color", "brightness")
DEFAULT_DROPOUT_KEEP = 0.99
"""The reference's dropout keep probability."""

SWITCHES: tuple[str, ...] = ("offset", "flip", "swap", "permutation", "color", "scaling", "dropout")
"""The pieces that can be switched off, in the order of the random transformation (dropout last)."""
TRANSFORM_SWITCHES: tuple[str, ...] = ("scaling", "offset", "flip", "swap", "permutation", "color")
DEPENDENT_VALUES: dict[str, str] = {
    "max_offset": "offset",
    "color_mode": "color",
    "scale_levels": "scaling",
    "dropout_keep": "dropout",
}
"""Each parameter and the switch it belongs to: giving it while its switch is off is an error."""


def _check_bool(value: Any, name: str) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"ensemble option {name} must be True or False, got {value!r}")


@dataclass(frozen=True)
class EnsembleConfig:
    """The switches and parameters of the E-LPIPS ensemble (defaults: the full ensemble of the reference).

    Attributes:
        offset: random translation, per image: reflect-pad (or, with ``crop``, crop) by up to ``max_offset``.
        max_offset: the largest offset, pixels, ``>= 1`` (default 7 when ``offset`` is on; ``None`` when off).
        flip: random mirror per image (left-right, up-down, both or none; stratified within the batch).
        swap: random transpose of height and width (shared by the batch).
        permutation: random order of the RGB channels per image (stratified within the batch).
        color: random multiplicative colour factors in ``[0.2, 1)`` per image (stratified within the batch).
        color_mode: ``"color"`` (a factor per channel) or ``"brightness"`` (one factor for all three);
            default ``"color"`` when ``color`` is on, ``None`` when off.
        scaling: random box-filter downscaling by ``s`` in ``1..S`` with probability proportional to ``1/s^2``.
        scale_levels: ``S >= 1``; ``None``: ``clamp(min(H, W) // 64, 1, 8)`` for each image size.
        dropout: dropout before every convolution of the network (one mask shared by all compared images).
        dropout_keep: keep probability in ``(0, 1]`` (default 0.99 when ``dropout`` is on; ``None`` when off).
        crop: "crop instead of pad": the offset and scale steps crop the image instead of reflect-padding it
            (smaller network input, faster; up to ``max_offset`` rows/columns at the image's edges, plus up to
            ``s - 1`` at scale level ``s``, are left out of a sample). Needs ``offset`` or ``scaling``.
        tileable: the periodic mode (docs/algorithm.md#tileable): the images are seen on a torus. The offset is
            a circular shift over the whole period (no ``max_offset``, the image is not enlarged), the scale
            step wraps around instead of reflecting, and the network's convolutions pad circularly. Not with
            ``crop``.
    """

    offset: bool = True
    max_offset: int | None = None
    flip: bool = True
    swap: bool = True
    permutation: bool = True
    color: bool = True
    color_mode: str | None = None
    scaling: bool = True
    scale_levels: int | None = None
    dropout: bool = True
    dropout_keep: float | None = None
    crop: bool = False
    tileable: bool = False

    def __post_init__(self) -> None:
        for name in (*SWITCHES, "crop", "tileable"):
            _check_bool(getattr(self, name), name)
        for value_name, switch in DEPENDENT_VALUES.items():
            if getattr(self, value_name) is not None and not getattr(self, switch):
                raise ValueError(f"ensemble option {value_name}={getattr(self, value_name)!r} needs {switch} on "
                                 f"(it is off)")
        if self.max_offset is not None:
            check_positive_int(self.max_offset, "ensemble option max_offset")
        if self.scale_levels is not None:
            check_positive_int(self.scale_levels, "ensemble option scale_levels")
        if self.color_mode is not None and self.color_mode not in COLOR_MODES:
            raise ValueError(f"ensemble option color_mode must be one of {', '.join(COLOR_MODES)}, "
                             f"got {self.color_mode!r}")
        if self.dropout_keep is not None:
            keep = self.dropout_keep
            if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not math.isfinite(keep) \
                    or not 0.0 < keep <= 1.0:
                raise ValueError(f"ensemble option dropout_keep must lie in (0, 1], got {keep!r}")
        if self.crop and not (self.offset or self.scaling):
            raise ValueError("ensemble option crop needs offset or scaling on (it changes how they cut the image)")
        if self.tileable and self.crop:
            raise ValueError("ensemble options tileable and crop contradict each other (a periodic image is "
                             "wrapped around, never cut)")
        if self.tileable and self.max_offset is not None:
            raise ValueError(f"ensemble option max_offset={self.max_offset!r} needs tileable off (a tileable "
                             f"offset is a circular shift over the whole period)")
        # One spelling per configuration: the defaults of the pieces that are on are filled in.
        if self.offset and self.max_offset is None and not self.tileable:
            object.__setattr__(self, "max_offset", DEFAULT_MAX_OFFSET)
        if self.color and self.color_mode is None:
            object.__setattr__(self, "color_mode", DEFAULT_COLOR_MODE)
        if self.dropout and self.dropout_keep is None:
            object.__setattr__(self, "dropout_keep", DEFAULT_DROPOUT_KEEP)
        if self.dropout_keep is not None:
            object.__setattr__(self, "dropout_keep", float(self.dropout_keep))

    # -- construction ----------------------------------------------------------------------------------------------
    @classmethod
    def none(cls) -> EnsembleConfig:
        """Every piece off: no transformation, no dropout (a deterministic evaluation)."""
        switches: dict[str, Any] = {switch: False for switch in SWITCHES}
        return cls(**switches)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EnsembleConfig:
        """The inverse of :meth:`as_dict` (unknown keys are an error)."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ensemble option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**dict(values))

    def updated(self, strict: bool = True, **changes: Any) -> EnsembleConfig:
        """A copy with ``changes`` applied.

        Switching a piece off also drops its parameter (``updated(color=False)`` on the full ensemble works);
        giving a piece's parameter while switching it off in the same call is an error. With ``strict=False`` a
        parameter for a piece that stays off is ignored instead of an error (options applied to several metrics
        at once, some of which lack that piece).
        """
        unknown = sorted(set(changes) - {field.name for field in fields(self)})
        if unknown:
            raise ValueError(f"unknown ensemble option(s) {', '.join(unknown)}")
        for value_name, switch in DEPENDENT_VALUES.items():
            if changes.get(switch) is False and changes.get(value_name) is not None:
                raise ValueError(f"ensemble options contradict each other: {value_name}={changes[value_name]!r} "
                                 f"with {switch} off")
        values = asdict(self)
        values.update(changes)
        for value_name, switch in DEPENDENT_VALUES.items():
            if not values[switch] and (value_name not in changes or not strict):
                values[value_name] = None
        if not strict and values["crop"] and not (values["offset"] or values["scaling"]):
            values["crop"] = False
        if values["tileable"] and "max_offset" not in changes:
            values["max_offset"] = None  # the periodic offset has no maximum: the full ensemble's 7 goes
        return EnsembleConfig(**values)

    # -- what it does ----------------------------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        """JSON-ready settings (every field; ``None`` for parameters of pieces that are off)."""
        return asdict(self)

    @property
    def transforms(self) -> bool:
        """Whether any input transformation is on."""
        return any(getattr(self, switch) for switch in TRANSFORM_SWITCHES)

    @property
    def is_stochastic(self) -> bool:
        """Whether a distance under this ensemble is random (any transformation or dropout on)."""
        return self.transforms or self.dropout

    @property
    def padding(self) -> int:
        """Pixels the offset step pads the image by on each side (0 with the offset off, and in the tileable
        mode, whose offset is a circular shift)."""
        if not self.offset or self.tileable:
            return 0
        assert self.max_offset is not None  # filled in by __post_init__ while the offset is on and not tileable
        return self.max_offset

    def differences(self, base: EnsembleConfig) -> list[str]:
        """Short phrases for what differs from ``base`` (e.g. ``["no flip", "max offset 3"]``)."""
        phrases = []
        for switch in SWITCHES:
            if getattr(self, switch) != getattr(base, switch):
                phrases.append(switch if getattr(self, switch) else f"no {switch}")
        for value_name in DEPENDENT_VALUES:
            mine, theirs = getattr(self, value_name), getattr(base, value_name)
            if mine is not None and mine != theirs:
                phrases.append(f"{value_name.replace('_', ' ')} {mine}")
        if self.crop != base.crop:
            phrases.append("crop" if self.crop else "pad")
        if self.tileable != base.tileable:
            phrases.append("tileable" if self.tileable else "not tileable")
        return phrases

    def summary(self) -> str:
        """One line naming the pieces that are on and their parameters, e.g. for figure captions."""
        if not self.is_stochastic:
            return "no ensemble, tileable" if self.tileable else "no ensemble"
        parts = []
        if self.scaling:
            parts.append(f"scaling({self.scale_levels if self.scale_levels is not None else 'per size'})")
        if self.offset:
            parts.append("offset(circular)" if self.tileable
                         else f"offset({self.max_offset}{', crop' if self.crop else ''})")
        parts += [name for name in ("flip", "swap", "permutation") if getattr(self, name)]
        if self.color:
            parts.append(f"color({self.color_mode})")
        if self.dropout:
            parts.append(f"dropout({self.dropout_keep})")
        if self.crop and not self.offset:
            parts.append("crop")
        if self.tileable:
            parts.append("tileable")
        return " ".join(parts)
