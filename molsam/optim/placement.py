"""Where the base optimizer's state lives after a resume (Adam's `step` counters above all).

torch's Adam keeps `step` as a float32 tensor: on the CPU for the default (non-capturable) Adam,
which reads it with `.item()`; on the parameter's device for `capturable=True` (needed to replay
a step as a CUDA graph) and `fused=True`. A state dict also restores the saving run's param-group
flags, so a checkpoint written by a captured CUDA run would make a CPU resume build a capturable
Adam (which refuses CPU tensors), and one written on the CPU would silently turn capturing off.
`settle_optimizer_state` puts both back to what this run built, and with them the form of `lr`
and `rho` (0-dim device tensors for a captured step, whose graph reads them at replay; floats
otherwise, which a non-capturable foreach Adam requires).
"""

from __future__ import annotations

import torch


def settle_optimizer_state(optimizer: torch.optim.Optimizer, capturable: bool) -> None:
    """After `load_state_dict`: set every group's `capturable` flag (where the optimizer has
    one) and move `step` counters to float32 on the parameter's device (capturable) or on the
    CPU (otherwise: a step counter on CUDA would cost two host syncs per parameter per step).

    Works on molsam's wrappers (through their `base_optimizer`) and on plain torch optimizers.
    """
    base = getattr(optimizer, "base_optimizer", optimizer)
    for group in base.param_groups:
        if "capturable" in group:
            group["capturable"] = capturable
        device = next((p.device for p in group["params"]), torch.device("cpu"))
        for key in ("lr", "rho"):
            if key not in group:
                continue
            if capturable:
                group[key] = torch.tensor(float(group[key]), dtype=torch.float32, device=device)
            elif isinstance(group[key], torch.Tensor):
                group[key] = float(group[key])
        for p in group["params"]:
            step = base.state.get(p, {}).get("step")
            if isinstance(step, torch.Tensor):
                device = p.device if capturable else torch.device("cpu")
                base.state[p]["step"] = step.to(device=device, dtype=torch.float32)
