"""``python -m deepfake.evaluate``: the evaluation's entry point (:mod:`deepfake.evaluation.evaluate`)."""

import sys

from deepfake.evaluation.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
