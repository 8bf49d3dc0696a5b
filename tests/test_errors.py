"""Bad input gives one clear error that names the offending values: one test per message."""
import re

import numpy as np
import pytest

import minicnn
import minicnn.functional as F
from minicnn import Tensor, gpu_available, nn, optim
from minicnn.functional.checks import check_input
from minicnn.models import compact, eip4, tiny


def t(*shape, dtype=np.float32):
    return Tensor(np.ones(shape, dtype))


def raises(exc, message):
    """pytest.raises matching `message` literally (the messages contain parentheses and brackets)."""
    return pytest.raises(exc, match=re.escape(message))


# ---- conv2d ----------------------------------------------------------------------------------------------------

def test_conv2d_input_with_wrong_number_of_dimensions():
    with raises(ValueError, "conv2d expects input of shape (N, C, H, W), got a 3-D tensor of shape (2, 5, 5)"):
        F.conv2d(t(2, 5, 5), t(4, 2, 3, 3))


def test_conv2d_weight_with_wrong_number_of_dimensions():
    with raises(ValueError, "weight of shape (OC, C/groups, KH, KW), got shape (4, 2, 3)"):
        F.conv2d(t(1, 2, 5, 5), t(4, 2, 3))


def test_conv2d_input_channels_that_do_not_match_the_weight():
    with raises(ValueError, "input has 3 channels but the weight expects 2"):
        F.conv2d(t(1, 3, 5, 5), t(4, 2, 3, 3))


def test_conv2d_input_channels_that_do_not_match_the_weight_with_groups():
    with raises(ValueError, "input has 4 channels but the weight expects 6 (3 per group x 2 groups)"):
        F.conv2d(t(1, 4, 5, 5), t(4, 3, 3, 3), groups=2)


def test_conv2d_input_channels_not_divisible_by_groups():
    with raises(ValueError, "input channels C=3 are not divisible by groups=2"):
        F.conv2d(t(1, 3, 5, 5), t(4, 1, 3, 3), groups=2)


def test_conv2d_output_channels_not_divisible_by_groups():
    with raises(ValueError, "output channels OC=3 are not divisible by groups=2"):
        F.conv2d(t(1, 4, 5, 5), t(3, 2, 3, 3), groups=2)


@pytest.mark.parametrize("groups", [0, -1, 1.5, True])
def test_conv2d_groups_must_be_a_positive_int(groups):
    with raises(ValueError, f"groups must be a positive int, got {groups!r}"):
        F.conv2d(t(1, 2, 5, 5), t(2, 2, 3, 3), groups=groups)


def test_conv2d_kernel_larger_than_the_padded_input():
    with raises(ValueError, "the kernel (5x5 after dilation) is larger than the padded input (4x4)"):
        F.conv2d(t(1, 1, 4, 4), t(1, 1, 5, 5))


def test_conv2d_dilated_kernel_larger_than_the_padded_input():
    with raises(ValueError, "the kernel (5x3 after dilation) is larger than the padded input (4x6)"):
        F.conv2d(t(1, 1, 2, 4), t(1, 1, 3, 3), padding=1, dilation=(2, 1))


@pytest.mark.parametrize("stride", [0, -1, (1, 0)])
def test_conv2d_non_positive_stride(stride):
    with raises(ValueError, f"stride must be positive, got {stride!r}"):
        F.conv2d(t(1, 1, 5, 5), t(1, 1, 3, 3), stride=stride)


@pytest.mark.parametrize("dilation", [0, (2, -1)])
def test_conv2d_non_positive_dilation(dilation):
    with raises(ValueError, f"dilation must be positive, got {dilation!r}"):
        F.conv2d(t(1, 1, 5, 5), t(1, 1, 3, 3), dilation=dilation)


@pytest.mark.parametrize("padding", [-1, (0, -2)])
def test_conv2d_negative_padding(padding):
    with raises(ValueError, f"padding must not be negative, got {padding!r}"):
        F.conv2d(t(1, 1, 5, 5), t(1, 1, 3, 3), padding=padding)


@pytest.mark.parametrize("stride", [1.5, (1, 2, 3), "2", (1, True)])
def test_conv2d_stride_that_is_not_an_int_or_pair(stride):
    with raises(TypeError, f"stride must be an int or a pair of ints, got {stride!r}"):
        F.conv2d(t(1, 1, 5, 5), t(1, 1, 3, 3), stride=stride)


def test_conv2d_integer_input_is_a_type_error():
    with raises(TypeError, "conv2d needs floating-point input, got dtype int64"):
        F.conv2d(Tensor(np.ones((1, 1, 5, 5), np.int64)), t(1, 1, 3, 3))


def test_conv2d_input_and_weight_dtypes_differ():
    with raises(TypeError, "input dtype float32 and weight dtype float64 differ"):
        F.conv2d(t(1, 1, 5, 5), t(1, 1, 3, 3, dtype=np.float64))


def test_conv2d_bias_of_the_wrong_shape():
    with raises(ValueError, "bias must have shape (4,), got (3,)"):
        F.conv2d(t(1, 2, 5, 5), t(4, 2, 3, 3), t(3))


# ---- pooling ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", [F.max_pool2d, F.avg_pool2d])
def test_pool_padding_larger_than_half_the_window(op):
    name = op.__name__
    with raises(ValueError, f"{name}: padding 2 must be at most half the kernel height 3"):
        op(t(1, 1, 6, 6), 3, padding=2)
    with raises(ValueError, f"{name}: padding 2 must be at most half the kernel width 2"):
        op(t(1, 1, 6, 6), (4, 2), padding=(1, 2))


def test_pool_window_larger_than_the_padded_input():
    with raises(ValueError, "max_pool2d: the window 4x4 is larger than the padded input 3x5"):
        F.max_pool2d(t(1, 1, 3, 5), 4)


def test_pool_input_with_wrong_number_of_dimensions():
    with raises(ValueError, "avg_pool2d expects input of shape (N, C, H, W), got a 2-D tensor of shape (4, 4)"):
        F.avg_pool2d(t(4, 4), 2)


def test_pool_integer_input_is_a_type_error():
    with raises(TypeError, "max_pool2d needs floating-point input, got dtype uint8"):
        F.max_pool2d(Tensor(np.ones((1, 1, 4, 4), np.uint8)), 2)


def test_pool_non_positive_kernel_and_stride():
    with raises(ValueError, "kernel_size must be positive, got 0"):
        F.max_pool2d(t(1, 1, 4, 4), 0)
    with raises(ValueError, "stride must be positive, got (2, 0)"):
        F.avg_pool2d(t(1, 1, 4, 4), 2, stride=(2, 0))


def test_pool_negative_padding():
    with raises(ValueError, "padding must not be negative, got -1"):
        F.max_pool2d(t(1, 1, 4, 4), 2, padding=-1)


# ---- losses, matmul, normalisation, dropout, shapes ------------------------------------------------------------

def test_cross_entropy_label_out_of_range():
    with raises(ValueError, "labels must lie in [0, 4], got values from 0 to 5"):
        F.cross_entropy(t(3, 5), np.array([0, 5, 2]))


def test_cross_entropy_negative_label():
    with raises(ValueError, "labels must lie in [0, 4], got values from -1 to 2"):
        F.cross_entropy(t(3, 5), np.array([-1, 1, 2]))


def test_cross_entropy_non_integer_labels():
    with raises(TypeError, "target must hold integer class labels, got dtype float64"):
        F.cross_entropy(t(3, 5), np.array([0.0, 1.0, 2.0]))


def test_cross_entropy_target_of_the_wrong_length():
    with raises(ValueError, "target must have shape (3,), got (4,)"):
        F.cross_entropy(t(3, 5), np.array([0, 1, 2, 3]))


def test_cross_entropy_logits_that_are_not_2d():
    with raises(ValueError, "cross_entropy expects logits of shape (N, K), got shape (3, 5, 1)"):
        F.cross_entropy(t(3, 5, 1), np.array([0, 1, 2]))


def test_cross_entropy_unknown_reduction():
    with raises(ValueError, "reduction must be 'mean', 'sum' or 'none', got 'avg'"):
        F.cross_entropy(t(2, 3), np.array([0, 1]), reduction="avg")


def test_matmul_inner_dimension_mismatch():
    with raises(ValueError, "matmul: inner dimensions differ: (2, 3) @ (4, 5) (3 != 4)"):
        F.matmul(t(2, 3), t(4, 5))


def test_matmul_of_a_vector():
    with raises(ValueError, "matmul needs operands with at least 2 dimensions, got shapes (3,) and (3, 2)"):
        F.matmul(t(3), t(3, 2))


def test_batch_norm_parameter_of_the_wrong_shape():
    with raises(ValueError, "batch_norm: gamma must have shape (3,) for 3 channels, got (2,)"):
        F.batch_norm(t(2, 3, 2, 2), t(2), t(3))


def test_batch_norm_eval_without_running_stats():
    with raises(ValueError, "batch_norm in eval mode needs running_mean and running_var"):
        F.batch_norm(t(2, 3, 2, 2), t(3), t(3), training=False)


def test_batch_norm_training_with_one_value_per_channel():
    with raises(ValueError, "needs more than one value per channel, got input shape (1, 3, 1, 1)"):
        F.batch_norm(t(1, 3, 1, 1), t(3), t(3), training=True)


def test_batch_norm_momentum_out_of_range():
    with raises(ValueError, "batch_norm: momentum must lie in [0, 1], got 1.5"):
        F.batch_norm(t(2, 3, 2, 2), t(3), t(3), momentum=1.5)


def test_batch_norm_integer_input_is_a_type_error():
    with raises(TypeError, "batch_norm needs floating-point input, got dtype int32"):
        F.batch_norm(Tensor(np.ones((2, 3, 2, 2), np.int32)), t(3), t(3))


@pytest.mark.parametrize("p", [1.0, -0.1, 2])
def test_dropout_probability_out_of_range(p):
    with raises(ValueError, f"dropout probability must lie in [0, 1), got {p}"):
        F.dropout(t(4), p)


def test_pow_with_a_tensor_exponent():
    with raises(TypeError, "pow: the exponent must be a Python number, not a tensor or array"):
        F.pow(t(3), t(3))


def test_reduction_axis_out_of_range():
    with raises(ValueError, "axis 2 is out of range for a tensor with 2 dimensions"):
        F.sum(t(2, 3), axis=2)


# ---- what the array functions take: a Tensor or an array of float32 or float64 ----------------------------------

def f16(*shape):
    return Tensor(np.ones(shape, np.float16))


ARRAY_OPS = {  # name -> a call of the function with x as its input
    "conv2d": lambda x: F.conv2d(x, t(1, 1, 3, 3)),
    "max_pool2d": lambda x: F.max_pool2d(x, 2),
    "avg_pool2d": lambda x: F.avg_pool2d(x, 2),
    "global_avg_pool2d": F.global_avg_pool2d,
    "batch_norm": lambda x: F.batch_norm(x, t(1), t(1)),
}


@pytest.mark.parametrize("op", sorted(ARRAY_OPS))
def test_a_list_input_is_a_type_error_naming_the_type(op):
    with raises(TypeError, f"{op} expects a Tensor or an array, got list"):
        ARRAY_OPS[op](np.ones((2, 1, 4, 4), np.float32).tolist())


@pytest.mark.parametrize("op", sorted(ARRAY_OPS))
def test_float16_input_is_a_type_error_that_says_what_to_convert_to(op):
    with raises(TypeError, f"{op} supports float32 and float64, got float16; convert with .astype(np.float32)"):
        ARRAY_OPS[op](f16(2, 1, 4, 4))


@pytest.mark.parametrize("op", sorted(ARRAY_OPS))
def test_float32_and_float64_raw_arrays_are_taken_as_they_are(op):
    """A NumPy array's own .data is a memoryview: the check must use the array itself."""
    for dtype in (np.float32, np.float64):
        w = {"conv2d": lambda x: F.conv2d(x, np.ones((1, 1, 3, 3), dtype)),
             "batch_norm": lambda x: F.batch_norm(x, np.ones(1, dtype), np.zeros(1, dtype))}.get(op, ARRAY_OPS[op])
        y = w(np.ones((2, 1, 4, 4), dtype))
        assert y.dtype == dtype


def test_check_input_returns_the_array_and_names_the_argument():
    x = np.ones((2, 3, 4, 5), np.float32)
    assert check_input(x, "op") is x and check_input(Tensor(x), "op") is x
    assert check_input(np.ones(3), "op", ndim=1, what="gamma").shape == (3,)
    with raises(TypeError, "conv2d expects a Tensor or an array as weight, got numpy.float32"):
        check_input(np.float32(1.0), "conv2d", what="weight")
    message = "batch_norm supports float32 and float64, got float16 gamma; convert with .astype(np.float32)"
    with raises(TypeError, message):
        check_input(np.ones(3, np.float16), "batch_norm", ndim=1, what="gamma")
    with raises(ValueError, "batch_norm expects gamma of shape (C,), got a 2-D tensor of shape (1, 3)"):
        check_input(np.ones((1, 3)), "batch_norm", ndim=1, what="gamma")
    with raises(TypeError, "op needs floating-point input, got dtype bool; convert with .astype(np.float32)"):
        check_input(np.ones((1, 1, 2, 2), bool), "op")


def test_batch_norm_parameters_that_are_lists_or_float16():
    with raises(TypeError, "batch_norm expects a Tensor or an array as gamma, got list"):
        F.batch_norm(t(2, 3, 2, 2), [1.0, 1.0, 1.0], t(3))
    with raises(TypeError, "batch_norm expects a Tensor or an array as beta, got NoneType"):
        F.batch_norm(t(2, 3, 2, 2), t(3), None)
    with raises(TypeError, "batch_norm supports float32 and float64, got float16 running_var"):
        F.batch_norm(t(2, 3, 2, 2), t(3), t(3), np.zeros(3, np.float32), np.ones(3, np.float16))


# ---- batch norm's momentum and eps -------------------------------------------------------------------------------

def test_batch_norm_momentum_none_is_not_supported_and_says_so():
    message = ("batch_norm: momentum=None (PyTorch's cumulative moving average) is not supported; "
               "give a number in [0, 1] (PyTorch's default is 0.1)")
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    with raises(ValueError, message):
        F.batch_norm(t(2, 3, 2, 2), t(3), t(3), rm, rv, momentum=None)
    assert not rm.any() and (rv == 1).all()  # the running statistics are untouched
    with raises(ValueError, "BatchNorm2d: momentum=None (PyTorch's cumulative moving average) is not supported"):
        nn.BatchNorm2d(3, momentum=None)


def test_batch_norm_momentum_that_is_not_a_number():
    with raises(TypeError, "batch_norm: momentum must be a number, got '0.1'"):
        F.batch_norm(t(2, 3, 2, 2), t(3), t(3), momentum="0.1")


def test_batch_norm_negative_eps():
    with raises(ValueError, "batch_norm: eps must be non-negative, got -1e-05"):
        F.batch_norm(t(2, 3, 2, 2), t(3), t(3), eps=-1e-5)


@pytest.mark.parametrize("eps", [0, -1e-3, float("nan")])
def test_batch_norm_layer_eps_must_be_positive(eps):
    with raises(ValueError, f"BatchNorm2d: eps must be positive, got {eps}"):
        nn.BatchNorm2d(3, eps=eps)


def test_batch_norm_layer_momentum_out_of_range():
    with raises(ValueError, "BatchNorm2d: momentum must lie in [0, 1], got 1.5"):
        nn.BatchNorm2d(3, momentum=1.5)


# ---- layers check their arguments when they are built -------------------------------------------------------------

@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(kernel_size=0), ValueError, "Conv2d: kernel_size must be positive, got 0"),
    (dict(kernel_size=(3, -1)), ValueError, "Conv2d: kernel_size must be positive, got (3, -1)"),
    (dict(stride=-1), ValueError, "Conv2d: stride must be positive, got -1"),
    (dict(stride=0), ValueError, "Conv2d: stride must be positive, got 0"),
    (dict(padding=-1), ValueError, "Conv2d: padding must not be negative, got -1"),
    (dict(dilation=0), ValueError, "Conv2d: dilation must be positive, got 0"),
    (dict(groups=0), ValueError, "Conv2d: groups must be a positive int, got 0"),
    (dict(groups=1.5), TypeError, "Conv2d: groups must be a positive int, got 1.5"),
    (dict(in_channels=0), ValueError, "Conv2d: in_channels must be a positive int, got 0"),
    (dict(out_channels=-4), ValueError, "Conv2d: out_channels must be a positive int, got -4"),
    (dict(in_channels=3.0), TypeError, "Conv2d: in_channels must be a positive int, got 3.0"),
    (dict(kernel_size="3"), TypeError, "Conv2d: kernel_size must be an int or a pair of ints, got '3'"),
    (dict(groups=2), ValueError, "Conv2d: in_channels=3 and out_channels=4 must both be divisible by groups=2"),
])
def test_conv2d_layer_arguments(kwargs, exc, message):
    args = dict(in_channels=3, out_channels=4, kernel_size=3) | kwargs
    with raises(exc, message):
        nn.Conv2d(**args)


@pytest.mark.parametrize("layer", [nn.MaxPool2d, nn.AvgPool2d])
def test_pool_layer_arguments(layer):
    name = layer.__name__
    with raises(ValueError, f"{name}: kernel_size must be positive, got 0"):
        layer(0)
    with raises(ValueError, f"{name}: stride must be positive, got -2"):
        layer(2, stride=-2)
    with raises(ValueError, f"{name}: padding must not be negative, got -1"):
        layer(2, padding=-1)
    with raises(ValueError, f"{name}: padding 2 must be at most half the kernel height 3"):
        layer(3, padding=2)


@pytest.mark.parametrize("args, message", [((0, 3), "Linear: in_features must be a positive int, got 0"),
                                           ((3, 0), "Linear: out_features must be a positive int, got 0")])
def test_linear_layer_sizes(args, message):
    with raises(ValueError, message):
        nn.Linear(*args)


def test_batch_norm_layer_num_features():
    with raises(ValueError, "BatchNorm2d: num_features must be a positive int, got 0"):
        nn.BatchNorm2d(0)


def test_dropout_layer_probability():
    with raises(ValueError, "Dropout: the probability p must lie in [0, 1), got 1.5"):
        nn.Dropout(1.5)


def test_layers_refuse_float16_before_any_kernel_runs():
    with raises(TypeError, "conv2d supports float32 and float64, got float16"):
        nn.Conv2d(1, 2, 3)(f16(1, 1, 5, 5))
    with raises(TypeError, "batch_norm supports float32 and float64, got float16"):
        nn.BatchNorm2d(1)(f16(2, 1, 2, 2))


# ---- Module.load_state_dict: everything checked before anything is written -----------------------------------------

def state_bytes(model):
    return {k: (v.dtype, v.tobytes()) for k, v in model.state_dict().items()}


@pytest.fixture
def two_eip4s():
    """A model and the state of a differently initialised one, whose batch-norm statistics have moved."""
    minicnn.manual_seed(1)
    model = eip4()
    minicnn.manual_seed(2)
    other = eip4()
    other(Tensor(np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)))
    return model, other.state_dict()


def test_load_state_dict_with_a_bad_late_entry_changes_nothing(two_eip4s):
    model, state = two_eip4s
    before = state_bytes(model)
    last = list(state)[-1]  # state_dict order: every parameter, then the buffers; old code wrote the rest first
    state[last] = np.zeros(3, np.float32)
    with raises(ValueError, f"load_state_dict: {last} has shape (3,) in the state but (10,) in the model"):
        model.load_state_dict(state)
    assert state_bytes(model) == before


@pytest.mark.parametrize("bad, exc, message", [
    ([0.0] * 10, TypeError, "load_state_dict: {key} is a list in the state, expected an array of shape (10,)"),
    (np.zeros(10, np.int64), TypeError, "load_state_dict: {key} has dtype int64 in the state but float32 in the model"),
    (np.float32(0.0), TypeError, "load_state_dict: {key} is a numpy.float32 in the state"),
])
def test_load_state_dict_values_that_are_not_arrays_of_the_right_kind(two_eip4s, bad, exc, message):
    model, state = two_eip4s
    key = list(state)[-1]
    state[key] = bad
    before = state_bytes(model)
    with raises(exc, message.format(key=key)):
        model.load_state_dict(state, strict=False)
    assert state_bytes(model) == before


def test_load_state_dict_of_something_that_is_not_a_dict():
    with raises(TypeError, "load_state_dict expects a dict of name -> array, got list"):
        nn.Linear(3, 2).load_state_dict([np.zeros((2, 3), np.float32), np.zeros(2, np.float32)])


def test_load_state_dict_missing_and_unexpected_keys_are_a_value_error(two_eip4s):
    model, state = two_eip4s
    state["extra"] = state.pop("0.weight")
    before = state_bytes(model)
    with raises(ValueError, "load_state_dict: missing keys ['0.weight'], unexpected keys ['extra']"):
        model.load_state_dict(state)
    assert state_bytes(model) == before


def test_load_state_dict_accepts_float64_and_tensors(two_eip4s):
    model, state = two_eip4s
    model.load_state_dict({k: Tensor(v.astype(np.float64), dtype=np.float64) for k, v in state.items()})
    assert state_bytes(model) == {k: (v.dtype, v.tobytes()) for k, v in state.items()}


# ---- optimizer and schedule state dicts ----------------------------------------------------------------------------

def adam_after_two_steps():
    model = nn.Linear(3, 2)
    opt = optim.Adam(model.parameters(), lr=0.01)
    for _ in range(2):
        model.weight.grad[...] = 1.0
        model.bias.grad[...] = -0.5
        opt.step()
    return opt


def optimizer_bytes(opt):
    return (opt.lr, opt.step_count, opt.m.tobytes(), opt.v.tobytes(), opt.flat_data.tobytes())


@pytest.mark.parametrize("edit, exc, message", [
    (lambda s: s.clear(), ValueError,
     "Adam.load_state_dict: missing keys ['lr', 'step_count', 'm', 'v']; "
     "expected the keys ['lr', 'step_count', 'm', 'v']"),
    (lambda s: s.update(momentum_buffer=s.pop("m")), ValueError,
     "Adam.load_state_dict: missing keys ['m'], unexpected keys ['momentum_buffer']"),
    (lambda s: s.update(v=np.zeros(7, np.float32)), ValueError,
     "Adam.load_state_dict: v has shape (7,), expected (8,) (the state of a model with another number of parameters?)"),
    (lambda s: s.update(v=np.zeros(8, np.int32)), TypeError,
     "Adam.load_state_dict: v has dtype int32, expected a floating-point dtype (float32)"),
    (lambda s: s.update(m=[0.0] * 8), TypeError, "Adam.load_state_dict: m must be an array of shape (8,), got list"),
    (lambda s: s.update(lr="0.01"), TypeError, "Adam.load_state_dict: lr must be a number, got '0.01'"),
    (lambda s: s.update(lr=-1.0), ValueError, "Adam.load_state_dict: lr must be a finite number not below 0, got -1.0"),
    (lambda s: s.update(step_count=-3), ValueError, "Adam.load_state_dict: step_count must not be negative, got -3"),
    (lambda s: s.update(step_count=2.5), TypeError, "Adam.load_state_dict: step_count must be an integer, got 2.5"),
])
def test_adam_load_state_dict_refuses_a_wrong_state_and_changes_nothing(edit, exc, message):
    opt = adam_after_two_steps()
    state = adam_after_two_steps().state_dict()
    state["lr"], state["step_count"] = 0.5, 9
    edit(state)
    before = optimizer_bytes(opt)
    with raises(exc, message):
        opt.load_state_dict(state)
    assert optimizer_bytes(opt) == before


def test_optimizer_load_state_dict_of_something_that_is_not_a_dict():
    opt = adam_after_two_steps()
    message = "SGD.load_state_dict expects a dict with keys ['lr', 'step_count', 'momentum_buffer'], got list"
    with raises(TypeError, message):
        optim.SGD(nn.Linear(3, 2).parameters()).load_state_dict([opt.lr])


def test_optimizer_state_round_trips_through_zero_d_arrays():
    """A checkpoint may give the scalars back as 0-d arrays or NumPy scalars."""
    opt = adam_after_two_steps()
    state = opt.state_dict()
    state["lr"], state["step_count"] = np.array(0.25), np.int64(5)
    fresh = optim.Adam(nn.Linear(3, 2).parameters())
    fresh.load_state_dict(state)
    assert (fresh.lr, fresh.step_count) == (0.25, 5) and fresh.m.tobytes() == opt.m.tobytes()


def test_schedule_load_state_dict_refuses_a_wrong_state_and_changes_nothing():
    opt = adam_after_two_steps()
    sched = optim.StepDecay(opt, step_size=2)
    sched.step()
    before = (sched.count, sched.base_lr, opt.lr)
    with raises(ValueError, "StepDecay.load_state_dict: missing keys ['count', 'base_lr']"):
        sched.load_state_dict({})
    with raises(ValueError, "StepDecay.load_state_dict: count must not be negative, got -1"):
        sched.load_state_dict({"count": -1, "base_lr": 0.1})
    assert (sched.count, sched.base_lr, opt.lr) == before


# ---- model presets: images of the size their head is built for ---------------------------------------------------

def images(*shape):
    return Tensor(np.zeros(shape, np.float32))


@pytest.mark.parametrize("size", [(32, 32), (29, 29), (28, 27)])
def test_eip4_refuses_images_that_are_not_28x28(size):
    """On 32x32 images eip4's 4x4 head leaves a 5x5 map, which Flatten turned into 90 logits without an error."""
    with raises(ValueError, f"eip4 expects images of shape (N, 1, 28, 28), got (N, 1, {size[0]}, {size[1]})"):
        eip4()(images(2, 1, *size))


def test_eip4_refuses_images_with_three_channels_and_unbatched_images():
    with raises(ValueError, "eip4 expects images of shape (N, 1, 28, 28), got (N, 3, 28, 28)"):
        eip4()(images(2, 3, 28, 28))
    with raises(ValueError, "eip4 expects input of shape (N, C, H, W), got a 3-D tensor of shape (1, 28, 28)"):
        eip4()(images(1, 28, 28))


@pytest.mark.parametrize("build, smallest", [(compact, 18), (tiny, 22)])
def test_global_pool_presets_take_any_size_down_to_their_smallest(build, smallest):
    """compact and tiny end in a global average pool: 10 logits whatever the image size, so they refuse
    only what they cannot run: another channel count, or images too small for their last 3x3 convolution."""
    model = build().eval()
    name = build.__name__
    with minicnn.no_grad():
        assert model(images(2, 1, 32, 32)).shape == (2, 10)
        assert model(images(2, 1, smallest, smallest + 5)).shape == (2, 10)
    message = (f"{name} expects images of shape (N, 1, H, W) with H and W at least {smallest} "
               f"(it is trained on 28x28), got (N, 1, {smallest - 1}, 28)")
    with raises(ValueError, message):
        model(images(2, 1, smallest - 1, 28))
    with raises(ValueError, f"{name} expects images of shape (N, 1, H, W)"):
        model(images(2, 3, 28, 28))


def test_a_preset_rebuilt_over_its_layers_keeps_its_check():
    model = eip4()
    rebuilt = model.with_layers(model.children())
    assert [id(m) for m in rebuilt] == [id(m) for m in model]
    with raises(ValueError, "eip4 expects images of shape (N, 1, 28, 28), got (N, 1, 32, 32)"):
        rebuilt(images(1, 1, 32, 32))


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="inputs on different devices need a GPU (CuPy and a CUDA device)")
def test_inputs_on_different_devices():
    with raises(RuntimeError, "Add: expected all tensors on the same device, got input 0 on cpu, input 1 on gpu"):
        F.add(t(3), t(3).to("gpu"))


# ---- the kernel-backed ops take float32 and float64 only; the fusion pass keeps a preset's input check ------------

@pytest.mark.parametrize("op, call", [
    ("relu", lambda x: F.relu(x)),
    ("dropout", lambda x: F.dropout(x, 0.5)),
    ("cross_entropy", lambda x: F.cross_entropy(x.reshape(2, 3), np.array([0, 1]))),
])
def test_kernel_backed_ops_refuse_float16_in_one_line(op, call):
    with raises(TypeError, f"{op} supports float32 and float64, got float16"):
        call(Tensor(np.ones(6, np.float16)))


def test_conv2d_weight_as_a_list_is_one_type_error():
    with raises(TypeError, "conv2d expects a Tensor or an array as weight, got list"):
        F.conv2d(t(1, 1, 4, 4), [[1.0]])


def test_a_fused_preset_still_checks_its_images():
    from minicnn import nn
    from minicnn.models import get_model
    run = nn.fuse(get_model("eip4"))
    with raises(ValueError, "eip4 expects images of shape (N, 1, 28, 28), got (N, 1, 32, 32)"):
        run(t(2, 1, 32, 32))
