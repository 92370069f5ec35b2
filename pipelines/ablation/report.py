"""The results directory of `ablate`: results.csv, results.md, grid.md and per-class gain plots.

Numbers come from the run directories only (summary.json: best val mAP; per_class_ap.json: the
per-class AP at the best epoch), so a report can be rebuilt from finished runs at any time.
Means and standard deviations are over seeds; the std is the sample std (ddof=1), 0 for one seed.
Group mAPs are the mean AP of a group's classes that have ground truth (EvalResult.group_map),
the grouping of STAGE Table 4 / ACAR-Net Fig. 4.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from stagecache.core.atomic import atomic_open
from stagecache.pipelines.evaluation.ava import EvalResult

GROUP_ORDER = ("pose", "person-person", "person-object")  # STAGE Table 4's order; others follow


def resolve_groups(train_store: str, groups_file: str = "") -> tuple[dict[str, list[int]], dict[int, str], str]:
    """(groups, class id -> name, note). Groups: --groups file, else the AVA grouping when the label
    map is AVA's, else the `groups` attribute a store's base group may carry (synthetic stores), else none."""
    from stagecache.extract import ava_io
    from stagecache.extract.store import open_store
    from stagecache.pipelines.evaluation.ava import class_groups

    store = open_store(train_store)
    lm = ava_io.LabelMap(ids=[int(i) for i in store.attrs["label_ids"]],
                         names=[str(n) for n in store.attrs["label_names"]])
    names = dict(zip(lm.ids, lm.names))
    if groups_file:
        return class_groups(lm, groups_file), names, f"groups from {groups_file}"
    try:
        return class_groups(lm), names, "AVA class groups"
    except ValueError:
        pass
    attr = store.groups.get("base", {}).get("groups")
    if isinstance(attr, dict) and attr:
        ids = set(lm.ids)
        return ({str(g): [int(i) for i in v if int(i) in ids] for g, v in attr.items()}, names,
                "groups from the store's base attributes")
    return {}, names, "no class groups (not an AVA label map; pass --groups groups.json)"


def _ordered_groups(groups: dict) -> list[str]:
    return [g for g in GROUP_ORDER if g in groups] + [g for g in groups if g not in GROUP_ORDER]


def _nan(v) -> float:
    return float("nan") if v is None else float(v)


def collect(runs, status: dict[str, str], groups: dict[str, list[int]]) -> list[dict]:
    """One row per run: identity, status, val mAP, per-group mAP and per-class AP (from its run dir)."""
    rows = []
    for r in runs:
        st = status.get(r.name, r.skip_reason or "not run")
        row = {"name": r.name, "config": r.config.name, "label": r.config.label, "head": r.config.head,
               "args": json.dumps(r.config.head_args, sort_keys=True), "seed": r.seed, "status": st,
               "val_map": float("nan"), "groups": {g: float("nan") for g in groups}, "per_class": {},
               "run_dir": r.run_dir}
        d = Path(r.run_dir)
        if st == "done" and (d / "summary.json").exists():
            row["val_map"] = _nan(json.loads((d / "summary.json").read_text())["best_val_map"])
            pc_file = d / "per_class_ap.json"
            if pc_file.exists():
                pc = {int(k): _nan(v) for k, v in json.loads(pc_file.read_text())["per_class"].items()}
                row["per_class"] = pc
                row["groups"] = EvalResult(map=row["val_map"], per_class=pc).group_map(groups)
        rows.append(row)
    return rows


def mean_std(values) -> tuple[float, float, int]:
    """Mean and sample std (ddof=1; 0 for one value) of the finite values, and their count."""
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=np.float64)
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


def fmt(values) -> str:
    """Percent, `mean ± std` over seeds."""
    m, s, n = mean_std(values)
    if n == 0:
        return "—"
    return f"{m * 100:.2f}" if n == 1 else f"{m * 100:.2f} ± {s * 100:.2f}"


def by_config(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(row["config"], []).append(row)
    return out


def write_csv(path: Path, rows: list[dict], groups: dict) -> None:
    gnames = _ordered_groups(groups)
    with atomic_open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "config", "head", "args", "seed", "status", "val_map"] + [f"map_{g}" for g in gnames]
                   + ["run_dir"])
        for r in rows:
            num = lambda v: "" if math.isnan(v) else f"{v:.6f}"  # noqa: E731
            w.writerow([r["name"], r["config"], r["head"], r["args"], r["seed"], r["status"], num(r["val_map"])]
                       + [num(r["groups"].get(g, float("nan"))) for g in gnames] + [r["run_dir"]])


def _status_of(rs: list[dict]) -> str:
    sts = sorted({r["status"] for r in rs})
    return "done" if sts == ["done"] else "; ".join(sts)


def results_table(rows: list[dict]) -> str:
    lines = ["| configuration | head | args | seeds | val mAP | status |", "|---|---|---|---|---|---|"]
    for cfg, rs in by_config(rows).items():
        done = [r for r in rs if r["status"] == "done"]
        lines.append(f"| {rs[0]['label'] or cfg} (`{cfg}`) | {rs[0]['head'] or '—'} | `{rs[0]['args']}` | "
                     f"{len(done)}/{len(rs)} | {fmt([r['val_map'] for r in rs])} | {_status_of(rs)} |")
    return "\n".join(lines)


def group_table(rows: list[dict], groups: dict) -> str:
    gnames = _ordered_groups(groups)
    lines = ["| configuration | " + " | ".join(gnames) + " | mAP |", "|---" * (len(gnames) + 2) + "|"]
    for cfg, rs in by_config(rows).items():
        cells = [fmt([r["groups"].get(g, float("nan")) for r in rs]) for g in gnames]
        lines.append(f"| {rs[0]['label'] or cfg} | " + " | ".join(cells) + f" | {fmt([r['val_map'] for r in rs])} |")
    return "\n".join(lines)


def grid_table(rows: list[dict], configs, grid: dict) -> str:
    """STAGE Table 6: rows x cols of one gridded configuration, val mAP mean ± std."""
    src = [c for c in configs if c.source == grid["config"]]
    rk, ck = grid["rows"], grid["cols"]
    rvals = list(dict.fromkeys(c.grid_values[rk] for c in src))
    cvals = list(dict.fromkeys(c.grid_values[ck] for c in src))
    cfg_rows = by_config(rows)
    lines = [f"| {rk} \\ {ck} | " + " | ".join(str(v) for v in cvals) + " |", "|---" * (len(cvals) + 1) + "|"]
    for rv in rvals:
        cells = []
        for cv in cvals:
            match = [c for c in src if c.grid_values[rk] == rv and c.grid_values[ck] == cv]
            cells.append(fmt([r["val_map"] for r in cfg_rows.get(match[0].name, [])]) if match else "—")
        lines.append(f"| {rv} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def class_means(rs: list[dict]) -> dict[int, float]:
    """Per-class AP averaged over the seeds of one configuration (NaN where no seed has it)."""
    ids = sorted({k for r in rs for k in r["per_class"]})
    return {k: mean_std([r["per_class"].get(k, float("nan")) for r in rs])[0] for k in ids}


def class_gains(rows: list[dict], config: str, baseline: str) -> dict[int, float]:
    """AP gain of `config` over `baseline` per class (seed means), classes with AP in both."""
    cfg = by_config(rows)
    a, b = class_means(cfg.get(config, [])), class_means(cfg.get(baseline, []))
    return {k: a[k] - b[k] for k in a if k in b and not math.isnan(a[k]) and not math.isnan(b[k])}


def top_gains(gains: dict[int, float], top_k: int) -> list[int]:
    """The top_k classes by absolute AP gain, sorted by gain (as STAGE Fig. 4)."""
    top = sorted(gains, key=lambda k: (-abs(gains[k]), k))[:top_k]
    return sorted(top, key=lambda k: (-gains[k], k))


def gain_title(config: str, baseline: str, shown: int, total: int) -> str:
    """The plot's title with the classes it really shows (a sweep on 3 classes is not a "top 20")."""
    which = f"all {total} classes" if shown == total else f"the {shown} of {total} classes with the largest |gain|"
    return f"per-class AP gain: {config} over {baseline} ({which})"


def plot_gains(path: Path, gains: dict[int, float], names: dict[int, str], *, title: str, top_k: int,
               ylim: float | None = None) -> None:
    """Bar plot of the top_k classes by absolute AP gain, sorted by gain (as STAGE Fig. 4); `ylim`
    (points) fixes the y-axis to [-ylim, ylim], so that the plots of one sweep compare by eye."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = top_gains(gains, top_k)
    vals = [gains[k] * 100 for k in top]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(top) + 1.5), 4.0), dpi=100)
    ax.bar(range(len(top)), vals, color=["#2a9d4b" if v >= 0 else "#c0392b" for v in vals])
    ax.set_xticks(range(len(top)))
    ax.set_xticklabels([names.get(k, str(k)) for k in top], rotation=60, ha="right", fontsize=8)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("AP gain (points)")
    if ylim:
        ax.set_ylim(-ylim, ylim)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def choose_baseline(spec, rows: list[dict]) -> str:
    """The spec's baseline, else the first linear configuration, else the first configuration."""
    if spec.baseline:
        return spec.baseline
    for c in spec.configs:
        if c.head == "linear" and not c.unavailable:
            return c.name
    return spec.configs[0].name


def write_report(out: Path, spec, runs, status: dict[str, str], *, train_store: str, groups_file: str = "",
                 top_k: int = 20) -> dict:
    """Write results.csv, results.md, grid.md (when the spec has a grid_table) and gain_*.png.
    Returns {"rows": ..., "groups": ..., "baseline": ..., "plots": [...]}."""
    out = Path(out)
    groups, names, note = resolve_groups(train_store, groups_file)
    rows = collect(runs, status, groups)
    write_csv(out / "results.csv", rows, groups)
    baseline = choose_baseline(spec, rows)

    md = [f"# Ablation: {spec.name}", ""]
    if spec.reference:
        md += [f"Reference: {spec.reference}", ""]
    md += [f"Seeds: {', '.join(map(str, spec.seeds))}. Values: val frame-mAP in percent, mean ± sample std "
           "over seeds (best epoch of each run).", "", "## Results", "", results_table(rows), ""]
    if groups:
        md += [f"## Per class group ({note})", "", group_table(rows, groups), ""]
    else:
        md += [f"_{note}_", ""]
    if spec.grid_table:
        gt = grid_table(rows, spec.configs, spec.grid_table)
        (out / "grid.md").write_text(f"# {spec.grid_table['config']}: {spec.grid_table['rows']} x "
                                     f"{spec.grid_table['cols']} (val mAP %)\n\n{gt}\n")
        md += [f"## {spec.grid_table['rows']} x {spec.grid_table['cols']} ({spec.grid_table['config']})", "", gt, ""]

    plots = []
    cfg_rows = by_config(rows)
    if any(r["per_class"] for r in cfg_rows.get(baseline, [])):
        all_gains = {cfg: g for cfg in cfg_rows if cfg != baseline and (g := class_gains(rows, cfg, baseline))}
        # one y-scale for the sweep: the largest |gain| any plot shows, 10% headroom
        lim = max((abs(g[k]) * 100 for g in all_gains.values() for k in top_gains(g, top_k)), default=0.0) * 1.1
        for cfg, gains in all_gains.items():
            path = out / f"gain_{cfg}_vs_{baseline}.png"
            title = gain_title(cfg, baseline, min(top_k, len(gains)), len(gains))
            plot_gains(path, gains, names, title=title, top_k=top_k, ylim=lim or None)
            plots.append(path.name)
    if plots:
        md += [f"## Per-class AP gain over `{baseline}`", ""] + [f"![{p}]({p})" for p in plots] + [""]
    (out / "results.md").write_text("\n".join(md))
    return {"rows": rows, "groups": groups, "baseline": baseline, "plots": plots}
