"""Does ``torch.compile`` of a training step that uses the metric as its loss work, and is it faster? (CPU)

    python -m elpips.benchmarks.loss_compile [--metric elpips-vgg] [--crop 32] [--batch 8] [--steps 20]

Compiles one whole Adam step of a small residual CNN (``train-example``'s model) whose loss is the metric,
reports the compile time (first call), the graph breaks (``torch._dynamo.explain``) and the steady-state
seconds per step against eager mode, and writes ``outputs/benchmarks/loss_compile.json``. Seeded random backbone
(speed does not depend on the weights' values). Not a test: compiling takes tens of seconds.
"""

from __future__ import annotations

import argparse
import statistics

import elpips
import torch
from elpips.experiments.denoiser import ResidualCNN
from elpips.io import write_json

from .timing import time_once


def make_step(metric, model, optimiser):
    def step(noisy: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        loss = metric(model(noisy), clean, reduction="mean")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return loss.detach()

    return step


def timed(step, data, steps: int) -> tuple[float, float]:
    """Seconds of the first call (compilation included) and the median of the next ``steps`` calls."""
    first = time_once(lambda: step(*data[0]), "cpu")
    times = [time_once(lambda pair=pair: step(*pair), "cpu") for pair in data[1:steps + 1]]
    return first, statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metric", default="elpips-vgg")
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="outputs/benchmarks/loss_compile.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    data = []
    for _ in range(args.steps + 1):
        clean = torch.rand(args.batch, 3, args.crop, args.crop, generator=generator)
        data.append(((clean + 0.1 * torch.randn(clean.shape, generator=generator)).clamp(0, 1), clean))
    result: dict = {"metric": args.metric, "crop": args.crop, "batch": args.batch, "threads": args.threads,
                    "torch": torch.__version__, "backbone": "random"}
    for mode in ("eager", "compiled"):
        torch.manual_seed(0)
        metric = elpips.Metric(args.metric, backbone_weights="random", device="cpu", seed=0)
        model = ResidualCNN()
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
        step = make_step(metric, model, optimiser)
        if mode == "compiled":
            torch._dynamo.reset()
            explanation = torch._dynamo.explain(step)(*data[0])
            result["graph_count"] = explanation.graph_count
            result["graph_break_count"] = explanation.graph_break_count
            result["break_reasons"] = sorted({str(b.reason).splitlines()[0][:160] for b in explanation.break_reasons})
            torch._dynamo.reset()
            step = torch.compile(step)
        try:
            first, steady = timed(step, data, args.steps)
        except Exception as error:  # report, do not hide: this is what the benchmark is for
            result[mode] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}
            print(f"{mode}: FAILED {result[mode]['error']}")
            continue
        result[mode] = {"first_call_seconds": first, "steady_seconds_per_step": steady}
        print(f"{mode:9s} first call {first:6.2f} s   steady {steady * 1000:7.1f} ms/step")
    if "steady_seconds_per_step" in result.get("compiled", {}):
        result["speedup"] = result["eager"]["steady_seconds_per_step"] / result["compiled"]["steady_seconds_per_step"]
        print(f"speed-up x{result['speedup']:.2f}; {result['graph_count']} graphs, "
              f"{result['graph_break_count']} graph breaks")
        for reason in result["break_reasons"]:
            print(f"  break: {reason}")
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
