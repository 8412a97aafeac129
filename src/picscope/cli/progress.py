"""The progress bar of `picscope index` (its own module: a search never loads the indexer or rich.progress)."""

from __future__ import annotations

from picscope.cli.console import err
from picscope.indexer import Progress


class RichIndexProgress(Progress):
    """A progress bar with count, rate and ETA, on stderr."""

    def __init__(self, label: str = "indexing") -> None:
        # imported here: rich.progress costs ~0.1 s, and only `index` draws a bar
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TaskID,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        self.label = label
        self.task: TaskID | None = None

    def start(self, total: int) -> None:
        if total == 0:
            return
        self.bar.start()
        self.task = self.bar.add_task(self.label, total=total, rate="")

    def advance(self, n: int = 1) -> None:
        if self.task is None:
            return
        self.bar.advance(self.task, n)
        speed = next(t.speed for t in self.bar.tasks if t.id == self.task)
        self.bar.update(self.task, rate=f"{speed:.1f} img/s" if speed else "")

    def finish(self) -> None:
        if self.task is not None:
            self.bar.stop()

    def stage(self, label: str) -> None:
        self.label, self.task = label, None
