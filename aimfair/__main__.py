"""`python -m aimfair ...` runs the command line (aimfair.cli)."""

import sys

from aimfair.cli import main

if __name__ == "__main__":
    sys.exit(main())
