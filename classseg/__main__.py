"""``python -m classseg``: the same as the ``classseg`` command."""

import sys

from classseg.cli import main

sys.exit(main())
