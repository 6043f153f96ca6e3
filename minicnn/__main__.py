"""``python -m minicnn`` runs the same command-line interface as the ``minicnn`` script."""
import sys

from .cli import main

sys.exit(main())
