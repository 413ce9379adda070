"""The benchmark record as readable Markdown: environment, headline ratios against the goals, then one table
per section."""

from __future__ import annotations

from .crop import render_crop


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _environment(record: dict) -> list[str]:
    env, plan = record["environment"], record["plan"]
    load = env.get("load_average_start"), env.get("load_average_end")
    return [
        f"# elpips benchmark — {env['timestamp']}{' (quick)' if record['quick'] else ''}", "",
        f"- Device: **{env['device']}** ({env['device_name']}), {env['cpu_count']} CPUs, torch threads "
        f"{env['torch_threads']}; CUDA: {env['cuda']}",
        f"- torch {env['torch']}, torchvision {env['torchvision']}, Python {env['python']}, elpips "
        f"{env['elpips_version']} ({env.get('git_commit') or 'no git'})",
        f"- Load average (1/5/15 min) at start {load[0]}, at end {load[1]} "
        f"(above {env['cpu_count']}: the machine was shared and absolute times are inflated; ratios are paired)",
        f"- Sizes: single calls {plan['size']} px, solver steps {plan['solver_size']} px, batch/samples "
        f"{plan['batch']}; {plan['single_repeats']} timed rounds (single calls) / {plan['repeats']} (solver "
        f"steps) after {plan['warmup']} warm-up, interleaved; medians; "
        f"run took {record['duration_s']:.0f} s",
        "",
    ]


def _headline(record: dict) -> list[str]:
    rows = []
    for name, value in record["ratios"].items():
        goal = record["goals"].get(name)
        verdict = "" if goal is None else f"{goal['goal']}: {'met' if goal['met'] else 'NOT met'}"
        if goal is not None and goal.get("applies") is False:
            stated = ", ".join(f"{key} {value}" for key, value in goal["stated_at"].items())
            verdict += f" (goal stated at {stated}: indicative here)"
        rows.append([f"`{name}`", f"{value:.2f}", verdict])
    lines = ["## Ratios", ""] + _table(["ratio", "value", "goal"], rows)
    lines += ["Definitions:", ""] + [f"- `{k}`: {v}" for k, v in record["definitions"].items()] + [""]
    return lines


def _timings(title: str, section: dict, per: int | None = None) -> list[str]:
    """Median/min/max per side; with ``per``, also the median divided by ``per`` (per image-sample)."""
    header = ["side", "median", *(["per image-sample"] if per else []), "min", "max"]
    rows = [[name, _ms(t["median_s"]), *([_ms(t["median_s"] / per)] if per else []), _ms(t["min_s"]),
             _ms(t["max_s"])] for name, t in section["timings"].items()]
    return [f"## {title}", ""] + _table(header, rows)


def _geodesic(record: dict) -> list[str]:
    rows = []
    for result in record["geodesic"].values():
        t = result["timings"]
        rows.append([str(result["frames"]), str(result["size"]), _ms(t["shared"]["median_s"]),
                     _ms(t["naive"]["median_s"]), f"{result['ratios']['geodesic_speedup']:.2f}"])
    lines = [f"## Geodesic step ({next(iter(record['geodesic'].values()))['implementation']})", ""] if rows else []
    return lines + (_table(["K", "size", "shared", "naive", "speed-up"], rows) if rows else [])


def _scaling(record: dict) -> list[str]:
    scaling = record["scaling"]
    rows = [[str(r["frames"]), str(r["size"]), _ms(r["median_s"]), _ms(r["per_frame_s"])] for r in scaling["rows"]]
    return ["## Geodesic step scaling (shared step)", ""] + _table(["K", "size", "time per step", "per K"], rows)


def _memory(record: dict) -> list[str]:
    memory = record["memory"]
    lines = ["## Peak memory of one geodesic step", "", f"Method: {memory.get('method', '-')}.", ""]
    if memory.get("note"):
        lines += [f"Note: {memory['note']}", ""]
    rows = [[str(r["frames"]), str(r["chunk_size"]),
             f"{r['step_peak_mib']:.0f} MiB" if "step_peak_mib" in r else r.get("error", "-")]
            for r in memory["rows"]]
    return lines + (_table(["K", "chunk size", "step peak"], rows) if rows else [])


def _interval(bounds: list[float] | None) -> str:
    return "" if not bounds else f" (95% interval {bounds[0]:.2f}-{bounds[1]:.2f})"


def _variance(record: dict) -> list[str]:
    v = record["variance"]
    rows = [["stratified batch", f"{v['std_stratified']:.5f}", _ms(v["time_stratified_s"])],
            ["independent singles", f"{v['std_independent']:.5f}", _ms(v["time_independent_s"])]]
    return [f"## Variance per unit compute (n = {v['n']}, {v['trials']} trials, {v['size']} px)", ""] + _table(
        ["estimator", "std of the estimate", "time"], rows) + [
        f"Variance ratio {v['variance_ratio']:.2f}{_interval(v.get('variance_ratio_ci95'))}, time ratio "
        f"{v['time_ratio']:.2f}: efficiency gain "
        f"**{v['efficiency_gain']:.1f}x** for stratified batches (single-sample std {v['std_single_sample']:.5f}; "
        f"independent mean expected {v['std_independent_expected']:.5f}).", ""]


def _cuda(record: dict) -> list[str]:
    cuda = record["cuda"]
    if "modes" not in cuda:
        return ["## CUDA", "", f"cuda: {cuda.get('status', 'not available')}", ""]
    rows = []
    for mode, result in cuda["modes"].items():
        if "error" in result:
            rows.append([mode, "-", "-", result["error"]])
        else:
            rows.append([mode, f"{result['max_relative_error']:.2e}", f"{result.get('speedup_vs_float32', 0):.2f}",
                         "ok" if result["passes"] else "relative error too large"])
    return ["## CUDA precision and layout", ""] + _table(["mode", "max rel. error", "speed-up vs fp32", "status"],
                                                         rows)


def _precision(record: dict) -> list[str]:
    section = record.get("precision")
    if section is None:
        return []
    lines = [f"## Precision ({section['size']} px single calls, {section['solver_size']} px solver steps, "
             f"batch {section['batch']})", ""]
    rows = [[f"`{name}`", f"{value:.2f}"] for name, value in section["ratios"].items()]
    lines += _table(["time ratio", "value"], rows)
    rows = [[f"{kind}: {name}", _ms(summary["median_s"])] for kind, sides in section["timings"].items()
            for name, summary in sides.items()]
    lines += _table(["side", "median"], rows)
    if section["skipped"]:
        lines += [f"- skipped {name}: {why}" for name, why in section["skipped"].items()] + [""]
    return lines


def _profile(record: dict) -> list[str]:
    profile = record["profile"]
    elpips, vgg = profile["elpips"], profile["vgg_features"]
    lines = [f"## Profile (self time, {profile['size']} px, batch {profile['batch']})", "",
             f"E-LPIPS / VGG self time: {profile['self_time_ratio']:.2f}; operator calls per step "
             f"{elpips['operator_calls_per_step']:.0f} vs {vgg['operator_calls_per_step']:.0f}.", ""]
    rows = []
    for name in dict.fromkeys([*elpips["categories"], *vgg["categories"]]):
        share_e, share_v = elpips["categories"].get(name, 0.0), vgg["categories"].get(name, 0.0)
        rows.append([name, f"{share_e * 100:.1f}%", f"{share_e * elpips['self_time_ms_per_step']:.0f} ms",
                     f"{share_v * 100:.1f}%", f"{share_v * vgg['self_time_ms_per_step']:.0f} ms"])
    lines += _table(["category", "E-LPIPS share", "E-LPIPS", "VGG share", "VGG"], rows)
    rows = [[f"`{op['name']}`", f"{op['share'] * 100:.1f}%", f"{op['ms_per_step']:.1f} ms",
             f"{op['calls_per_step']:.0f}"] for op in elpips["top_operators"]]
    return lines + ["Top E-LPIPS operators:", ""] + _table(["operator", "share", "per step", "calls"], rows)


def render_markdown(record: dict) -> str:
    """The whole report."""
    batch = record["plan"]["batch"]
    lines = _environment(record) + _headline(record)
    lines += _timings(f"Single call, forward + backward ({record['single']['size']} px, batch {batch})",
                      record["single"], batch)
    lines += _timings(f"Barycenter step (N = {record['barycenter']['references']}, "
                      f"{record['barycenter']['size']} px)", record["barycenter"])
    lines += _geodesic(record) + _scaling(record) + _memory(record) + _variance(record)
    if "spatial" in record:
        from .spatial import render_markdown as spatial_markdown

        lines += spatial_markdown(record["spatial"])
    lines += render_crop(record["crop"]) if "crop" in record else []
    lines += _cuda(record) + _precision(record)
    lines += _profile(record)
    return "\n".join(lines).rstrip() + "\n"
