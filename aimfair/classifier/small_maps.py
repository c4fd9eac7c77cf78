"""Convolutions on tiny feature maps as one matrix product: the mask's float32 gradient passes on a CPU.

At 32 px, ResNet-18's layer3 works on 2x2 maps and layer4 on 1x1 maps. A 3x3 convolution with padding 1 there
reads, for each output pixel, the whole map through one corner of its kernel; the other taps only ever meet
padding. oneDNN's float32 kernels multiply the padding all the same, at half the rate they reach on layer1's
8x8 maps (profile, batch of 128: 4.1 ms forward, 8.4 ms backward per 256-channel layer of layer3).
models.SmallMapConv2d already cuts one-pixel outputs down to a matrix product, but through slices of the
weight, whose backward fills a zero tensor of the weight's size per slice and batch: a quarter of the mask
stage's time went into those fills and copies.

WholeMapConv2d handles every convolution whose output pixels (at most 4) all read the same input region:
the region is flattened to [N, R*C] and multiplied by a [P*O, R*C] matrix stacked from one kernel block per
output pixel. The blocks come out of the weight through _KernelBlocks, whose backward adds the matrix's
gradient into a buffer the module keeps (zero outside the blocks), so no tensor of the weight's size is
made per batch. Same parameters, same names, same sums (float32 rounding aside: outputs and gradients agree
with the convolution's to within 1e-5 of their largest entry per layer, tests/test_small_maps.py).

Made for the mask stage's loop (forward, loss.backward() into .grad, next batch). While a recorded forward
awaits its backward, a second recorded forward of the same module takes the usual convolution, so the two
never share the buffer (a graph dropped without a backward stops counting). Limits that follow from the
kept buffer: the weight gradient a backward returns *is* the buffer, so torch.autograd.grad's result for a
weight is overwritten by the module's next backward (loss.backward() is safe: autograd copies it into
.grad), and there is no double backward.

Only the mask's gradient passes use it (aimfair.selective.gradients). Training keeps models.SmallMapConv2d, because switching would
change every trained model in the last bits and so retrain the whole pipeline; benchmarks/finetune_cost.py
measures what training would gain.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from aimfair.classifier.models import SmallMapConv2d

MAX_OUTPUT_PIXELS = 4  # beyond this the stacked matrix grows past what the convolution itself would read


class _KernelBlocks(torch.autograd.Function):
    """The kernel blocks at `corners` (each `size`), stacked as a [P*O, rows*columns*C] matrix whose columns
    follow a channels-last map's memory order (row, column, channel)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, corners: tuple, size: tuple, buffer: torch.Tensor,
                module: nn.Module) -> torch.Tensor:
        ctx.corners, ctx.size, ctx.buffer, ctx.module = corners, size, buffer, module
        (bh, bw), o = size, weight.shape[0]
        blocks = torch.stack([weight[:, :, a:a + bh, b:b + bw] for a, b in corners])  # [P, O, C, bh, bw]
        return blocks.permute(0, 1, 3, 4, 2).reshape(len(corners) * o, -1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (bh, bw), buffer, corners, module = ctx.size, ctx.buffer, ctx.corners, ctx.module
        module._pending = None
        o, c = buffer.shape[:2]
        grad = grad.reshape(len(corners), o, bh, bw, c).permute(0, 1, 4, 2, 3)  # [P, O, C, bh, bw]
        box = (min(a for a, _ in corners), max(a for a, _ in corners) + bh,
               min(b for _, b in corners), max(b for _, b in corners) + bw)
        last = getattr(module, "_written", None)
        if last is not None and last != box:  # another map size wrote elsewhere last time
            buffer[:, :, last[0]:last[1], last[2]:last[3]] = 0
        buffer[:, :, box[0]:box[1], box[2]:box[3]] = 0  # outside the written boxes the buffer stays zero
        module._written = box
        for k, (a, b) in enumerate(corners):
            buffer[:, :, a:a + bh, b:b + bw] += grad[k]  # blocks may overlap (2x2 maps share the centre tap)
        # the module holds the buffer, so autograd's AccumulateGrad cannot adopt it as .grad: it copies it the
        # first time and adds it in afterwards
        return buffer, None, None, None, None


class WholeMapConv2d(SmallMapConv2d):
    """A convolution computed as one matrix product when its output has at most 4 pixels and all of them read
    the same input region; any other shape takes SmallMapConv2d's way."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self._plan(x)
        recorded = torch.is_grad_enabled() and self.weight.requires_grad
        if plan is None or (recorded and self._backward_pending()):
            # a second use before the first one's backward would share the gradient buffer: the usual way
            return super().forward(x)
        (r0, r1, c0, c1), corners, (oh, ow) = plan
        n = x.shape[0]
        matrix = _KernelBlocks.apply(self.weight, corners, (r1 - r0, c1 - c0), self._gradient_buffer(), self)
        if recorded:  # a forward without autograd (validation, torch.no_grad) leaves a pending backward alone
            self._pending = weakref.ref(matrix.grad_fn)  # dies with the graph if it is never backpropagated
        region = x[:, :, r0:r1, c0:c1].permute(0, 2, 3, 1).reshape(n, -1)  # a view for a channels-last map
        bias = None if self.bias is None else self.bias.repeat(len(corners))
        out = F.linear(region, matrix, bias)  # [N, P*O]: output pixels in row-major order, then channels
        return out.view(n, oh, ow, self.out_channels).permute(0, 3, 1, 2)  # channels-last strides, NCHW shape

    def _plan(self, x: torch.Tensor):
        """((r0, r1, c0, c1) input region, kernel block corners, output size), or None for the usual way."""
        if (x.dim() != 4 or self.groups != 1 or self.dilation != (1, 1) or self.padding_mode != "zeros"
                or isinstance(self.padding, str)):
            return None
        (h, w), (kh, kw), (sh, sw), (ph, pw) = x.shape[-2:], self.kernel_size, self.stride, self.padding
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        if not 1 <= oh * ow <= MAX_OUTPUT_PIXELS:
            return None
        # output pixel (i, j) reads input rows i*sh - ph ... i*sh - ph + kh - 1, clipped to the map
        row_windows = {(max(0, i * sh - ph), min(h, i * sh - ph + kh)) for i in range(oh)}
        col_windows = {(max(0, j * sw - pw), min(w, j * sw - pw + kw)) for j in range(ow)}
        if len(row_windows) != 1 or len(col_windows) != 1:
            return None  # the pixels read different regions: a single product would need zero blocks
        (r0, r1), (c0, c1) = row_windows.pop(), col_windows.pop()
        if r0 >= r1 or c0 >= c1:
            return None  # the window sees only padding
        corners = tuple((r0 - (i * sh - ph), c0 - (j * sw - pw)) for i in range(oh) for j in range(ow))
        return (r0, r1, c0, c1), corners, (oh, ow)

    def _backward_pending(self) -> bool:
        """Whether a recorded forward's graph is still alive and not yet backpropagated through this module."""
        pending = getattr(self, "_pending", None)
        return pending is not None and pending() is not None

    def _gradient_buffer(self) -> torch.Tensor:
        buffer = getattr(self, "_buffer", None)
        w = self.weight
        if buffer is None or buffer.shape != w.shape or buffer.dtype != w.dtype or buffer.device != w.device:
            buffer = self._buffer = torch.zeros_like(w)
            self._written = None
        return buffer


def whole_map_matmuls(model: nn.Module) -> nn.Module:
    """Turn every SmallMapConv2d of `model` into a WholeMapConv2d, in place (the same parameter objects)."""
    for module in model.modules():
        if type(module) is SmallMapConv2d:
            module.__class__ = WholeMapConv2d
    return model
