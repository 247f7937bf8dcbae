"""Adam (Kingma and Ba), as ``torch.optim.Adam`` computes it, with the rate and beta1 given at every step.

Written out because constructing ``torch.optim.Adam`` imports TorchDynamo, about a second of start-up,
against fits of a few seconds. Every optimisation in diffmorph (the fit, the refinement, the bent start)
uses this one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Adam:
    """Adam over ``params``; :meth:`step` reads each parameter's ``.grad``.

    >>> x = torch.tensor([1.0], requires_grad=True)
    >>> adam = Adam([x])
    >>> (x * x).sum().backward()
    >>> adam.step(0.1, 0.9)
    >>> round(x.item(), 4)
    0.9
    """

    params: list[torch.Tensor]
    eps: float = 1e-8  # torch's default; the fit passes Keras' 1e-7, as the original used
    beta2: float = 0.999

    def __post_init__(self) -> None:
        self.step_count = 0
        self.first = [torch.zeros_like(p) for p in self.params]
        self.second = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, lr: float, beta1: float = 0.9, rates: torch.Tensor | None = None) -> None:
        """One update.

        Args:
            lr: the learning rate of this step.
            beta1: the first moment's decay of this step.
            rates: one factor per member network (see :class:`~diffmorph.model.MapNet`) scaling each
                member's step, or None.
        """
        self.step_count += 1
        first_correction = 1.0 - beta1**self.step_count
        second_correction_sqrt = math.sqrt(1.0 - self.beta2**self.step_count)
        for param, first, second in zip(self.params, self.first, self.second, strict=True):
            grad = param.grad
            first.lerp_(grad, 1.0 - beta1)
            second.mul_(self.beta2).addcmul_(grad, grad, value=1.0 - self.beta2)
            denominator = (second.sqrt() / second_correction_sqrt).add_(self.eps)
            moment = first if rates is None else per_member(first, rates) * first
            param.addcdiv_(moment, denominator, value=-lr / first_correction)


def per_member(tensor: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``values``, one per member network, shaped to broadcast over ``tensor``'s members.

    A member's parameters are contiguous blocks along dimension 0 (see :class:`~diffmorph.model.MapNet`).

    >>> per_member(torch.zeros(4, 3), torch.tensor([1.0, 2.0])).flatten().tolist()
    [1.0, 1.0, 2.0, 2.0]
    """
    members = values.shape[0]
    block = tensor.shape[0] // members
    return values.repeat_interleave(block).view(-1, *[1] * (tensor.dim() - 1))
