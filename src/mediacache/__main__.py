"""`python -m mediacache`: the command line."""

from mediacache.cli import main

main()
