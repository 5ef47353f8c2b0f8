"""`python -m devicefit` runs the command-line interface."""

from devicefit.cli import main

raise SystemExit(main())
