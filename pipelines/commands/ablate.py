"""`ablate`: a sweep of train-head runs (presets of STAGE Tables 6/8, ACAR-Net Table 1, all heads)."""
from __future__ import annotations

import json
import shlex
import sys

import click

from stagecache.core.errors import UserError



def parse_head_args(pairs: tuple[str, ...]) -> dict:
    """`--head-arg` / `--train-arg KEY=VALUE` for a sweep over several heads, so untyped: true/false/
    yes/no -> bool, else JSON, else the string. Each run's train() checks the head keywords against
    the head's signature (pipelines/training/preflight.py) before it writes anything."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--head-arg")
        key, value = pair.split("=", 1)
        low = value.strip().lower()
        if low in ("true", "yes", "false", "no"):
            out[key] = low in ("true", "yes")
        else:
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                out[key] = value
    return out


def _seeds(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()] if text else []
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint="--seeds") from None


def _grid(pairs: tuple[str, ...]) -> dict[str, list]:
    """`--grid num_heads=2,4,8` -> {"num_heads": [2, 4, 8]}."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"expected KEY=V1,V2,..., got {pair!r}", param_hint="--grid")
        key, values = pair.split("=", 1)
        out[key] = [parse_head_args((f"v={v}",))["v"] for v in values.split(",") if v.strip()]
    return out


def _preset_names() -> list[str]:
    from stagecache.pipelines.ablation.spec import presets

    return list(presets())


@click.command(context_settings={"show_default": True})
@click.option("--preset", default="", help=f"Shipped spec: {', '.join(_preset_names())}.")
@click.option("--spec", "spec_file", default="", help="YAML spec file (format: pipelines/ablation/sweep.py docstring).")
@click.option("--head", "heads", multiple=True, help="Instead of a spec: one configuration per head (repeatable).")
@click.option("--head-arg", "head_args", multiple=True, metavar="KEY=VALUE", help="With --head: head keyword for every configuration.")
@click.option("--grid", "grid", multiple=True, metavar="KEY=V1,V2", help="With --head: grid over a head keyword (repeatable; product).")
@click.option("--train-store", required=True, help="Feature store of the training split.")
@click.option("--val-store", required=True, help="Feature store of the validation split.")
@click.option("--out", required=True, help="Results directory (runs/ inside; rerun to resume).")
@click.option("--seeds", default="", help="Comma-separated seeds. Default: the spec's (presets: 0).")
@click.option("--epochs", type=int, default=None, help="Epoch cap for every run. Default: the spec's, else train-head's.")
@click.option("--batch-size", type=int, default=None, help="Batch size for every run. Default: the spec's, else train-head's.")
@click.option("--lr", type=float, default=None, help="Learning rate for every run. Default: the spec's, else each head's paper value.")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N. Default: the spec's, else auto.")
@click.option("--train-arg", "train_args", multiple=True, metavar="KEY=VALUE",
              help="Any other train-head field for every run, e.g. --train-arg val_boxes=gt.")
@click.option("--baseline", default="", help="Configuration the per-class gains are measured against. Default: the spec's, else the first linear one.")
@click.option("--groups", default="", help="Class groups JSON {\"group\": [ids]} for non-AVA label maps. Default: AVA groups / the store's.")
@click.option("--jobs", default=1, help="Runs trained at once (process pool); raise it on a GPU with room.")
@click.option("--top-k", default=20, help="Classes per per-class gain plot (largest absolute gains).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def ablate_cli(**kw):
    """Train every configuration x seed of an ablation spec on one store pair and write results.csv,
    results.md (mean ± std over seeds, per class group, grid), gain_*.png and spec.json. Finished runs
    are skipped on a rerun."""
    from stagecache.pipelines.ablation.sweep import AblateArgs, ablate

    train = parse_head_args(kw["train_args"])
    for key in ("epochs", "batch_size", "lr", "device"):
        if kw[key] is not None:
            train[key] = kw[key]
    try:
        args = AblateArgs(
            train_store=kw["train_store"], val_store=kw["val_store"], out=kw["out"], preset=kw["preset"],
            spec_file=kw["spec_file"], heads=list(kw["heads"]), head_args=parse_head_args(kw["head_args"]),
            grid=_grid(kw["grid"]), seeds=_seeds(kw["seeds"]), train=train, baseline=kw["baseline"],
            groups=kw["groups"], jobs=kw["jobs"], top_k=kw["top_k"], progress=not kw["no_progress"],
            command_line=shlex.join(sys.argv),
        )
        result = ablate(args, echo=lambda m: click.echo(m, err=True))
    except UserError:  # the CLI's one error path prints it (pipelines/commands/cli.py)
        raise
    except (ValueError, FileExistsError) as e:
        raise click.UsageError(str(e)) from None
    click.echo(f"results: {result['out'] / 'results.md'}")
    if any(s.startswith("failed") for s in result["status"].values()):
        sys.exit(1)
