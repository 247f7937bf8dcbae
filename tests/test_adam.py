import pytest
import torch

from diffmorph.adam import Adam


@pytest.mark.parametrize(("eps", "schedule"), [(1e-7, "per step"), (1e-8, "constant")])
def test_adam_matches_pytorchs(eps, schedule):
    # The fit passes Keras' eps and changes beta1 every step; the bent start uses torch's defaults.
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(5, 3, generator=generator)
    ours, theirs = start.clone().requires_grad_(), start.clone().requires_grad_()
    optimizer = Adam([ours], eps=eps)
    reference = torch.optim.Adam([theirs], lr=1e-2, betas=(0.9, 0.999), eps=eps)
    for step in range(20):
        for param in (ours, theirs):
            param.grad = None
            (param.sin() * torch.arange(15.0).view(5, 3)).sum().backward()
        beta1 = 0.85 + 0.005 * step if schedule == "per step" else 0.9
        reference.param_groups[0]["betas"] = (beta1, 0.999)
        optimizer.step(1e-2, beta1)
        reference.step()
    if schedule == "constant":
        assert torch.equal(ours, theirs)  # the bent start's results do not depend on which of the two ran
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
