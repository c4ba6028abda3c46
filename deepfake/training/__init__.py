"""The training lab: face-crop cache, pseudo-fakes, degradations and the training loop.

The running product never imports this package; only ``python -m deepfake.train`` does.
"""
