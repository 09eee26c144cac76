"""``python -m weightspace``: the command line."""

from __future__ import annotations

import sys

from weightspace._cli import main

if __name__ == "__main__":
    sys.exit(main())
