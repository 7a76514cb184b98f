"""Progress bars for long stages (tqdm on stderr; silent when disabled)."""

from __future__ import annotations

from typing import Callable


def progress_factory(enabled: bool) -> Callable[[str, int], Callable[[int], None]] | None:
    """Returns ``start(description, total) -> advance(n)``, or None when disabled."""
    if not enabled:
        return None
    from tqdm import tqdm

    def start(description: str, total: int) -> Callable[[int], None]:
        bar = tqdm(total=total, desc=description, unit="file", leave=False, mininterval=0.5, dynamic_ncols=True)

        def advance(count: int) -> None:
            bar.update(count)
            if bar.n >= bar.total:
                bar.close()

        if total == 0:
            bar.close()
        return advance

    return start
