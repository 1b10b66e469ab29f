"""Regularizers that limit how far fine-tuning moves the weights (against catastrophic forgetting).

- L2-SP (Li et al., 2018): strength/2 * sum ||theta - theta0||^2 over the trainable parameters.
- EWC (Kirkpatrick et al., 2017): strength/2 * sum F * (theta - theta0)^2, with F the diagonal empirical
  Fisher information estimated on general (non-target) data before fine-tuning: the mean over batches
  of squared gradients of the loss (a batch-level approximation of the per-example estimate).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


from tunelab.modeling import Arch
from tunelab.training.loss import completion_loss


class AnchoredPenalty:
    """strength/2 * sum w * (theta - theta0)^2, with w = 1 (L2-SP) or the Fisher diagonal (EWC).

    Its gradient, strength * w * (theta - theta0), is added to the parameters' gradients in place once per
    optimizer step (`add_to_gradients`), as torch's Adam adds `weight_decay * theta`, rather than differentiated
    through the loss: a penalty in the autograd graph keeps theta - theta0 of every weight for the backward pass and
    allocates more such copies to compute it (a SmolLM2-135M full-fine-tuning step: 1.15x the time and +0.28 GiB
    peak memory through autograd, 1.00x and -0.05 GiB in place; bench/results/regularization.md)."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        strength: float,
        weights: dict[torch.nn.Parameter, torch.Tensor] | None = None,
    ):
        self.params = [p for p in params if p.requires_grad]
        self.anchors = [p.detach().clone() for p in self.params]
        self.strength = strength
        self.weights = [weights[p] for p in self.params] if weights is not None else None

    @torch.no_grad()
    def add_to_gradients(self, scale: float = 1.0) -> None:
        """Add the penalty's gradient, times `scale` (a loss scaler's factor, which the loss's gradients carry
        until unscaled), to each parameter's `.grad`. One parameter-sized temporary at a time."""
        if self.strength == 0:
            return
        for i, (p, a) in enumerate(zip(self.params, self.anchors)):
            pull = p.sub(a)
            if self.weights is not None:
                pull.mul_(self.weights[i])
            if p.grad is None:
                p.grad = pull.mul_(self.strength * scale)
            else:
                p.grad.add_(pull, alpha=self.strength * scale)


def estimate_fisher(
    model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]], arch: Arch, max_batches: int | None = None
) -> dict[torch.nn.Parameter, torch.Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    fisher = {p: torch.zeros_like(p) for p in params}
    was_training = model.training
    model.eval()  # no dropout noise in the estimate
    n = 0
    device = params[0].device
    for batch in batches:
        if max_batches is not None and n >= max_batches:
            break
        model.zero_grad(set_to_none=True)
        completion_loss(model, {k: v.to(device) for k, v in batch.items()}, arch).backward()
        for p in params:
            if p.grad is not None:
                fisher[p] += p.grad.detach().pow(2)
        n += 1
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {p: f / max(n, 1) for p, f in fisher.items()}
