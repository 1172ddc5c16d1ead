"""The progress display of put, get, restore, verify and gc: a rich progress bar on stderr
(rate, time left, redrawn to the terminal's width), shown only when stderr is a terminal,
so pipes, logs and scripts get nothing but the command's own output."""

from __future__ import annotations

import click

from .output import stdout_is_terminal, warning_line


class ProgressDisplay:
    """Shows how far a command is while it is used as a context manager; does nothing when
    disabled. counting is "bytes" (with rate) or what else is counted ("chunks")."""

    def __init__(self, enabled: bool, counting: str = "bytes"):
        self._progress = None
        self._done = 0
        if not enabled:
            return
        # rich takes ~0.1 s to import: only commands that draw a bar pay for it.
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        if counting == "bytes":
            amounts = [DownloadColumn(binary_units=True), TransferSpeedColumn()]
        else:
            amounts = [MofNCompleteColumn(), TextColumn(counting)]
        # No redirection of stdout: with `put -v | tee`, rich would send the file lines to stderr.
        self._progress = Progress(
            BarColumn(),
            TaskProgressColumn(),
            *amounts,
            TimeRemainingColumn(),
            TextColumn("{task.fields[detail]}"),
            console=Console(stderr=True),
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._task = self._progress.add_task("", total=None, detail="")

    def __enter__(self) -> ProgressDisplay:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *_exception) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, done: int, total: int | None = None, detail: str = "") -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total or None, detail=detail)

    def advance(self, count: int) -> None:
        """Count count more done (for work whose total is not known up front)."""
        self._done += count
        self.update(self._done)

    def warn(self, message: str) -> None:
        """A warning on stderr, printed above the bar while it is shown."""
        self._print(warning_line(message), err=True)

    def echo(self, line: str) -> None:
        """A line of the command's output on stdout, printed above the bar while it is shown."""
        self._print(line, err=False)

    def _print(self, line: str, err: bool) -> None:
        # While the bar is drawn, a line on the same terminal must go through rich, which
        # clears the bar, prints the line and redraws it below; stdout is that terminal
        # only when it is one too.
        if self._progress is not None and (err or stdout_is_terminal()):
            from rich.text import Text

            self._progress.console.print(Text(line), soft_wrap=True)
        else:
            click.echo(line, err=err)
