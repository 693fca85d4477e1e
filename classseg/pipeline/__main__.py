"""``python -m classseg.pipeline --test-dir DIR``."""

import sys

from classseg.pipeline.cli import main

sys.exit(main())
