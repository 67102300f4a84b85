"""`python -m hypergrad ...`: the `hypergrad` command (`hypergrad.cli`), for environments whose
scripts folder is not on PATH."""

import sys

from hypergrad.cli import main

sys.exit(main())
