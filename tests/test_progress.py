"""Tests of minicnn.progress: the built-in fallback bar, its redraw throttle, and MINICNN_NO_PROGRESS."""
import io
import sys

import pytest

import minicnn.progress as mp
from minicnn.progress import SimpleProgress, progress


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(mp.time, "monotonic", fake)
    return fake


@pytest.fixture
def no_tqdm(monkeypatch):
    monkeypatch.delenv("MINICNN_NO_PROGRESS", raising=False)
    monkeypatch.setitem(sys.modules, "tqdm", None)  # `from tqdm import tqdm` now raises ImportError


def test_fallback_is_used_without_tqdm_and_iterates(no_tqdm, clock):
    out = io.StringIO()
    bar = progress(range(5), desc="train", file=out)
    assert isinstance(bar, SimpleProgress)
    items = []
    for item in bar:
        items.append(item)
        clock.now += 0.5
    assert items == [0, 1, 2, 3, 4]
    last = out.getvalue().rstrip("\n").split("\r")[-1]
    assert last.startswith("train: 5/5 100%") and "2.0it/s" in last and "00:02" in last
    assert out.getvalue().endswith("\n")


def test_fallback_redraws_at_most_five_times_a_second(clock):
    out = io.StringIO()
    bar = SimpleProgress(total=1000, file=out)
    for _ in range(1000):
        bar.update(1)  # the clock does not move: only the first update draws
    assert out.getvalue().count("\r") == 1
    clock.now += 0.25
    bar.update(1)
    assert out.getvalue().count("\r") == 2


def test_fallback_update_postfix_units_and_context_manager(clock):
    out = io.StringIO()
    with SimpleProgress(total=2_000_000, unit="B", unit_scale=True, file=out) as bar:
        clock.now += 1.0
        bar.update(1_500_000)
        bar.set_postfix_str("loss=0.25")
    assert bar.closed
    last = out.getvalue().rstrip("\n").split("\r")[-1]
    assert last.startswith("1.5M/2.0M  75%") and "1.5MB/s" in last and last.endswith(", loss=0.25")


def test_fallback_without_total_and_leave_false_clears_the_line(clock):
    out = io.StringIO()
    bar = SimpleProgress(iter([1, 2]), leave=False, file=out)
    assert list(bar) == [1, 2]
    assert not out.getvalue().endswith("\n") and out.getvalue().endswith("\r")


def test_env_var_disables_bars(monkeypatch):
    monkeypatch.setenv("MINICNN_NO_PROGRESS", "1")
    out = io.StringIO()
    assert list(progress(range(3), file=out)) == [0, 1, 2]
    assert out.getvalue() == ""
    monkeypatch.setitem(sys.modules, "tqdm", None)
    bar = progress(range(3), file=out)
    bar.update(2)
    bar.close()
    assert out.getvalue() == ""


def test_tqdm_is_used_when_installed(monkeypatch):
    tqdm = pytest.importorskip("tqdm")
    monkeypatch.delenv("MINICNN_NO_PROGRESS", raising=False)
    bar = progress(total=3, file=io.StringIO())
    assert isinstance(bar, tqdm.tqdm)
    bar.close()


@pytest.mark.parametrize("use_tqdm", [False, True], ids=["fallback", "tqdm"])
def test_initial_counts_as_done_but_not_in_the_rate(monkeypatch, clock, use_tqdm):
    """A bar started after a slow first step (initial=1): it shows 1/5 done, and its rate is that of the
    steps after it (2 steps in 1 s), not 3 steps over the time since the run began."""
    monkeypatch.delenv("MINICNN_NO_PROGRESS", raising=False)
    if use_tqdm:
        tqdm = pytest.importorskip("tqdm")
        monkeypatch.setattr(tqdm.std, "time", clock)  # the clock a new tqdm bar reads
    else:
        monkeypatch.setitem(sys.modules, "tqdm", None)
    out = io.StringIO()
    bar = progress(total=5, initial=1, file=out, unit="batch")
    assert bar.n == 1
    clock.now += 1.0
    bar.update(2)
    text = str(bar) if use_tqdm else bar.format_line()
    assert text.startswith(" 60%|") if use_tqdm else text.startswith("3/5  60%")
    assert ("2.00batch/s" if use_tqdm else "2.0batch/s") in text, text
    bar.close()
