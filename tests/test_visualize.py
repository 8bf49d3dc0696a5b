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
