"""``python -m deepfake.train``: the training lab's entry point (:mod:`deepfake.training.train`)."""

import sys

from deepfake.training.train import main

if __name__ == "__main__":
    sys.exit(main())
