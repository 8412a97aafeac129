"""Commands for the offline encoder: train-encoder, eval-encoder."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from picscope.cli.app import app
from picscope.cli.console import err, out


@app.command("train-encoder")
def train_encoder(
    out_dir: Annotated[Path, typer.Option("--out", help="folder for the weights")] = Path("bundled-encoder"),
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    epochs: Annotated[int, typer.Option(help="maximum epochs per head (early stopping on dev)")] = 60,
    members: Annotated[int, typer.Option(help="heads in the ensemble (seeds SEED, SEED+1, ...)")] = 4,
) -> None:
    """Train the `bundled` encoder from Flickr8k train (early stopping on dev); prints the dev evaluation."""
    from dataclasses import replace

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from picscope.training.recipe import RecipeConfig, run_recipe

    base = RecipeConfig()
    cfg = replace(base, members=members, train=replace(base.train, seed=seed, epochs=epochs))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True) as progress:

        def bar(description: str, total: int) -> Callable[[int], None]:
            task = progress.add_task(description, total=total)
            return lambda n: progress.advance(task, n)

        summary = run_recipe(out_dir, cfg, log=lambda m: progress.console.print(m, highlight=False), bar=bar)
    rows = {"bundled (trained)": summary["dev"], **summary["ablation_dev"],
            "labels (zero-shot baseline)": summary["labels_baseline_dev"]}
    _print_metrics(rows)
    out.print(f"wrote {out_dir} in {summary['seconds']:.0f} s; use it with --encoder bundled:{out_dir}")


@app.command("eval-encoder")
def eval_encoder(
    encoders: Annotated[list[str] | None, typer.Option("--encoder", help="encoder spec(s); repeatable")] = None,
    split: Annotated[str, typer.Option(help="Flickr8k split: dev or train")] = "dev",
    limit: Annotated[int | None, typer.Option(help="only the first N images")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Evaluate encoders on Flickr8k through their real image/text paths (default: bundled vs labels)."""
    from picscope.training.evaluate import evaluate_encoder

    specs = encoders or ["bundled", "labels"]
    results = {spec: evaluate_encoder(spec, split, limit) for spec in specs}
    if as_json:
        out.print_json(json.dumps(results))
        return
    _print_metrics(results)


def _print_metrics(results: dict[str, dict[str, float]]) -> None:
    table = Table(title="Flickr8k text→image (5 captions per image) and image→text")
    cols = ["t2i_r@1", "t2i_r@5", "t2i_r@10", "t2i_median_rank", "i2t_r@1", "i2t_r@5", "i2t_r@10"]
    heads = ["T→I R@1", "R@5", "R@10", "MedR", "I→T R@1", "R@5", "R@10"]
    table.add_column("encoder", no_wrap=True)
    for h in heads:
        table.add_column(h, justify="right")
    for name, m in results.items():
        table.add_row(name, *(f"{float(m[c]):.1f}" for c in cols))
    out.print(table)


@app.command("train-codec")
def train_codec(
    out_file: Annotated[Path, typer.Option("--out", help="codec file to write")] = Path("bundled-codec.npz"),
    encoder: Annotated[str, typer.Option(help="encoder spec (its vectors are what the codec compresses)")] = "bundled",
    scan_dim: Annotated[int, typer.Option(help="float32 numbers per photo that every search scans")] = 64,
    fine: Annotated[str, typer.Option(help="fine numbers as NUMBERSxBITS segments (bits 8, 4, 2 or 1), most important "
                                          "first; or a plain number of int8 numbers (codec format 1)")
                    ] = "384x8,896x4,768x2",
    rescore: Annotated[int, typer.Option(help="candidates re-scored per query")] = 1024,
    image_query_share: Annotated[float, typer.Option(help="weight of photos (vs captions) among the queries the "
                                                          "codec is fitted to")] = 0.0,
) -> None:
    """Fit the compact vector codec on Flickr8k train (photos + captions); print dev recall and agreement. The
    defaults reproduce the shipped codec (written as shipped: float16 matrices, int8 rows for the numbers stored at
    4 bits or fewer, the query matrix in a second file)."""
    from picscope.training.codec import CodecRecipe, parse_segments, train_codec_for

    try:
        segments = parse_segments(fine)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--fine") from None
    recipe = CodecRecipe(scan_dim=scan_dim, fine_dim=sum(n for n, _ in segments) if segments else int(fine),
                         rescore=rescore, image_query_share=image_query_share, fine_segments=segments)
    with err.status("embedding Flickr8k train and dev (cached after the first run) and fitting the codec…"):
        codec, report = train_codec_for(encoder, recipe)
    files = codec.save(out_file, matrix_bits=16, split=True, int8_from=recipe.int8_from)
    table = Table(title=f"{codec.name}: {codec.bytes_per_vector:,} bytes per photo (full vectors: {codec.dim * 4:,})")
    for col in ("vectors", "T→I R@1", "R@5", "R@10", "top-10 agreement with full vectors"):
        table.add_column(col, justify="right" if col != "vectors" else "left")
    for name, row in report.items():
        table.add_row(name, *(f"{row[c]:.3f}" if c == "agreement" else f"{row[c]:.2f}"
                              for c in ("r1", "r5", "r10", "agreement")))
    out.print(table)
    out.print(f"wrote {', '.join(map(str, files))}")


@app.command("train-querybank")
def train_querybank_cmd(
    out_file: Annotated[Path, typer.Option("--out", help="bank file to write (the shipped one is "
                                           "src/picscope/encoders/weights/bundled-v2-querybank.npz)")]
    = Path("bundled-v2-querybank.npz"),
    size: Annotated[int, typer.Option(help="Flickr8k train captions in the bank")] = 5000,
    rank: Annotated[int, typer.Option(help="rank of the stored factorisation")] = 128,
    beta: Annotated[float, typer.Option(help="softmax temperature of the normaliser")] = 20.0,
    seed: Annotated[int, typer.Option(help="which captions are drawn")] = 0,
) -> None:
    """Build the bundled encoder's query bank from Flickr8k train captions; print dev recall with and without."""
    from picscope.training.querybank import BankRecipe, train_querybank

    recipe = BankRecipe(size=size, rank=rank, beta=beta, seed=seed)
    bank, report = train_querybank(out_file, recipe, log=lambda m: err.print(m, markup=False, highlight=False))
    table = Table(title=f"{bank.name}: Flickr8k dev text→image, captions 1–4 (the 5th: tuning)")
    for col in ("ranking", "R@1", "R@5", "R@10", "5th captions R@1"):
        table.add_column(col, justify="left" if col == "ranking" else "right")
    for name, row in report.items():
        table.add_row(name, *(f"{row[c]:.1f}" for c in ("R@1", "R@5", "R@10", "tune R@1")))
    out.print(table)
    out.print(f"wrote {out_file}")


@app.command("train-verifier")
def train_verifier_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="folder for verifier-v1.npz/.json (the shipped files live "
                                                         "in src/picscope/models/weights)")] = Path("verifier"),
    epochs: Annotated[int, typer.Option(help="passes over the Flickr8k train captions")] = 5,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    threads: Annotated[int, typer.Option(help="torch threads")] = 1,
    max_minutes: Annotated[float | None, typer.Option(help="stop training after this many minutes")] = None,
) -> None:
    """Train the bundled image–text matching verifier on Flickr8k train (needs the `train` extra); report dev."""
    from picscope.training.verifier import VerifierConfig, run_recipe

    cfg = VerifierConfig(epochs=epochs, seed=seed, threads=threads)
    meta = run_recipe(cfg, out_dir, log=lambda m: err.print(m, markup=False, highlight=False),
                      max_minutes=max_minutes)
    table = Table(title=f"verifier on Flickr8k dev captions 1–4, re-ranking the encoder's top 20 "
                        f"(fusion weight {meta['fusion_weight']}, chosen on the 5th captions)")
    for col in ("ranking", "R@1", "R@5", "R@10"):
        table.add_column(col, justify="left" if col == "ranking" else "right")
    for name in ("encoder", "verifier alone", "fused"):
        row = meta["dev_report"][name]
        table.add_row(name, *(f"{row[k]:.1f}" for k in ("R@1", "R@5", "R@10")))
    out.print(table)
    out.print(f"re-rank ceiling (gold photo in the top 20): {meta['dev_report']['ceiling']['R@20']:.1f}%")
    out.print(f"wrote {out_dir}/verifier-v1.npz and .json")
