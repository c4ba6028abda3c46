"""``python -m deepfake``: see :mod:`deepfake.cli`."""

import sys

from deepfake.cli import main

sys.exit(main())
