"""Entry point of `python -m qtmesh`."""

from qtmesh.cli import main

main()
