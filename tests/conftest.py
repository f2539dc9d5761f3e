import pytest
import torch

from tav_core.tiny import tiny_components


@pytest.fixture
def tiny():
    """Fresh tiny random components (each test may inflate or tune them)."""
    return tiny_components(seed=0)


@pytest.fixture
def cond(tiny):
    tokens = tiny.tokenizer("a cat", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        return tiny.text_encoder(tokens)[0]


def randomize_temporal(unet, seed=1):
    """Give every temporal layer non-zero weights, so tests see what the temporal attention does."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "attn_temp" in name or "norm_temp" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if name.endswith("norm_temp.weight") else 0))
