"""`python -m buildfarm ...` runs the `buildfarm` command (the git hook calls it so)."""

from .cli import main

main(prog_name="buildfarm")
