"""`python -m pagelens.cli ...`, as the `pagelens` command."""

from pagelens.cli import main

main()
