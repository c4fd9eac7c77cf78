"""aimfair.classifier.small_maps: convolutions on tiny maps as matrix products give the convolution's outputs and gradients."""

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from aimfair.classifier.models import SmallMapConv2d, build_classifier
from aimfair.classifier.small_maps import WholeMapConv2d, whole_map_matmuls


def _pair(conv: nn.Conv2d) -> tuple[nn.Conv2d, WholeMapConv2d]:
    plain = copy.deepcopy(conv)
    plain.__class__ = nn.Conv2d
    fast = copy.deepcopy(conv)
    fast.__class__ = WholeMapConv2d
    return plain, fast


def _close(a: torch.Tensor, b: torch.Tensor, tolerance: float = 1e-5) -> None:
    """Equal up to float32 rounding, relative to the largest entry (sums in another order differ there)."""
    a, b = a.detach(), b.detach()
    scale = float(a.abs().max()) or 1.0
    assert float((a - b).abs().max()) / scale < tolerance


# (in, out, kernel, stride, padding, bias, map size, whether the matrix product is taken)
SHAPES = [
    (8, 6, 3, 1, 1, False, 2, True),   # layer3 of ResNet-18 at 32 px: every output pixel reads the whole map
    (8, 6, 3, 1, 1, True, 2, True),    # with a bias
    (8, 6, 3, 1, 1, False, 1, True),   # layer4: one pixel, centre tap
    (8, 6, 3, 2, 1, False, 2, True),   # layer4's first convolution: a 2x2 map to one pixel
    (8, 6, 1, 2, 0, False, 2, True),   # layer4's downsample: one pixel reading only the map's corner
    (8, 6, 3, 2, 1, False, 4, False),  # layer3's first convolution: its pixels read different regions
    (8, 6, 3, 1, 1, False, 4, False),  # a 4x4 map: more than 4 output pixels
    (8, 6, 3, 1, 3, False, 1, False),  # padding 3 on a 1x1 map: 9 output pixels, more than 4
]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("cin,cout,k,stride,pad,bias,size,taken", SHAPES)
def test_outputs_and_gradients_equal_the_convolutions(cin, cout, k, stride, pad, bias, size, taken, channels_last):
    torch.manual_seed(0)
    plain, fast = _pair(nn.Conv2d(cin, cout, k, stride, pad, bias=bias))
    x = torch.randn(5, cin, size, size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        plain, fast = (m.to(memory_format=torch.channels_last) for m in (plain, fast))
    assert (fast._plan(x) is not None) == taken
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    outs = [plain(xs[0]), fast(xs[1])]
    _close(outs[0], outs[1])
    target = torch.randn_like(outs[0])
    for out in outs:
        (out * target).sum().backward()
    _close(xs[0].grad, xs[1].grad)
    _close(plain.weight.grad, fast.weight.grad)
    if bias:
        _close(plain.bias.grad, fast.bias.grad)


def test_gradients_add_up_over_batches_like_the_convolutions():
    """The gradient buffer the module keeps is rewritten each batch; weight.grad must still be the sum."""
    torch.manual_seed(0)
    plain, fast = _pair(nn.Conv2d(8, 6, 3, 1, 1, bias=False))
    for _ in range(3):
        x = torch.randn(4, 8, 2, 2)
        for m in (plain, fast):
            (m(x) ** 2).sum().backward()
    _close(plain.weight.grad, fast.weight.grad)


def _fast_path_taken(module: WholeMapConv2d) -> bool:
    """Whether the module's last backward went through the matrix product (only that path fills the buffer)."""
    return getattr(module, "_buffer", None) is not None and bool(module._buffer.abs().sum() > 0)


def test_a_forward_without_autograd_between_forward_and_backward_changes_nothing():
    """A no-grad forward (a validation step, say) must not clear the guard of a pending backward: the next
    recorded forward would share the buffer and the first backward's gradient would be lost."""
    torch.manual_seed(0)
    plain, fast = _pair(nn.Conv2d(8, 8, 3, 1, 1, bias=False))
    x = torch.randn(4, 8, 2, 2)
    for m in (plain, fast):
        first = m(x)
        with torch.no_grad():
            m(x)
        (first.square().sum() + m(x * 2).sum()).backward()
    _close(plain.weight.grad, fast.weight.grad)
    assert _fast_path_taken(fast)


def test_one_module_on_two_map_sizes_keeps_no_stale_gradient():
    """A 1x1 map writes only the centre tap, a 2x2 map the whole kernel: after the 2x2 batch, a 1x1 batch must
    not carry the 2x2 batch's outer taps along."""
    torch.manual_seed(0)
    plain, fast = _pair(nn.Conv2d(8, 6, 3, 1, 1, bias=False))
    for size in (2, 1, 2, 1):
        x = torch.randn(4, 8, size, size)
        for m in (plain, fast):
            m.weight.grad = None
            (m(x) ** 2).sum().backward()
        _close(plain.weight.grad, fast.weight.grad)
        assert _fast_path_taken(fast)


def test_a_graph_dropped_without_backward_does_not_block_the_matrix_product():
    torch.manual_seed(0)
    plain, fast = _pair(nn.Conv2d(8, 6, 3, 1, 1, bias=False))
    x = torch.randn(4, 8, 2, 2)
    fast(x).sum()  # recorded, never backpropagated: the graph is dropped here
    assert not fast._backward_pending()
    for m in (plain, fast):
        (m(x) ** 2).sum().backward()
    _close(plain.weight.grad, fast.weight.grad)
    assert _fast_path_taken(fast)


def test_a_second_use_before_backward_is_still_right():
    torch.manual_seed(0)
    plain, fast = _pair(nn.Conv2d(8, 8, 3, 1, 1, bias=False))
    x = torch.randn(4, 8, 2, 2)
    for m in (plain, fast):
        m(m(x)).square().sum().backward()
    _close(plain.weight.grad, fast.weight.grad)


@pytest.mark.parametrize("bn_mode", ["train", "eval"])
def test_a_resnet_at_32_px_has_the_same_gradients_and_every_small_map_is_converted(bn_mode):
    torch.manual_seed(0)
    plain = build_classifier().to(memory_format=torch.channels_last)
    fast = whole_map_matmuls(copy.deepcopy(plain))
    assert not any(type(m) is SmallMapConv2d for m in fast.modules())
    assert sum(type(m) is WholeMapConv2d for m in fast.modules()) == sum(isinstance(m, nn.Conv2d) for m in plain.modules())
    x = torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = (torch.arange(8) % 2).float()
    for m in (plain, fast):
        m.train(bn_mode == "train")
        nn.BCEWithLogitsLoss()(m(x).squeeze(1), y).backward()
    for p, q in zip(plain.parameters(), fast.parameters()):
        _close(p.grad, q.grad, 1e-4)  # a whole network in train-mode BatchNorm adds up more rounding
    # layer3 works on 2x2 maps, layer4 on 1x1 ones: all take the product except layer3's two stride-2
    # convolutions, whose four output pixels read different parts of layer2's 4x4 map
    taken = {name for name, m in fast.named_modules() if isinstance(m, WholeMapConv2d) and _fast_path_taken(m)}
    expected = {name for name, m in fast.named_modules() if isinstance(m, WholeMapConv2d)
                and name.startswith(("layer3", "layer4")) and name not in ("layer3.0.conv1", "layer3.0.downsample.0")}
    assert taken == expected


def test_the_mask_stage_uses_them_and_leaves_the_model_alone(monkeypatch):
    from aimfair.config import load_params
    from aimfair.data.loading import ImageSet
    from aimfair.selective.gradients import mean_gradients, set_gradients

    torch.manual_seed(0)
    model = build_classifier()
    classes = [type(m) for m in model.modules()]
    rng = np.random.default_rng(0)
    images = ImageSet(pixels=rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8), y=np.arange(20) % 2,
                      s=np.arange(20) // 10, image_ids=[f"{i}.png" for i in range(20)])
    params = load_params("params.yaml")
    params = dataclasses.replace(params, selection=dataclasses.replace(params.selection, batch_size=8))
    products = []  # the matrix product's gradient buffer is only asked for on its way
    buffer_of = WholeMapConv2d._gradient_buffer
    monkeypatch.setattr(WholeMapConv2d, "_gradient_buffer", lambda self: products.append(1) or buffer_of(self))
    fast = set_gradients(params, model, {"real": images}, torch.device("cpu"), progress=False)["real"]
    assert products
    sel = params.selection
    plain = mean_gradients(model, images, torch.device("cpu"), sel.batch_size, sel.bn_mode, sel.seed)
    assert [type(m) for m in model.modules()] == classes
    for name, g in plain.items():
        _close(g, fast[name], 1e-4)
