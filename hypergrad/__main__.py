"""`python -m hypergrad ...`: the `hypergrad` command (`hypergrad.cli`), for environments whose
scripts folder is not on PATH."""

from hypergrad.cli import run

run()
