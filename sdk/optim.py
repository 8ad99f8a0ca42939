"""The outer-loop optimiser: Adam as ``torch.optim.Adam(fused=True)`` computes it, without ``torch.optim``.

Why not ``torch.optim.Adam``: constructing any ``torch.optim`` optimiser imports ``torch._dynamo`` (1.2-1.8 s on
this project's 2-core machine), a fifth of a whole 5,000-iteration first-order sinusoid run on the default path.
This class calls the same fused kernel (``torch._fused_adam_``, one call for all tensors), so its steps equal
``torch.optim.Adam(fused=True)``'s bit for bit (``tests/test_optim.py``), and its ``state_dict`` has torch's layout,
so ``optimizer.safetensors`` files are interchangeable with runs written by ``torch.optim.Adam``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import InputError

#: the hyper-parameters torch.optim.Adam records per group; only lr, betas and eps may differ from these
_GROUP_DEFAULTS: dict[str, Any] = {"weight_decay": 0.0, "amsgrad": False, "maximize": False, "foreach": None,
                                   "capturable": False, "differentiable": False, "fused": True,
                                   "decoupled_weight_decay": False}


def fused_adam_serves(params: list[torch.Tensor]) -> bool:
    """Whether :class:`FusedAdam` can step ``params``: floating-point tensors on the CPU or a CUDA device, with a
    torch that has the fused kernel (a private op: a torch without it gets ``torch.optim.Adam``)."""
    on_devices = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return hasattr(torch, "_fused_adam_") and bool(params) and on_devices


class FusedAdam:
    """Adam over ``params`` (one group); set ``param_groups[0]["lr"]`` to change the step size between steps.

    Reads each parameter's ``.grad``; a parameter without one is skipped for that step, as torch does.
    """

    def __init__(self, params: list[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params = list(params)
        self.param_groups: list[dict[str, Any]] = [{"lr": float(lr), "betas": tuple(betas), "eps": float(eps),
                                                    **_GROUP_DEFAULTS, "params": self.params}]
        #: per parameter index: ``step`` (0-d float32 tensor), ``exp_avg``, ``exp_avg_sq`` (the parameter's shape)
        self.state: dict[int, dict[str, torch.Tensor]] = {}

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        idx = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not idx:
            return
        for i in idx:
            if i not in self.state:
                p = self.params[i]
                self.state[i] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                                 "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
        steps = [self.state[i]["step"] for i in idx]
        torch._foreach_add_(steps, 1)
        beta1, beta2 = group["betas"]
        torch._fused_adam_([self.params[i] for i in idx], [self.params[i].grad for i in idx],
                           [self.state[i]["exp_avg"] for i in idx], [self.state[i]["exp_avg_sq"] for i in idx], [],
                           steps, lr=float(group["lr"]), beta1=float(beta1), beta2=float(beta2), weight_decay=0.0,
                           eps=float(group["eps"]), amsgrad=False, maximize=False)

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim.Adam.state_dict()``'s layout: ``{"state": {i: {...}}, "param_groups": [{..., "params"}]}``."""
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {"state": {i: dict(s) for i, s in self.state.items()},
                "param_groups": [{**group, "params": list(range(len(self.params)))}]}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (this class's or ``torch.optim.Adam``'s without weight decay or AMSGrad)."""
        groups = sd.get("param_groups")
        if not isinstance(groups, list) or len(groups) != 1 or list(groups[0].get("params", [])) != list(
                range(len(self.params))):
            raise InputError("the saved optimizer state does not hold one group over this run's parameters; the "
                             "file belongs to another run: restore it or train without --resume")
        group = groups[0]
        if float(group.get("weight_decay", 0.0)) != 0.0 or group.get("amsgrad") or group.get("maximize"):
            raise InputError("the saved optimizer state uses weight decay, AMSGrad or maximize, which metaedge's "
                             "trainer never sets; the file belongs to another program: train without --resume")
        state: dict[int, dict[str, torch.Tensor]] = {}
        for i, s in sd.get("state", {}).items():
            i = int(i)
            p = self.params[i] if 0 <= i < len(self.params) else None
            if p is None or set(s) != {"step", "exp_avg", "exp_avg_sq"} or any(
                    tuple(s[k].shape) != tuple(p.shape) for k in ("exp_avg", "exp_avg_sq")):
                raise InputError(f"the saved optimizer state of parameter {i} does not fit this run's parameters; "
                                 "the file belongs to another run: restore it or train without --resume")
            state[i] = {"step": s["step"].to(device=p.device, dtype=torch.float32).reshape(()).clone(),
                        "exp_avg": s["exp_avg"].to(p).clone(), "exp_avg_sq": s["exp_avg_sq"].to(p).clone()}
        self.state = state
        self.param_groups[0].update(lr=float(group["lr"]), betas=tuple(group["betas"]), eps=float(group["eps"]))
