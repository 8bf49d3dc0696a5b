"""examples/visualize.py draws every lesson figure from a checkpoint: run it on a tiny one made here."""
import importlib.util
import json
import os

import numpy as np
import pytest

import minicnn
from minicnn import optim
from minicnn.checkpoint import save_checkpoint
from minicnn.data import read_mnist_folder
from minicnn.models import eip4
from minicnn.training import Trainer, to_device_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBSET = os.path.join(ROOT, "tests", "data", "mnist_small")

pytestmark = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                reason="matplotlib is not installed (the `viz` extra): the figure script is not tested")


def load_visualize():
    spec = importlib.util.spec_from_file_location("visualize", os.path.join(ROOT, "examples", "visualize.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A checkpoint in examples/mnist.py's layout after 4 steps on 256 real digits, and a 2-epoch history json."""
    folder = tmp_path_factory.mktemp("run")
    (xtr, ytr), (xte, yte) = read_mnist_folder(SUBSET)
    train = to_device_dataset(xtr[:256], ytr[:256], "cpu")
    test = to_device_dataset(xte[:100], yte[:100], "cpu")
    minicnn.manual_seed(0)
    model = eip4()
    opt = optim.Adam(model.parameters(), lr=0.003, eps=1e-7)
    trainer = Trainer(model, opt, train, test, batch_size=64, seed=0)
    trainer.train_epoch(show_progress=False)
    ckpt = folder / "eip4-seed0.best.ckpt"
    save_checkpoint(ckpt, {"trainer": trainer.state_dict(), "args": {"model": "eip4", "seed": 0}})
    history = [dict(epoch=1, loss=0.9, accuracy=0.7, test_loss=0.5, test_accuracy=0.85, lr=0.003, seconds=1.0),
               dict(epoch=2, loss=0.3, accuracy=0.9, test_loss=0.2, test_accuracy=0.94, lr=0.0023, seconds=1.0)]
    hist = folder / "eip4-seed0.history.json"
    hist.write_text(json.dumps(history))
    return ckpt, hist


def test_main_writes_every_figure_as_a_real_image(tiny_run, tmp_path):
    import matplotlib.image
    vis = load_visualize()
    ckpt, hist = tiny_run
    out = tmp_path / "images"
    code = vis.main(["--checkpoint", str(ckpt), "--history", str(hist), "--out", str(out),
                     "--data-dir", SUBSET, "--rf-digits", "16", "--max-test", "200"])
    assert code == 0
    assert sorted(os.listdir(out)) == sorted(vis.FIGURES)
    for name in vis.FIGURES:
        path = out / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        img = matplotlib.image.imread(path)
        assert img.ndim == 3 and min(img.shape[:2]) >= 200, (name, img.shape)
        rgb = (img[..., :3] * 255).astype(np.uint32)
        assert rgb.std() > 10, f"{name} is (almost) a blank image"
        colours = np.unique(rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2])
        assert len(colours) > 20, f"{name} has almost no content ({len(colours)} colours)"


def test_history_is_found_beside_the_checkpoint_or_read_from_it(tiny_run):
    vis = load_visualize()
    ckpt, hist = tiny_run
    assert vis.default_history_path(str(ckpt)) == str(hist)
    assert vis.default_history_path(str(ckpt.parent / "missing.ckpt")) is None
    model, state = vis.load_model(str(ckpt))
    assert not model.training
    assert vis.load_history(None, state) == state["trainer"]["history"]
    assert [h["epoch"] for h in vis.load_history(str(hist), state)] == [1, 2]


def test_receptive_field_geometry_matches_summary():
    """rf_geometry walks the layers like summary() and also tracks where unit 0's field starts."""
    vis = load_visualize()
    model = eip4()
    s = minicnn.nn.summary(model, (1, 28, 28), print_fn=None)
    for i, row in enumerate(s.rows):
        rf, jump, offset = vis.rf_geometry(model, i)
        assert (rf, jump, offset) == (row[4], row[5], 0)


def test_unit_gradient_stays_inside_the_theoretical_receptive_field():
    vis = load_visualize()
    minicnn.manual_seed(0)
    model = eip4().eval()
    _, (x, y) = read_mnist_folder(SUBSET)
    xf, _ = to_device_dataset(x[:4], y[:4], "cpu")
    upto = 16  # ReLU after the conv of layer 15: 8x8 units, RF 14, jump 2
    g, (oh, ow) = vis.unit_gradients(model, xf, upto)
    rf, jump, offset = vis.rf_geometry(model, upto)
    inside = np.zeros((28, 28), bool)
    inside[offset + oh * jump:offset + oh * jump + rf, offset + ow * jump:offset + ow * jump + rf] = True
    assert g.shape == (4, 28, 28) and g.sum() > 0
    assert np.all(g[:, ~inside] == 0)


def test_figures_go_to_runs_figures_unless_out_names_another_folder():
    vis = load_visualize()
    assert vis.parse_args(["--checkpoint", "run.ckpt"]).out == os.path.join("runs", "figures")
    assert vis.parse_args(["--checkpoint", "run.ckpt", "--out", "docs/images"]).out == "docs/images"


@pytest.mark.parametrize("case", ["missing", "pickle", "damaged", "foreign", "history"])
def test_a_missing_or_bad_file_is_one_line_and_exit_status_2(tiny_run, tmp_path, capsys, case):
    import pickle
    vis = load_visualize()
    ckpt, _ = tiny_run
    bad = tmp_path / "bad.ckpt"
    history = []
    if case == "pickle":
        bad.write_bytes(pickle.dumps({"trainer": {}}))
    elif case == "damaged":
        bad.write_bytes(ckpt.read_bytes()[:-100])
    elif case == "foreign":
        save_checkpoint(bad, {"weights": np.zeros(3, np.float32)})
    elif case == "history":
        bad = ckpt
        (tmp_path / "h.json").write_text("{not json")
        history = ["--history", str(tmp_path / "h.json")]
    out = tmp_path / "figures"
    assert vis.main(["--checkpoint", str(bad), "--out", str(out)] + history) == 2
    err = capsys.readouterr().err
    expected = {"missing": "no such checkpoint file", "pickle": "is a pickle", "damaged": "is damaged",
                "foreign": "not of a run of examples/mnist.py", "history": "h.json is not JSON"}[case]
    assert len(err.strip().splitlines()) == 1 and err.startswith("visualize.py: error: ") and expected in err, err
    assert not out.exists()  # nothing drawn, no folder made


def test_the_command_line_process_reports_a_missing_checkpoint_without_a_traceback(tmp_path):
    import subprocess
    import sys
    done = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "visualize.py"), "--checkpoint",
                           str(tmp_path / "none.ckpt")], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"visualize.py: error: {tmp_path / 'none.ckpt'}: no such checkpoint file"]
    assert not (tmp_path / "runs").exists()


def test_the_im2col_figure_draws_the_lessons_im2col_from_the_public_api():
    """The example builds its matrix with NumPy's sliding windows (examples use the public API only); it is
    exactly the kernels' im2col."""
    from minicnn.kernels.im2col import im2col
    vis = load_visualize()
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(vis.im2col_matrix(x[0, 0], 3, 3), im2col(x, 3, 3).reshape(9, 4))
    source = open(os.path.join(ROOT, "examples", "visualize.py")).read()
    assert "minicnn.kernels" not in source
