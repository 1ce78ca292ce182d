"""Building blocks: weight-normalised convolutions with data-dependent initialisation,
DenseNet blocks ending in channel attention, strided-conv down- and transposed-conv
up-sampling, and the three network shapes the model uses.

All networks take float tensors ``(B, C, H, W)``; images enter them through
:func:`to_unit`, which maps integer levels ``0..n-1`` to ``[-1, 1]``.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

_INIT_MODE = False


@contextlib.contextmanager
def data_dependent_init() -> Iterator[None]:
    """Within this context, the first forward pass of every uninitialised weight-normalised
    layer sets its gain and bias so that its outputs have zero mean and unit variance per
    channel on that batch (Salimans & Kingma 2016)."""
    global _INIT_MODE
    previous, _INIT_MODE = _INIT_MODE, True
    try:
        yield
    finally:
        _INIT_MODE = previous


class _WeightNorm(nn.Module):
    """Shared logic of :class:`WNConv2d` and :class:`WNConvTranspose2d`: ``w = g * v / ||v||``.

    ``initialized`` is a buffer, so a model loaded from a checkpoint is never re-initialised.
    ``init_scale`` < 1 makes output heads start close to zero (a neutral distribution).
    """

    transposed = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, init_scale: float = 1.0):
        super().__init__()
        shape = (in_channels, out_channels, kernel_size, kernel_size) if self.transposed else \
            (out_channels, in_channels, kernel_size, kernel_size)
        self.v = nn.Parameter(torch.randn(shape) * 0.05)
        self.g = nn.Parameter(torch.ones(out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.stride, self.padding, self.init_scale = stride, padding, init_scale
        self.register_buffer("initialized", torch.tensor(False))
        self.memory_format = torch.contiguous_format  # of the input: see set_memory_format

    @property
    def _dim(self) -> int:
        return 1 if self.transposed else 0  # the output-channel axis of the weight

    def _direction(self) -> torch.Tensor:
        dims = [d for d in range(self.v.dim()) if d != self._dim]
        return self.v * torch.rsqrt(self.v.pow(2).sum(dim=dims, keepdim=True) + 1e-12)

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _INIT_MODE and not bool(self.initialized):
            with torch.no_grad():
                t = self._conv(x, self._direction(), None)
                mean = t.mean(dim=(0, 2, 3))
                std = t.std(dim=(0, 2, 3)) + 1e-6
                self.g.copy_(self.init_scale / std)
                self.bias.copy_(-mean * self.init_scale / std)
                self.initialized.fill_(True)
        shape = (1, -1, 1, 1) if self.transposed else (-1, 1, 1, 1)
        if self.memory_format is not torch.contiguous_format:
            x = x.contiguous(memory_format=self.memory_format)
        # torch._weight_norm is g * v / ||v|| as one fused op (fewer kernels per layer on CPU)
        return self._conv(x, torch._weight_norm(self.v, self.g.view(shape), self._dim), self.bias)


def set_memory_format(module: nn.Module, memory_format: torch.memory_format) -> None:
    """Make every weight-normalised convolution in ``module`` take its input in ``memory_format``
    (``torch.channels_last`` or ``torch.contiguous_format``, the default). Convolutions return their
    input's layout and element-wise ops keep it, so channels-last inputs keep a whole network NHWC.
    Values are the same up to float rounding; what changes is speed: on this project's CPU (AVX-512,
    AMX) a channels-last convolution ran 2.2x (3x3) to 4x (1x1) as fast as NCHW forward + backward,
    and cuDNN's bf16 kernels are NHWC; the eager step gained nothing from it (the element-wise work
    between the convolutions then dominates), so only the compiled paths (``train --compile``,
    ``iw_bound(compile=True)``), which fuse that work, set it. Not stored in checkpoints."""
    for m in module.modules():
        if isinstance(m, _WeightNorm):
            m.memory_format = memory_format


class WNConv2d(_WeightNorm):
    """Weight-normalised ``Conv2d``; ``(B, C_in, H, W) -> (B, C_out, H', W')``."""

    def _conv(self, x, weight, bias):
        return F.conv2d(x, weight, bias, self.stride, self.padding)


class WNConvTranspose2d(_WeightNorm):
    """Weight-normalised ``ConvTranspose2d``; with kernel 4, stride 2, padding 1 it doubles H and W."""

    transposed = True

    def _conv(self, x, weight, bias):
        return F.conv_transpose2d(x, weight, bias, self.stride, self.padding)


def conv3x3(cin: int, cout: int, init_scale: float = 1.0) -> WNConv2d:
    return WNConv2d(cin, cout, 3, padding=1, init_scale=init_scale)


def conv1x1(cin: int, cout: int, init_scale: float = 1.0) -> WNConv2d:
    return WNConv2d(cin, cout, 1, init_scale=init_scale)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation style channel attention: global average pool -> 1x1 conv
    C -> C/8 -> ELU -> 1x1 conv -> sigmoid -> rescale the channels. Shape-preserving."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.squeeze = nn.Conv2d(channels, hidden, 1)
        self.excite = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # on the pooled (B, C) vector the 1x1 convs are matrix products: F.linear does the same
        # arithmetic without a convolution's per-call cost (the weights stay (out, in, 1, 1))
        w = x.mean(dim=(2, 3))
        w = F.elu(F.linear(w, self.squeeze.weight.flatten(1), self.squeeze.bias))
        w = torch.sigmoid(F.linear(w, self.excite.weight.flatten(1), self.excite.bias))
        return x * w[:, :, None, None]


class DenseBlock(nn.Module):
    """DenseNet block + channel attention, ``(B, C, H, W) -> (B, C, H, W)``.

    Each layer is 1x1 conv to 4*growth, ELU, 3x3 conv to growth, ELU; its output is
    concatenated to its input. A 1x1 transition maps back to C channels, channel
    attention rescales them, and the result is added to the input (a residual path
    keeps deep stacks trainable from the first step).
    """

    def __init__(self, channels: int, growth: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList()
        c = channels
        for _ in range(layers):
            self.layers.append(nn.Sequential(conv1x1(c, 4 * growth), nn.ELU(inplace=True), conv3x3(4 * growth, growth),
                                             nn.ELU(inplace=True)))
            c += growth
        self.transition = conv1x1(c, channels, init_scale=0.1)
        self.attention = ChannelAttention(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = x
        for layer in self.layers:
            features = torch.cat([features, layer(features)], dim=1)
        return x + self.attention(self.transition(features))


def _log2_ratio(size_in: int, size_out: int) -> int:
    ratio = size_out / size_in
    steps = round(math.log2(ratio))
    if 2.0 ** steps != ratio:
        raise ValueError(f"cannot resample spatial size {size_in} to {size_out}: sizes must differ by a power of 2")
    return steps


class Widths:
    """The shape of every network: channels and DenseNet growth at each spatial size, and the
    depth (``layers`` per DenseNet block, ``blocks`` per resolution, ``blocks_above`` per
    resolution above ``narrow_above``; negative: ``blocks``).

    ``narrow_above = 0``: one width (and growth) everywhere. Otherwise networks at sizes up to
    ``narrow_above`` have ``width`` channels and above it the width and growth halve with every
    doubling of the size (at least 8 and 4), so that each resolution costs about the same work:
    wide where the features are small, narrow at full resolution, as in the paper's networks.
    Callable: ``widths(size) -> (channels, growth)``.
    """

    def __init__(self, width: int, growth: int, narrow_above: int = 0, layers: int = 1, blocks: int = 1,
                 blocks_above: int = -1):
        self.width, self.growth, self.narrow_above = width, growth, narrow_above
        self.layers, self.blocks = layers, blocks
        self.blocks_above = blocks if blocks_above < 0 else blocks_above

    def __call__(self, size: int) -> Tuple[int, int]:
        if not self.narrow_above or size <= self.narrow_above:
            return self.width, self.growth
        factor = 2 ** math.ceil(math.log2(size / self.narrow_above))
        return max(self.width // factor, 8), max(self.growth // factor, 4)

    def channels(self, size: int) -> int:
        return self(size)[0]

    def dense_blocks(self, size: int) -> List[nn.Module]:
        """The DenseNet blocks of one resolution: ``blocks``, or ``blocks_above`` at the narrowed sizes."""
        count = self.blocks_above if self.narrow_above and size > self.narrow_above else self.blocks
        return [DenseBlock(*self(size), self.layers) for _ in range(count)]


class Resample(nn.Sequential):
    """Dense blocks interleaved with strided 3x3 convs (halving) or transposed 4x4 convs
    (doubling) to go from spatial size ``size_in`` to ``size_out`` (a power-of-2 ratio).
    ``(B, widths.channels(size_in), size_in, size_in) -> (B, widths.channels(size_out), size_out, size_out)``."""

    def __init__(self, widths: Widths, size_in: int, size_out: int):
        steps = _log2_ratio(size_in, size_out)
        modules: List[nn.Module] = []
        size = size_in
        for _ in range(abs(steps)):
            modules += widths.dense_blocks(size)
            c_in = widths.channels(size)
            if steps < 0:
                size //= 2
                modules += [WNConv2d(c_in, widths.channels(size), 3, stride=2, padding=1), nn.ELU(inplace=True)]
            else:
                size *= 2
                modules += [WNConvTranspose2d(c_in, widths.channels(size), 4, stride=2, padding=1),
                            nn.ELU(inplace=True)]
        modules += widths.dense_blocks(size)
        super().__init__(*modules)


def to_unit(level: torch.Tensor, num_values: int) -> torch.Tensor:
    """Integer level ``0..num_values-1`` (uint8, ``(B, C, H, W)``) -> float in ``[-1, 1]``."""
    return level.float() * (2.0 / (num_values - 1)) - 1.0


class Branch(nn.Module):
    """Stem conv + :class:`Resample`: one input (a level or a latent) brought to spatial size
    ``size_out`` with ``widths.channels(size_out)`` channels."""

    def __init__(self, in_channels: int, size_in: int, size_out: int, widths: Widths):
        super().__init__()
        self.stem = conv3x3(in_channels, widths.channels(size_in))
        self.body = Resample(widths, size_in, size_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(F.elu(self.stem(x), inplace=True))


class GaussianHead(nn.Module):
    """Merges branch features (concatenated, at spatial size ``size``) into the parameters of a
    diagonal Gaussian over a latent of ``latent_channels`` channels: ``(B, 2 * latent_channels, s, s)``."""

    def __init__(self, in_channels: int, size: int, latent_channels: int, widths: Widths):
        super().__init__()
        self.merge = conv1x1(in_channels, widths.channels(size))
        self.body = nn.Sequential(*widths.dense_blocks(size))
        self.out = conv3x3(widths.channels(size), 2 * latent_channels, init_scale=0.1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(F.elu(self.merge(features), inplace=True)))


class LikelihoodHead(nn.Module):
    """Merges branch features at spatial size ``size_in``, upsamples them to ``size_out`` and
    ends in ``out_params`` channels (mixture parameters): ``(B, out_params, size_out, size_out)``.
    ``out_kernel``: the last conv's kernel (3, or 1: a per-pixel map from the features)."""

    def __init__(self, in_channels: int, size_in: int, size_out: int, out_params: int, widths: Widths,
                 out_kernel: int = 3):
        super().__init__()
        self.merge = conv1x1(in_channels, widths.channels(size_in))
        self.body = Resample(widths, size_in, size_out)
        self.out = WNConv2d(widths.channels(size_out), out_params, out_kernel, padding=out_kernel // 2,
                            init_scale=0.1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(F.elu(self.merge(features), inplace=True)))


def latent_size(level_size: int, max_size: int) -> int:
    """Spatial size of a latent inferred from a level of spatial size ``level_size``."""
    return min(level_size, max_size)


Shape = Tuple[int, int, int]
