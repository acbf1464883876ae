"""`python -m consumers [GROUP...]`: run consumer groups (all of them when none is named)."""

from __future__ import annotations

import sys

from consumers.cli import main

if __name__ == "__main__":
    sys.exit(main(["consume", *sys.argv[1:]]))
