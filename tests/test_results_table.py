"""examples/results_table.py: the README's results table is computed from run histories, not typed in."""
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))
import results_table  # noqa: E402
sys.path.pop(0)


def write_history(folder, name, accuracies, seconds):
    path = folder / name
    path.write_text(json.dumps([{"epoch": i + 1, "test_accuracy": a, "seconds": s}
                                for i, (a, s) in enumerate(zip(accuracies, seconds))]))
    return str(path)


def test_one_row_per_preset_with_final_accuracy_per_seed_and_mean(tmp_path, capsys):
    paths = [write_history(tmp_path, "tiny-seed0.history.json", [0.98, 0.9940], [10, 20]),
             write_history(tmp_path, "tiny-seed1.history.json", [0.99, 0.9950], [30, 40]),
             write_history(tmp_path, "eip4-augment-seed3.history.json", [0.9, 0.95, 0.9960], [1, 2, 3])]
    table = {r["preset"]: r for r in results_table.rows(paths)}
    tiny = table["tiny"]
    assert tiny["finals"] == {0: 0.9940, 1: 0.9950}          # the last epoch, not the best one
    assert tiny["mean"] == pytest.approx(0.9945) and tiny["seconds"] == pytest.approx(25.0)
    assert tiny["epochs"] == "2" and tiny["keras"] <= 4000 and tiny["torch"] < tiny["keras"]
    assert table["eip4 --augment"]["keras"] == 14060 and table["eip4 --augment"]["finals"] == {3: 0.9960}
    results_table.main(paths)
    out = capsys.readouterr().out
    assert "| `tiny` |" in out and "99.40% (seed 0), 99.50% (seed 1)" in out and "**99.45%**" in out


def test_a_validation_run_is_not_accepted_as_a_result(tmp_path, capsys):
    path = write_history(tmp_path, "tiny-seed0-val.history.json", [0.99], [1])
    assert results_table.main([path]) == 2
    assert "expected a name like PRESET-seedS.history.json" in capsys.readouterr().err


@pytest.mark.parametrize("content, problem", [(None, "No such file or directory"), ("{not json", "is not JSON"),
                                              ("[]", "is not the history of a run"),
                                              ('{"epoch": 1}', "is not the history of a run")])
def test_a_missing_or_foreign_history_is_one_line_and_exit_status_2(tmp_path, capsys, content, problem):
    path = tmp_path / "tiny-seed0.history.json"
    if content is not None:
        path.write_text(content)
    assert results_table.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert problem in err and str(path) in err and len(err.strip().splitlines()) == 1


def test_a_command_line_mistake_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        results_table.main([])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "the following arguments are required" in err
