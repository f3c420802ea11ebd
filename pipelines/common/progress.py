"""Progress a person can see: a bar on a terminal, a line per instrument in a log.

On a terminal, tqdm's bar (as before). When stderr is not a terminal (make
piped to a file, CI, ``nohup``), the bar is off and one log line marks each
instrument done, with the time since the stage began, e.g.
``train GSPC: 6 forecasters, 12.3 s``, then one for the stage, e.g.
``train: 2 instruments, 24 units, 30.1 s``; a long stage is never silent
for longer than its slowest instrument.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Hashable, Iterable
from typing import IO, Any

from tqdm import tqdm

log = logging.getLogger("gatecast.progress")


class StageProgress:
    """Progress of one stage's units, grouped by instrument.

    Args:
        stage: The stage's name (``train``), first word of every line.
        units: (instrument, item) of every unit, e.g. ``("GSPC", "lstm")``;
            an instrument is done when all its units are, and its line counts
            its distinct items.
        noun: What an item is, plural (``forecasters``).
        unit: The bar's unit (``fit``).
        stream: Where the bar goes; its ``isatty`` decides bar or lines.
    """

    def __init__(
        self,
        stage: str,
        units: Iterable[tuple[str, Hashable]],
        noun: str,
        unit: str = "unit",
        stream: IO[str] | None = None,
    ) -> None:
        units = list(units)
        self.stage, self.noun = stage, noun
        self.remaining = Counter(instrument for instrument, _ in units)
        self.items = {i: len({item for inst, item in units if inst == i}) for i in self.remaining}
        self.total = len(units)
        stream = stream or sys.stderr
        self.lines = not (hasattr(stream, "isatty") and stream.isatty())
        self.bar = tqdm(total=self.total, desc=stage, unit=unit, disable=self.lines, file=stream)
        self.started = time.perf_counter()

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close(finished=exc[0] is None)

    def set_description(self, text: str, refresh: bool = True) -> None:
        self.bar.set_description(text, refresh=refresh)

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.bar.set_postfix_str(text, refresh=refresh)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def update(self, instrument: str | None = None) -> None:
        """One unit done (of ``instrument``: its line comes once its last unit is)."""
        self.bar.update()
        if instrument is None or instrument not in self.remaining:
            return
        self.remaining[instrument] -= 1
        if self.remaining[instrument] == 0 and self.lines:
            items = self.items[instrument]
            noun = self.noun if items != 1 else self.noun.removesuffix("s")
            log.info("%s %s: %d %s, %.1f s", self.stage, instrument, items, noun, self.elapsed())

    def close(self, finished: bool = True) -> None:
        self.bar.close()
        if finished and self.lines and self.total:
            log.info(
                "%s: %d instrument(s), %d units, %.1f s",
                self.stage,
                len(self.items),
                self.total,
                self.elapsed(),
            )
