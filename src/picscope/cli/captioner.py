"""Commands for the `bundled` captioner: train-captioner, eval-captioner."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from picscope.cli.app import app
from picscope.cli.console import err, out


@app.command("train-captioner")
def train_captioner_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the weights (captioner-v1.npz, .sha256, "
                                                         "training summary)")] = Path("bundled-captioner"),
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    epochs: Annotated[int, typer.Option(help="epochs (the best by the loss on dev photos 0–499 is kept)")] = 5,
    max_minutes: Annotated[float, typer.Option(help="stop after the epoch that passes this many minutes")] = 40.0,
) -> None:
    """Train the `bundled` captioner on Flickr8k train (one CPU thread); `--out src/picscope/models/weights`
    reproduces the shipped file."""
    from dataclasses import replace

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from picscope.models.captioner import WEIGHTS_NAME
    from picscope.training.captioner import DEV_STOP, CaptionerRecipe, save_weights, train_captioner
    from picscope.training.data import flickr8k
    from picscope.training.grid import image_grids

    if epochs < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--epochs")
    train, dev = flickr8k("train"), flickr8k("dev")
    recipe = replace(CaptionerRecipe(), seed=seed, epochs=epochs, max_minutes=max_minutes)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True) as progress:

        def bar(description: str, total: int) -> Callable[[int], None]:
            task = progress.add_task(description, total=total)
            return lambda n: progress.advance(task, n)

        log = lambda m: progress.console.print(m, highlight=False)  # noqa: E731
        paths = train.paths + dev.paths  # exactly this list: the cells are cached under its hash
        grids = image_grids(paths, progress=bar("image cells (once)", len(paths)))
        n = len(train.paths)
        arrays, summary = train_captioner(grids[:n], train.captions, grids[n : n + DEV_STOP], dev.captions[:DEV_STOP],
                                          recipe, log=log, bar=bar)
    digest = save_weights(arrays, out_dir / WEIGHTS_NAME)
    summary["sha256"] = digest
    summary["recipe"] = json.loads(json.dumps(recipe, default=lambda o: o.__dict__))
    (out_dir / WEIGHTS_NAME.replace(".npz", "-training.json")).write_text(json.dumps(summary, indent=2) + "\n")
    out.print(f"wrote {out_dir / WEIGHTS_NAME} ({(out_dir / WEIGHTS_NAME).stat().st_size / 1e6:.1f} MB, best epoch "
              f"{summary['best_epoch']}, {summary['minutes']:.0f} min); evaluate it with "
              f"`picscope eval-captioner --weights {out_dir / WEIGHTS_NAME}`")


@app.command("eval-captioner")
def eval_captioner_cmd(
    weights: Annotated[Path | None, typer.Option(help="a captioner-v1.npz (default: the shipped one)")] = None,
    limit: Annotated[int | None, typer.Option(help="only the first N dev photos")] = None,
    beam: Annotated[int, typer.Option(help="beam width")] = 3,
    samples: Annotated[int, typer.Option(help="also print this many random dev photos' captions")] = 0,
    speed_photos: Annotated[int, typer.Option(help="dev photos timed for the speed figure (0: no timing)")] = 64,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """BLEU-4 and CIDEr-D on Flickr8k dev (5 human captions each) for the captioner and the nearest-neighbour
    baseline (a caption of the closest train photo by the bundled encoder)."""
    from picscope.training.caption_eval import evaluate_captioner

    if beam < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--beam")
    if speed_photos < 0:
        raise typer.BadParameter("must be 0 or more", param_hint="--speed-photos")
    report = evaluate_captioner(weights, limit=limit, beam=beam, samples=samples, speed_photos=speed_photos)
    if as_json:
        out.print_json(json.dumps(report))
        return
    for part, title in (("all", "all dev photos"), ("held_out", "dev photos 500–999 (never seen in training)")):
        rows = report["scores"][part]
        if not rows:
            continue
        table = Table(title=f"Flickr8k dev captions: {title}, {rows['photos']} photos")
        table.add_column("captioner", no_wrap=True)
        for h in ("BLEU-1", "BLEU-4", "CIDEr-D", "words/caption"):
            table.add_column(h, justify="right")
        for name in ("model", "baseline"):
            m = rows[name]
            table.add_row(report["names"][name], f"{m['bleu1']:.3f}", f"{m['bleu4']:.3f}", f"{m['cider']:.3f}",
                          f"{m['words']:.1f}")
        out.print(table)
    speed = report["speed"]
    if speed:
        out.print(f"speed: {speed['captions_per_s']:.1f} captions/s from decoded photos ({speed['grid_ms']:.1f} ms "
                  f"cells + {speed['decode_ms']:.1f} ms beam search per photo; {speed['photos']} photos, "
                  f"{speed['threads']} CPUs, load average {speed['load_before']:.1f})")
    for row in report["samples"]:
        out.print(f"{row['image']}: model: {row['model']} | human: {row['human']} | baseline: {row['baseline']}")
