"""``python -m refractium``: the command line."""

import sys

from refractium.cli import main

sys.exit(main())
