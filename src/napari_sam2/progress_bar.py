"""The command line's progress display on stderr, drawn by tqdm: downloads (in MB) and segmentations (in frames)."""

from __future__ import annotations

import sys

from tqdm import tqdm


class TextProgressBar:
    """A `progress(done, total)` callable: tqdm's redrawn bar on a terminal, a line per 10 % elsewhere (logs, CI).

    Use it for a download (bytes, shown in MB) or a segmentation (``unit="frames"``: counts shown as they are),
    then call `close()`.
    """

    def __init__(self, label: str, stream=None, width: int = 30, unit: str = "MB"):
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self._scale = 1e-6 if unit == "MB" else 1
        n, total = ("{n:.1f}", "{total:.1f}") if unit == "MB" else ("{n}", "{total}")
        self._format = f"{{desc}}  [{{bar:{width}}}] {n}/{total} {unit} {{percentage:3.0f}}%"
        self._format_no_total = f"{{desc}}  {n} {unit}"
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar: tqdm | None = None
        self._last_tenth = -1
        self._state: tuple[int, int | None] | None = None

    def __call__(self, done: int, total: int | None) -> None:
        self._state = (done, total)
        if self._tty:
            self._draw(done, total)
        elif total:
            tenth = done * 10 // total
            if tenth != self._last_tenth:
                self._last_tenth = tenth
                self._write_line(done, total)

    def close(self) -> None:
        """End the display: tqdm's final line on a terminal, or the size reached when no total was known."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._state is not None and not self._tty and not self._state[1]:
            self._write_line(*self._state)
        self.stream.flush()

    def _draw(self, done: int, total: int | None) -> None:
        scaled_total = total * self._scale if total else None
        if self._bar is None:
            self._bar = tqdm(
                total=scaled_total, desc=self.label, file=self.stream, ascii=".#", mininterval=0.1, leave=True,
                bar_format=self._format if total else self._format_no_total,
            )
        elif self._bar.total != scaled_total:
            self._bar.total = scaled_total
            self._bar.bar_format = self._format if total else self._format_no_total
        self._bar.update(done * self._scale - self._bar.n)
        if total and done >= total:
            self._bar.refresh()

    def _write_line(self, done: int, total: int | None) -> None:
        line = tqdm.format_meter(
            done * self._scale, total * self._scale if total else None, 0, prefix=self.label, ascii=".#",
            bar_format=self._format if total else self._format_no_total,
        )
        self.stream.write(line + "\n")
        self.stream.flush()
