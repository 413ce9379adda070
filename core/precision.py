"""The arithmetic of the network passes: ``Metric(..., precision=...)``.

``"float32"`` (the default), ``"bfloat16"``, ``"float16"`` (CUDA only) or ``"auto"``. In a 16-bit precision the
network's convolutions, ReLUs, pooling and dropout run under :func:`torch.autocast` in that dtype; the taps are
upcast to float32 before the normalisation, and the tap distances, the linear weights' sums and every reduction
stay float32 (they run with autocast off, :mod:`elpips.distance`). Inputs are converted as in float32 and
gradients flow back in the caller's dtype. ``"auto"`` resolves per device to bfloat16 where the hardware computes
it natively (:func:`native_bfloat16`) and to float32 elsewhere; the metric's record holds the resolved name.

float16's narrow exponent range can flush small gradients to zero inside the network, so a float16 pass scales
the gradient by :data:`FLOAT16_GRADIENT_SCALE` where it enters the network's taps and divides it out again at the
network's input (both in float32): :class:`ScaleGradient`.
"""

from __future__ import annotations

import contextlib
import functools
import sys

import torch

PRECISIONS: tuple[str, ...] = ("float32", "bfloat16", "float16", "auto")
LOW_PRECISIONS: dict[str, torch.dtype] = {"bfloat16": torch.bfloat16, "float16": torch.float16}

FLOAT16_GRADIENT_SCALE = 2.0 ** 12
"""Factor of the float16 backward: tap gradients (about 1e-4 .. 1e-2 per element for distances near 0.1) are
multiplied by it before the network's float16 backward and divided by it at the network's input, far from
float16's largest value (65504) and lifting them clear of its subnormal range (below 6e-5)."""


def check_precision(precision: str) -> str:
    """``precision`` itself; ``ValueError`` naming ``precision`` unless it is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere)."""
    if not sys.platform.startswith("linux"):
        return frozenset()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as file:
            for line in file:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bfloat16() -> bool:
    """Whether oneDNN can run bfloat16 convolutions natively on this CPU: oneDNN is available, it accepts
    bfloat16 (``torch.ops.mkldnn._is_mkldnn_bf16_supported``, which also holds for AVX-512 without the bf16
    instructions, where bf16 is emulated and slower), and the CPU has the AVX-512 BF16 or AMX-BF16 instructions."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return False
    probe = getattr(torch._C._cpu, "_is_avx512_bf16_supported", None)
    if probe is not None and probe():
        return True
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CPU with AVX-512 BF16 / AMX (:func:`cpu_has_native_bfloat16`)
    or a CUDA device of compute capability 8.0 or above. Other devices (MPS) answer ``False``."""
    if device.type == "cpu":
        return cpu_has_native_bfloat16()
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return False


def resolve_precision(precision: str, device: torch.device, *, bfloat16_available: bool | None = None) -> str:
    """The precision a metric on ``device`` runs in: ``"auto"`` becomes ``"bfloat16"`` or ``"float32"``
    (``bfloat16_available`` overrides the hardware probe, for tests); ``ValueError`` for ``"float16"`` off CUDA
    (the CPU's float16 convolutions are emulated: slower than float32, and no more accurate than bfloat16)."""
    check_precision(precision)
    if precision == "auto":
        native = native_bfloat16(device) if bfloat16_available is None else bfloat16_available
        return "bfloat16" if native else "float32"
    if precision == "float16" and device.type != "cuda":
        raise ValueError(f"precision='float16' needs a CUDA device (got {device.type}); use precision='bfloat16'")
    return precision


def network_autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` in ``precision``'s dtype for a 16-bit precision; for float32 nothing (a caller's own
    autocast, if any, stays in force)."""
    dtype = LOW_PRECISIONS.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class ScaleGradient(torch.autograd.Function):
    """The identity forward; the backward multiplies the gradient by ``factor``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(tensor: torch.Tensor, factor: float) -> torch.Tensor:
        return tensor.view_as(tensor)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.factor = inputs[1]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.factor, None


def scale_gradient(tensor: torch.Tensor, factor: float) -> torch.Tensor:
    """``tensor`` whose gradient is multiplied by ``factor`` (nothing recorded when no gradient is needed)."""
    if factor == 1.0 or not (tensor.requires_grad and torch.is_grad_enabled()):
        return tensor
    return ScaleGradient.apply(tensor, factor)


def gradient_scale(precision: str) -> float:
    """The backward's scale factor of a precision (1 but for float16)."""
    return FLOAT16_GRADIENT_SCALE if precision == "float16" else 1.0
