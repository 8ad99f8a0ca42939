"""Convolutional backbones of the few-shot literature: Conv4 for images, a 1-D twin for time series.

Normalisation (``norm``):

- ``"batch"``: batch norm as in the MAML / ProtoNets papers. Gradient-based learners call
  :func:`use_batch_statistics` on the model, so every forward normalises with the statistics of the
  batch it sees; under ``vmap`` over tasks that is *per-task* statistics (the MAML reference code's
  convention, including at test time). ProtoNets keeps running statistics for evaluation instead.
- ``"group"``: group norm (per sample), which behaves the same in training, evaluation and on a device
  that predicts one sample at a time;
- ``"none"``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ...errors import InputError


def _norm(kind: str, channels: int, dims: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm1d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise InputError(f"unknown norm {kind!r}; choose batch, group or none")


class ConvNet(nn.Module):
    """``blocks`` x [conv 3, ``width`` channels, norm, max-pool 2, ReLU] -> flatten -> optional linear head.

    Pooling comes before the ReLU: the same function as the papers' [..., ReLU, max-pool] with the same gradients
    (ReLU is monotone, so the window's first maximum is the same element, and a window whose maximum is not
    positive passes no gradient either way), with the ReLU and its backward on a quarter (2-D) or half (1-D) of
    the values: about 6-10% of a first-order MAML step on Conv4.

    Args:
        in_channels: input channels (1 for Omniglot, 3 for RGB, sensor channels for time series).
        out_dim: classes of the linear ``head``; ``0`` for an embedding network (ProtoNets).
        width: channels of every block (64 in the papers).
        blocks: number of blocks (4 = Conv4).
        dims: 2 for images ``(C, H, W)``, 1 for time series ``(C, L)``.
        input_size: spatial size (H or L) used to size the head.
        norm: ``batch``, ``group`` or ``none``.
    """

    def __init__(self, in_channels: int, out_dim: int, width: int = 64, blocks: int = 4, dims: int = 2,
                 input_size: int = 28, norm: str = "batch"):
        super().__init__()
        conv, pool = (nn.Conv2d, nn.MaxPool2d) if dims == 2 else (nn.Conv1d, nn.MaxPool1d)
        layers: list[nn.Module] = []
        channels, size = in_channels, input_size
        for _ in range(blocks):
            layers += [conv(channels, width, 3, padding=1), _norm(norm, width, dims), pool(2), nn.ReLU()]
            channels, size = width, size // 2
        self.body = nn.Sequential(*layers)
        self.embedding_dim = width * max(size, 1) ** dims
        self.head = nn.Linear(self.embedding_dim, out_dim) if out_dim > 0 else None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, C, H, W)`` or ``(n, C, L)`` -> ``(n, embedding_dim)``."""
        return self.body(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, out_dim)``, or embeddings ``(n, embedding_dim)`` when there is no head."""
        z = self.embed(x)
        return z if self.head is None else self.head(z)

    def forward_tasks(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """``T`` tasks at once, each with its own parameters: ``params[name]`` ``(T, *shape)`` (every parameter),
        ``x`` ``(T, n, C, *spatial)`` -> ``(T, n, out_dim or embedding_dim)``.

        The same function as ``vmap(functional_call(self, ...))`` over tasks, without ``vmap``'s layout shuffles:
        the tasks sit side by side along the channels, ``(n, T*C, *spatial)``, so each convolution is one grouped
        convolution (``groups=T``), batch norm over the ``T*width`` channels is per-task batch statistics, group
        norm with ``T*groups`` groups is per-task group norm, and ReLU / pooling act per channel anyway. Needs
        :func:`supports_task_batching` (batch norm without running statistics, as :func:`use_batch_statistics`
        leaves it).
        """
        t, n = x.shape[:2]
        h = x.transpose(0, 1).reshape(n, t * x.shape[2], *x.shape[3:])
        conv_fn = F.conv2d if isinstance(self.body[0], nn.Conv2d) else F.conv1d
        for i, m in enumerate(self.body):
            w, b = params.get(f"body.{i}.weight"), params.get(f"body.{i}.bias")
            wf, bf = (None if v is None else v.reshape(-1) for v in (w, b))  # per-task vectors side by side
            if isinstance(m, nn.modules.conv._ConvNd):
                h = conv_fn(h, w.reshape(-1, *w.shape[2:]), bf, m.stride, m.padding, m.dilation, groups=t * m.groups)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                h = F.batch_norm(h, None, None, wf, bf, training=True, eps=m.eps)
            elif isinstance(m, nn.GroupNorm):
                h = F.group_norm(h, t * m.num_groups, wf, bf, m.eps)
            else:  # parameterless and per channel: ReLU, pooling, Identity
                h = m(h)
        z = h.reshape(n, t, -1).transpose(0, 1)  # (T, n, embedding_dim), each sample's features in flatten(1) order
        if self.head is None:
            return z
        return torch.baddbmm(params["head.bias"][:, None, :], z, params["head.weight"].transpose(1, 2))


def conv4(in_channels: int = 1, out_dim: int = 5, width: int = 64, input_size: int = 28, norm: str = "batch",
          **kw) -> ConvNet:
    """Conv4 of Vinyals et al. / Finn et al. / Snell et al. for ``(C, H, W)`` images."""
    return ConvNet(in_channels, out_dim, width=width, blocks=4, dims=2, input_size=input_size, norm=norm, **kw)


def conv1d(in_channels: int = 1, out_dim: int = 5, width: int = 64, input_size: int = 128, blocks: int = 4,
           norm: str = "batch", **kw) -> ConvNet:
    """A small 1-D conv net for ``(C, L)`` sensor time series (same blocks, 1-D)."""
    return ConvNet(in_channels, out_dim, width=width, blocks=blocks, dims=1, input_size=input_size, norm=norm, **kw)


def has_batch_norm(model: nn.Module) -> bool:
    """Whether ``model`` contains batch-norm layers (they need per-task care under ``vmap``)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def supports_task_batching(model: nn.Module) -> bool:
    """Whether ``model.forward_tasks`` computes what ``vmap`` over tasks would: a :class:`ConvNet` whose batch
    norms (if any) normalise with batch statistics and keep no running ones."""
    if not isinstance(model, ConvNet):
        return False
    allowed = (nn.modules.conv._ConvNd, nn.GroupNorm, nn.Identity, nn.ReLU, nn.modules.pooling._MaxPoolNd)
    for m in model.body:
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.running_mean is not None or m.track_running_stats:
                return False
        elif not isinstance(m, allowed):
            return False
    return True


def use_batch_statistics(model: nn.Module) -> nn.Module:
    """Make every batch norm normalise with the current batch's statistics and keep no running stats.

    Required for ``torch.func`` transforms (no in-place buffer updates) and gives per-task statistics
    under ``vmap`` over tasks.
    """
    torch.func.replace_all_batch_norm_modules_(model)
    return model


def inference_model(model: nn.Module, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """An evaluation-mode copy of ``model`` holding ``tensors`` (every parameter and buffer, by name), made fast
    for inference only: each batch norm with running statistics folded into the convolution before it, and
    2-D convolutions in ``channels_last`` memory format (feed it :func:`inference_input`).

    Both are measured wins for embedding Omniglot-sized images on a CPU (together about 2x for Conv4); outputs
    differ from the unfolded model by float32 rounding only (~1e-6 relative). The copy has no gradients.
    """
    fast = copy.deepcopy(model).eval()
    fast.load_state_dict({k: v.detach() for k, v in tensors.items()}, strict=True)
    for seq in [m for m in fast.modules() if isinstance(m, nn.Sequential)]:
        layers = list(seq)
        for i in range(len(layers) - 1):
            conv, norm = layers[i], layers[i + 1]
            if (isinstance(conv, nn.modules.conv._ConvNd) and isinstance(norm, nn.modules.batchnorm._BatchNorm)
                    and norm.running_mean is not None):
                seq[i], seq[i + 1] = fuse_conv_bn_eval(conv, norm), nn.Identity()
    fast.requires_grad_(False)
    if any(isinstance(m, nn.Conv2d) for m in fast.modules()):
        fast = fast.to(memory_format=torch.channels_last)
    return fast


def inference_input(x: torch.Tensor) -> torch.Tensor:
    """Images ``(n, C, H, W)`` in the ``channels_last`` layout :func:`inference_model` expects; else unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
