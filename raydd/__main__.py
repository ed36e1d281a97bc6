"""``python -m raydd``: the ``raydd`` command where its console script is not installed (a checkout on
PYTHONPATH, a cluster image with the package copied in)."""

import sys

from raydd.cli import main

if __name__ == "__main__":
    sys.exit(main())
