"""``python -m blackhole_sync``: the same as the ``blackhole-sync`` command."""

import sys

from .cli import main

sys.exit(main())
