"""Progress bars for long steps, in the rich style anomalib's CLI uses."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(
    description: str, total: int, progress: Callable[[int], None] | None = None
) -> Iterator[Callable[[int], None]]:
    """Yield a function that advances a progress bar by ``n`` steps.

    Args:
        description: what the step does.
        total: steps in all.
        progress: a callback of the caller's to use instead of a bar (e.g. its own bar, or a no-op).

    Yields:
        ``advance(n)``.
    """
    if progress is not None:
        yield progress
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
