"""Reports people can read: metrics.json, per_query.json, report.md (tables with the metric definitions) and
PNG plots (recall@K vs K; recall vs feedback round; cumulative hits per dialogue round)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from picscope.eval import metrics as M
from picscope.eval.runner import KS, RunResult


def write_report(result: RunResult, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    m = result.metrics
    (out / "metrics.json").write_text(json.dumps(m, indent=2) + "\n")
    (out / "per_query.json").write_text(json.dumps(result.per_query, indent=2) + "\n")
    lines = [
        f"# Evaluation: {Path(m['dataset']).name}",
        "",
        f"Gallery {m['gallery']} images, {m['queries']} queries, {m['relevant_per_query']:.2f} relevant images per "
        f"query on average; encoder `{m['encoder']}`, pipeline `{m['pipeline']}`, seed {m['seed']}.",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for k in KS:
        lines.append(f"| recall@{k} | {100 * m[f'recall@{k}']:.2f} |")
    for key in ("hits@10", "map@10", "ndcg@10"):
        lines.append(f"| {key} | {100 * m[key]:.2f} |")
    lines += [
        f"| MRR | {m['mrr']:.4f} |",
        f"| median rank | {m['median_rank']:.1f} |",
        f"| seconds per query | {m['seconds_per_query']:.4f} |",
        f"| model calls per query | {m['model_calls_per_query']:.2f} |",
    ]
    if "dialog_hits@10" in m:
        lines += ["", "## Dialogue: cumulative hits@10 per round", "", "| round | hits@10 |", "|---|---|"]
        lines += [f"| {i} | {100 * v:.2f} |" for i, v in enumerate(m["dialog_hits@10"])]
    if "rounds" in m:
        lines += [
            "",
            f"## Feedback `{m['feedback']}` with the `{m['user']}` user, {m['page_size']} images per page",
            "",
            "Recall here = share of each query's relevant images among all images shown so far (round 0 is the first "
            "page, before any feedback; every later page shows only unseen images).",
            "",
            "| round | images shown | recall | hits |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['round']} | {r['shown']} | {100 * r['recall']:.2f} | {100 * r['hits']:.2f} |" for r in m["rounds"]
        ]
    if "per_stage" in m:
        lines += ["", "## Per stage (the same run's candidates, ordered after each stage)", "",
                  "| after stage | recall@1 | recall@5 | recall@10 |", "|---|---|---|---|"]
        lines += [f"| {s} | {100 * v['recall@1']:.2f} | {100 * v['recall@5']:.2f} | {100 * v['recall@10']:.2f} |"
                  for s, v in m["per_stage"].items()]
    if m.get("stopped_early"):
        lines += ["", "**Stopped early: the time budget ran out; the numbers cover the queries run.**"]
    lines += ["", "## Definitions", "", *_definitions()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return [out / "metrics.json", out / "per_query.json", out / "report.md", *_plots(result, out)]


def _definitions() -> list[str]:
    """The bullet list in `picscope.eval.metrics`' docstring, continuation lines joined."""
    items: list[str] = []
    for line in (M.__doc__ or "").splitlines():
        if line.startswith("- "):
            items.append(line)
        elif items and line.startswith("  "):
            items[-1] += " " + line.strip()
    return items


def _save(fig: Any, path: Path, written: list[Path]) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)


def _plots(result: RunResult, out: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional: the numbers are in the JSON and Markdown
        return []
    m: dict[str, Any] = result.metrics
    written: list[Path] = []
    ax = _line_plot(plt, list(KS), [100 * m[f"recall@{k}"] for k in KS], "K", "recall@K (%)")
    ax.set_xscale("log")
    ax.set_title(f"{Path(m['dataset']).name}: recall@K")
    _save(ax.figure, out / "recall_at_k.png", written)
    if "rounds" in m:
        ax = _line_plot(plt, [r["round"] for r in m["rounds"]], [100 * r["recall"] for r in m["rounds"]],
                        "feedback round", "recall over shown images (%)")
        ax.set_title(f"feedback {m['feedback']}, {m['user']} user")
        _save(ax.figure, out / "recall_per_round.png", written)
    if "per_stage" in m:
        stages = list(m["per_stage"])
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for j, k in enumerate((1, 5, 10)):
            ax.bar([i + (j - 1) * 0.27 for i in range(len(stages))],
                   [100 * m["per_stage"][s][f"recall@{k}"] for s in stages], 0.27, label=f"recall@{k}")
        ax.set_xticks(range(len(stages)), [f"after stage {s}" for s in stages])
        ax.set_ylabel("%")
        ax.set_title("per-stage recall")
        ax.legend(fontsize=8)
        _save(fig, out / "per_stage.png", written)
    if "dialog_hits@10" in m:
        ax = _line_plot(plt, range(len(m["dialog_hits@10"])), [100 * v for v in m["dialog_hits@10"]],
                        "dialogue round", "cumulative hits@10 (%)")
        _save(ax.figure, out / "dialog_hits.png", written)
    return written


def _line_plot(plt: Any, x: Any, y: list[float], xlabel: str, ylabel: str) -> Any:
    """A small line chart with markers and a light grid; returns its axes."""
    _, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(x, y, marker="o")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return ax
