"""``python -m deepfake``: see :mod:`deepfake.interfaces.cli`."""

import sys

from deepfake.interfaces.cli import main

sys.exit(main())
