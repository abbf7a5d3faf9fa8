"""``python -m tal.cli`` (and ``torchrun -m tal.cli``): the ``tal`` command."""

import sys

from tal.cli import main

sys.exit(main())
