"""Commands: `picscope eval DATASET_DIR --out REPORT_DIR ...` and `picscope dataset KIND OUT` builders."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from picscope.cli.app import app, command_group
from picscope.cli.console import err, out
from picscope.config import PipelineConfig

if TYPE_CHECKING:
    from collections.abc import Callable

dataset_app = command_group("dataset", "Build evaluation datasets (folder format: images/ + queries.jsonl).")


@app.command("eval")
def eval_cmd(
    dataset: Annotated[Path, typer.Argument(help="dataset folder: images/ + queries.jsonl")],
    out_dir: Annotated[Path, typer.Option("--out", help="report folder")],
    encoder: Annotated[str | None, typer.Option(help="encoder spec (default: the default encoder)")] = None,
    pipeline: Annotated[str, typer.Option(help="encoder (plain dual-encoder search), imagescope, or a TOML file "
                                          "with a [pipeline] table (imagescope with that configuration)")] = "encoder",
    max_calls: Annotated[int | None, typer.Option(help="imagescope: model-call budget per query")] = None,
    stages: Annotated[str | None, typer.Option(help="imagescope stages, e.g. 1,2,3 or 1-2")] = None,
    llm: Annotated[str | None, typer.Option(help="imagescope: chat model spec, or 'rules' (no LLM)")] = None,
    vision: Annotated[str | None, typer.Option(help="imagescope: vision model spec")] = None,
    limit: Annotated[int | None, typer.Option(help="evaluate N queries (seeded sample)")] = None,
    seed: Annotated[int, typer.Option(help="seed for sampling and simulated users")] = 0,
    feedback: Annotated[str | None, typer.Option(help="none | rocchio (interactive rounds)")] = None,
    rounds: Annotated[int, typer.Option(help="feedback rounds after the first page")] = 3,
    user: Annotated[str, typer.Option(help="simulated user: oracle | noisy | budgeted")] = "oracle",
    page_size: Annotated[int, typer.Option(help="images shown per round")] = 10,
    max_seconds: Annotated[float | None, typer.Option(help="time budget for the whole run")] = None,
) -> None:
    """Evaluate retrieval on a dataset folder; writes metrics.json, per_query.json, report.md and plots."""
    from picscope.eval.report import write_report
    from picscope.eval.runner import RunConfig, run
    from picscope.pipeline import parse_stages

    pipeline, pcfg = _pipeline_choice(pipeline, llm, max_calls)
    cfg = RunConfig(
        encoder=encoder, pipeline=pipeline, stages=parse_stages(stages) if stages else None,
        llm=None if llm == "rules" else llm, vision=vision, pipeline_config=pcfg, limit=limit, seed=seed,
        feedback=feedback, rounds=rounds, user=user, page_size=page_size, max_seconds=max_seconds,
    )
    with Progress(
        TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err
    ) as bar:
        task = bar.add_task("eval", total=None)
        result = run(dataset, cfg, progress=lambda n, total: bar.update(task, completed=n, total=total))
    files = write_report(result, out_dir)
    _print_metrics(result.metrics, imagescope=pipeline == "imagescope")
    out.print(f"report: {', '.join(str(f) for f in files)}")


def _pipeline_choice(pipeline: str, llm: str | None, max_calls: int | None) -> tuple[str, PipelineConfig | None]:
    """The pipeline name and its configuration: from a TOML file given as --pipeline, --llm rules, --max-calls."""
    pcfg: PipelineConfig | None = None
    if pipeline not in ("encoder", "imagescope"):
        pcfg = load_pipeline_config(Path(pipeline))
        pipeline = "imagescope"
    if llm == "rules":
        pcfg = (pcfg or PipelineConfig()).model_copy(update={"reasoner": "rules"})
    if max_calls is not None:
        pcfg = (pcfg or PipelineConfig()).model_copy(update={"max_model_calls": max_calls})
    return pipeline, pcfg


def _print_metrics(m: dict[str, Any], *, imagescope: bool) -> None:
    out.print(
        f"{m['queries']} queries: R@1 {100 * m['recall@1']:.1f}  R@5 {100 * m['recall@5']:.1f}  "
        f"R@10 {100 * m['recall@10']:.1f}  hits@10 {100 * m['hits@10']:.1f}  MRR {m['mrr']:.3f}  "
        f"median rank {m['median_rank']:.0f}"
    )
    if imagescope:
        out.print(f"cost per query: {m['model_calls_per_query']:.1f} model calls, {m['tokens_per_query']:.0f} tokens, "
                  f"{m.get('seconds_p50', 0):.2f} s p50 / {m.get('seconds_p95', 0):.2f} s p95")
    if "rounds" in m:
        out.print("recall over shown images per round: " + "  ".join(f"{100 * r['recall']:.1f}" for r in m["rounds"]))


def load_pipeline_config(path: Path) -> PipelineConfig:
    """A pipeline configuration file: a TOML file with a [pipeline] table (or the table's keys at top level)."""
    import tomllib

    from picscope.errors import ConfigError

    if not path.is_file():
        raise ConfigError(f"--pipeline {path}: use encoder, imagescope, or a TOML file with a [pipeline] table")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return PipelineConfig.model_validate(data.get("pipeline", data))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a valid pipeline configuration: {exc}") from exc


@dataset_app.command("flickr8k")
def ds_flickr8k(
    out_dir: Path, split: str = "dev", limit: Annotated[int | None, typer.Option(help="first N images")] = None
) -> None:
    """Flickr8k text→image (from the shared data; images are symlinked)."""
    from picscope.eval.builders import build_flickr8k

    out.print(f"wrote {build_flickr8k(out_dir, split, limit)}")


@dataset_app.command("msrvtt-frames")
def ds_msrvtt(out_dir: Path) -> None:
    """MSR-VTT 1k-A frames (subset): multi-positive, all frames of a clip are relevant."""
    from picscope.eval.builders import build_msrvtt_frames

    out.print(f"wrote {build_msrvtt_frames(out_dir)}")


@dataset_app.command("caption-dialog")
def ds_dialog(out_dir: Path, split: str = "dev", limit: int | None = None) -> None:
    """caption-as-dialog (Flickr8k): round r adds the image's r-th extra caption."""
    from picscope.eval.builders import build_caption_dialog

    out.print(f"wrote {build_caption_dialog(out_dir, split, limit)}")


@dataset_app.command("templated-cir")
def ds_cir(out_dir: Path, split: str = "dev", limit: int | None = None) -> None:
    """templated CIR (Flickr8k-derived): reference image + templated change → target."""
    from picscope.eval.builders import build_templated_cir

    out.print(f"wrote {build_templated_cir(out_dir, split, limit)}")


@dataset_app.command("from-video")
def ds_video(
    videos: Annotated[Path, typer.Argument(help="folder of <video_id>.mp4 files")],
    captions: Annotated[Path, typer.Argument(help="MSRVTT_JSFUSION_test.csv or MSRVTT_data.json")],
    out_dir: Annotated[Path, typer.Argument(help="dataset folder to write")],
    mode: Annotated[str, typer.Option(help="uniform | shots")] = "uniform",
    n: Annotated[int, typer.Option(help="frames per clip (uniform)")] = 8,
    shot_threshold: Annotated[float, typer.Option(help="histogram change that starts a new shot")] = 0.3,
    dedup: Annotated[int, typer.Option(help="drop frames within this many dHash bits of a kept one; -1 = off")] = 4,
) -> None:
    """Videos → frames → multi-positive queries (the interactive-retrieval paper's MSR-VTT recipe)."""
    from picscope.eval.video import build_from_videos

    stats = build_from_videos(
        videos, captions, out_dir, mode=mode, n=n, shot_threshold=shot_threshold, dedup_distance=dedup
    )
    out.print(
        f"wrote {out_dir}: {stats.videos} clips, {stats.frames_kept} frames kept of {stats.frames_sampled} sampled "
        f"({stats.duplicates_removed} near-duplicates removed)"
    )


@dataset_app.command("convert")
def ds_convert(
    kind: Annotated[str, typer.Argument(help="karpathy | hf-csv | cirr | circo | fashioniq | visdial")],
    files: Annotated[
        list[Path], typer.Argument(help="annotation file(s) then the image root, as in `docs/evaluation.md`")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="dataset folder to write")],
    split: Annotated[str, typer.Option(help="Karpathy split")] = "test",
) -> None:
    """Convert a public benchmark from your local copy into a dataset folder (images are symlinked)."""
    from picscope.eval import public

    # each benchmark: how many paths it takes, its converter, and what follows the output folder
    converters: dict[str, tuple[int, Callable[..., object], tuple[object, ...]]] = {
        "karpathy": (2, public.karpathy, (split,)),
        "hf-csv": (2, public.hf_retrieval_csv, ()),
        "cirr": (3, public.cirr, ()),
        "circo": (2, public.circo, ()),
        "fashioniq": (3, public.fashioniq, ()),
        "visdial": (3, public.visdial, ()),
    }
    if kind not in converters:
        raise typer.BadParameter(f"unknown benchmark {kind!r}")
    count, convert, extra = converters[kind]
    if len(files) != count:
        raise typer.BadParameter(f"{kind} needs {count} paths, got {len(files)}")
    convert(*files, out_dir, *extra)
    out.print(f"wrote {out_dir}")
