"""FusedAdam (``sdk/optim.py``) against ``torch.optim.Adam``, and its checkpoints."""

from __future__ import annotations

import pytest
import torch

from metaedge.errors import InputError
from metaedge.sdk import checkpoint as ckpt
from metaedge.sdk.optim import FusedAdam, fused_adam_serves


def _params(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(5, 3, generator=g), torch.randn(3, generator=g), torch.randn(1, generator=g)]


def _steps(opt, params, start: int, stop: int) -> None:
    for i in range(start, stop):
        g = torch.Generator().manual_seed(100 + i)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.param_groups[0]["lr"] = 1e-2 / (1 + i)  # the trainer's schedule changes lr between steps
        opt.step()


@pytest.mark.parametrize("fused", [True, False])
def test_steps_equal_torch_adam(fused):
    ours, theirs = _params(), _params()
    _steps(FusedAdam(ours, lr=1e-2), ours, 0, 12)
    _steps(torch.optim.Adam(theirs, lr=1e-2, fused=fused), theirs, 0, 12)
    moved = max((a - b).abs().max().item() for a, b in zip(ours, _params()))
    assert moved > 1e-2
    worst = max((a - b).abs().max().item() for a, b in zip(ours, theirs))
    assert worst == 0.0 if fused else worst < 1e-6


def test_checkpoint_round_trip_and_resume_from_torch_adam(tmp_path):
    """A run saved by ``torch.optim.Adam`` (older runs) resumes in FusedAdam as if uninterrupted."""
    full = _params()
    _steps(torch.optim.Adam(full, lr=1e-2, fused=True), full, 0, 10)
    part = _params()
    torch_opt = torch.optim.Adam(part, lr=1e-2)
    _steps(torch_opt, part, 0, 6)
    ckpt.save_optimizer(tmp_path / "torch.safetensors", torch_opt)
    resumed = FusedAdam(part, lr=1e-2)
    ckpt.load_optimizer(tmp_path / "torch.safetensors", resumed)
    _steps(resumed, part, 6, 10)
    assert max((a - b).abs().max().item() for a, b in zip(full, part)) < 1e-6
    ckpt.save_optimizer(tmp_path / "ours.safetensors", resumed)
    again = FusedAdam(_params(), lr=1.0)
    ckpt.load_optimizer(tmp_path / "ours.safetensors", again)
    assert again.param_groups[0]["lr"] == resumed.param_groups[0]["lr"]
    for i, s in resumed.state.items():
        assert all(torch.equal(s[k], again.state[i][k]) for k in s)


def test_a_state_of_other_parameters_is_refused(tmp_path):
    params = _params()
    opt = FusedAdam(params, lr=1e-2)
    _steps(opt, params, 0, 1)
    ckpt.save_optimizer(tmp_path / "o.safetensors", opt)
    with pytest.raises(InputError, match="does not hold one group over this run's parameters"):
        ckpt.load_optimizer(tmp_path / "o.safetensors", FusedAdam(params[:2], lr=1e-2))
    other = [torch.zeros(4, 3), torch.zeros(3), torch.zeros(1)]
    with pytest.raises(InputError, match="of parameter 0 does not fit"):
        ckpt.load_optimizer(tmp_path / "o.safetensors", FusedAdam(other, lr=1e-2))


def test_serves_cpu_floating_point_only():
    assert fused_adam_serves(_params())
    assert not fused_adam_serves([torch.zeros(3, dtype=torch.int64)]) and not fused_adam_serves([])
