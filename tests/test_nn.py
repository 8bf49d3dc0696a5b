"""Modules, layers, the model presets and their summaries."""
import numpy as np
import pytest

import minicnn
from minicnn import Tensor, nn
from minicnn.models import PRESETS, RECIPES, eip4, get_model


def test_eip4_summary_counts_like_keras():
    s = nn.summary(eip4(), (1, 28, 28), print_fn=None)
    assert (s.total, s.trainable, s.non_trainable) == (14060, 13848, 212)
    assert s.receptive_field == 28
    text = str(s)
    assert "Total params: 14,060" in text and "Trainable params: 13,848" in text
    assert "Non-trainable params: 212" in text


def test_summary_receptive_field_and_jump_per_layer():
    rows = nn.summary(eip4(), (1, 28, 28), print_fn=None).rows
    convs = [(r[2], r[4], r[5]) for r in rows if r[1] in ("Conv2d", "MaxPool2d")]
    assert convs == [((16, 26, 26), 3, 1), ((16, 24, 24), 5, 1), ((10, 24, 24), 5, 1), ((10, 12, 12), 6, 2),
                     ((16, 10, 10), 10, 2), ((16, 8, 8), 14, 2), ((16, 6, 6), 18, 2), ((16, 4, 4), 22, 2),
                     ((10, 1, 1), 28, 2)]


def test_summary_counts_dilation_and_stride():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2), nn.Conv2d(2, 2, 3, stride=2), nn.Conv2d(2, 2, 3))
    rows = nn.summary(model, (1, 20, 20), print_fn=None).rows
    assert [(r[4], r[5]) for r in rows] == [(5, 1), (7, 2), (11, 2)]


def test_eip4_output_is_logits_per_class():
    out = eip4()(Tensor(np.zeros((3, 1, 28, 28), np.float32)))
    assert out.shape == (3, 10)


@pytest.mark.parametrize("name, limit", [("compact", 8000), ("tiny", 4000)])
def test_small_presets_stay_under_their_parameter_budget_in_both_countings(name, limit):
    """Keras counts batch norm's running statistics too; PyTorch counts only what the optimizer updates."""
    model = get_model(name)
    s = nn.summary(model, (1, 28, 28), print_fn=None)
    trainable = sum(p.data.size for p in model.parameters())
    assert s.trainable == trainable and s.total == trainable + s.non_trainable
    assert s.total <= limit
    assert s.receptive_field >= 18   # the global average pool then spans the whole digit
    out = model(Tensor(np.zeros((2, 1, 28, 28), np.float32)))
    assert out.shape == (2, 10)


@pytest.mark.parametrize("name", ["compact", "tiny"])
def test_small_presets_recipes_train_with_augmentation_in_at_most_15_epochs(name):
    recipe = RECIPES[name]
    assert recipe["augment"] and recipe["epochs"] <= 15 and recipe["schedule"] == "one_cycle"
    assert set(RECIPES) == set(PRESETS)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        get_model("resnet")


def test_state_dict_round_trip_includes_batch_norm_statistics():
    minicnn.manual_seed(1)
    a = eip4()
    a.train()
    a(Tensor(np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)))  # moves running stats
    state = a.state_dict()
    assert "2.running_mean" in state and "2.running_var" in state
    assert not np.allclose(state["2.running_mean"], 0)
    minicnn.manual_seed(2)
    b = eip4()
    b.load_state_dict(state)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and np.array_equal(va, vb)
    x = Tensor(np.random.default_rng(1).random((4, 1, 28, 28), dtype=np.float32))
    a.eval(), b.eval()
    with minicnn.no_grad():
        assert np.array_equal(a(x).data, b(x).data)


def test_state_dict_is_a_copy():
    m = nn.Linear(3, 2)
    state = m.state_dict()
    state["weight"][...] = 7
    assert not np.allclose(m.weight.data, 7)


def test_load_state_dict_names_shape_and_key_problems():
    m = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"weight has shape \(2, 4\) in the state but \(2, 3\)"):
        m.load_state_dict({"weight": np.zeros((2, 4), np.float32), "bias": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="missing keys \\['bias'\\]"):
        m.load_state_dict({"weight": np.zeros((2, 3), np.float32)})


def test_train_and_eval_modes_reach_every_layer():
    m = eip4()
    m.eval()
    assert all(not layer.training for layer in m.modules())
    m.train()
    assert all(layer.training for layer in m.modules())


def test_dropout_layer_is_identity_in_eval_and_random_in_training():
    layer = nn.Dropout(0.5, seed=0)
    x = Tensor(np.ones((1000,), np.float32))
    y = layer(x).data
    assert set(np.unique(y)) == {0.0, 2.0}
    layer.eval()
    assert np.array_equal(layer(x).data, x.data)


def test_linear_matches_numpy():
    m = nn.Linear(4, 3)
    x = np.random.default_rng(0).random((5, 4)).astype(np.float32)
    np.testing.assert_allclose(m(Tensor(x)).data, x @ m.weight.data.T + m.bias.data, rtol=1e-6)


def test_conv_layer_bias_off_has_no_bias_parameter():
    assert [n for n, _ in nn.Conv2d(2, 3, 3, bias=False).named_parameters()] == ["weight"]
    assert nn.Conv2d(2, 3, 3).num_parameters() == 3 * 2 * 9 + 3


def test_glorot_uniform_bound_and_he_normal_scale():
    w = nn.init.glorot_uniform((64, 32, 3, 3), generator=np.random.default_rng(0))
    bound = np.sqrt(6 / (32 * 9 + 64 * 9))
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    h = nn.init.he_normal((256, 128, 3, 3), generator=np.random.default_rng(0))
    assert abs(h.std() - np.sqrt(2 / (128 * 9))) < 0.02 * np.sqrt(2 / (128 * 9))
    with pytest.raises(ValueError, match="unknown initialiser 'zeros'"):
        nn.init.get("zeros")


def test_sequential_rejects_non_modules():
    with pytest.raises(TypeError, match="item 1 is a int"):
        nn.Sequential(nn.ReLU(), 3)


def test_gradients_reach_every_parameter_of_eip4():
    m = eip4()
    x = Tensor(np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32))
    minicnn.functional.cross_entropy(m(x), np.array([0, 1, 2, 3])).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape, name
        assert np.isfinite(p.grad).all(), name
