"""Progress bars: tqdm when it is installed (optional extra), else a tiny one-line fallback with the same basic API."""
import os
import sys
import time

__all__ = ["progress", "SimpleProgress", "progress_disabled"]


def progress_disabled():
    """True when the environment variable MINICNN_NO_PROGRESS asks for no bars (any value but '', '0', 'false', 'no')."""
    value = os.environ.get("MINICNN_NO_PROGRESS", "").strip().lower()
    return value not in ("", "0", "false", "no")


def _format_count(n, unit_scale):
    if not unit_scale:
        return str(int(n)) if float(n).is_integer() else f"{n:.1f}"
    for prefix in ("", "k", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.0f}{prefix}" if prefix == "" else f"{n:.1f}{prefix}"
        n /= 1000.0
    return f"{n:.1f}P"


def _format_time(seconds):
    seconds = int(seconds)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


class SimpleProgress:
    """Built-in fallback bar: redraws one line on stderr with '\\r', at most 5 times a second.

    Supports iteration, update(n), set_postfix_str(s), close() and `with`. `initial`: the count it starts
    from (work done before the bar's clock started); the rate counts only what comes after it, as tqdm's does.
    """

    min_interval = 0.2  # seconds between redraws

    def __init__(self, iterable=None, total=None, desc=None, unit="it", unit_scale=False,
                 leave=True, disable=False, file=None, initial=0):
        if total is None and iterable is not None:
            try:
                total = len(iterable)
            except TypeError:
                total = None
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.unit = unit
        self.unit_scale = unit_scale
        self.leave = leave
        self.disable = disable
        self.file = file
        self.n = self.initial = initial
        self.postfix = ""
        self.start_time = time.monotonic()
        self._last_draw = None
        self._last_len = 0
        self.closed = False

    def _out(self):
        return self.file if self.file is not None else sys.stderr

    def format_line(self):
        """The text of the bar: 'desc: count/total [pct%] rate unit/s elapsed, postfix'."""
        elapsed = time.monotonic() - self.start_time
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0.0
        parts = []
        if self.desc:
            parts.append(f"{self.desc}:")
        count = _format_count(self.n, self.unit_scale)
        if self.total:
            parts.append(f"{count}/{_format_count(self.total, self.unit_scale)}")
            parts.append(f"{100.0 * self.n / self.total:3.0f}%")
        else:
            parts.append(count)
        rate_text = _format_count(rate, True) if self.unit_scale else f"{rate:.1f}"
        parts.append(f"{rate_text}{self.unit}/s")
        parts.append(_format_time(elapsed))
        line = " ".join(parts)
        if self.postfix:
            line += f", {self.postfix}"
        return line

    def _draw(self, force=False):
        if self.disable:
            return
        now = time.monotonic()
        if not force and self._last_draw is not None and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        line = self.format_line()
        pad = " " * max(0, self._last_len - len(line))
        self._last_len = len(line)
        out = self._out()
        out.write("\r" + line + pad)
        out.flush()

    def update(self, n=1):
        self.n += n
        self._draw()

    def set_postfix_str(self, s="", refresh=True):
        self.postfix = str(s)
        if refresh:
            self._draw()

    def close(self):
        if self.closed:
            return
        self.closed = True
        if self.disable:
            return
        out = self._out()
        if self.leave:
            self._draw(force=True)
            out.write("\n")
        else:
            out.write("\r" + " " * self._last_len + "\r")
        out.flush()

    def __iter__(self):
        if self.iterable is None:
            raise TypeError("this progress bar was created without an iterable; use update(n) instead")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self):
        if self.total is None:
            raise TypeError("this progress bar has no known total")
        return int(self.total)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def progress(iterable=None, total=None, desc=None, unit="it", unit_scale=False, leave=True,
             disable=False, file=None, initial=0):
    """A progress bar over `iterable` (or driven by update(n)): tqdm if installed, else SimpleProgress.

    initial: the count already done when the bar starts; its clock starts now, so rate and time left
    count only the work after it (a bar created after a slow first step shows no ETA skewed by it).
    MINICNN_NO_PROGRESS=1 in the environment disables every bar.
    """
    disable = bool(disable) or progress_disabled()
    kwargs = dict(total=total, desc=desc, unit=unit, unit_scale=unit_scale, leave=leave,
                  disable=disable, file=file, initial=initial)
    try:
        from tqdm import tqdm
    except ImportError:
        return SimpleProgress(iterable, **kwargs)
    return tqdm(iterable, **kwargs)
