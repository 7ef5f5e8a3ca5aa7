"""Shared pieces of the search tests: quiet trainer settings, the tiny space, one training step."""
import torch
import torch.nn as nn

from nni_darts_ext import DartsCellSpace

TRAINER = dict(enable_progress_bar=False, logger=False, enable_checkpointing=False, enable_model_summary=False,
               num_sanity_val_steps=0)


def tiny_space(**kwargs):
    """3 cells (normal, reduce, reduce), C=8, digits-sized input."""
    return DartsCellSpace(**{**dict(width=8, num_cells=3, in_channels=1, image_size=8, num_classes=10), **kwargs})


def train_a_step(model, channels=1, size=8):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = nn.functional.cross_entropy(model(torch.randn(8, channels, size, size)), torch.randint(0, 10, (8,)))
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
