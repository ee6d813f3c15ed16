"""Test-only monkeypatches of torch (imported by the parity tests and the fixture script)."""

from __future__ import annotations

import contextlib

import numpy as np


@contextlib.contextmanager
def fixed_standard_normal(noise):
    """Make ``torch.distributions.Normal.rsample`` use ``noise`` as its standard normal draw.

    Patches ``torch.distributions.normal._standard_normal`` (``rsample`` is
    ``loc + eps * scale``); every call must ask for ``noise.size`` numbers and gets ``noise``
    reshaped. Yields the list of requested shapes, so callers can check how many draws
    happened (``ClipPPOLoss``'s MC entropy makes exactly one per forward).
    """
    import torch
    import torch.distributions.normal as normal_mod

    noise = torch.as_tensor(np.array(noise, dtype=np.float32, copy=True))
    calls = []
    original = normal_mod._standard_normal

    def fake(shape, dtype, device):
        shape = torch.Size(shape)
        if shape.numel() != noise.numel():
            raise ValueError(f"fixed noise has {noise.numel()} values, rsample wants {shape}")
        calls.append(tuple(shape))
        return noise.to(dtype=dtype, device=device).reshape(shape).clone()

    normal_mod._standard_normal = fake
    try:
        yield calls
    finally:
        normal_mod._standard_normal = original
