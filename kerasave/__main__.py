"""``python -m kerasave``: the command line."""

import sys

from kerasave.cli import main

sys.exit(main())
