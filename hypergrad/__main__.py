"""`python -m hypergrad ...`: the `hypergrad` command (`hypergrad.cli`), for environments whose
scripts folder is not on PATH."""

from hypergrad._interrupts import ctrl_c_kept

with ctrl_c_kept():  # a Ctrl-C dropped while hypergrad.cli is imported is raised, not ignored
    from hypergrad.cli import run

run()
