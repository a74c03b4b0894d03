"""`python -m fastrnn` / the `fastrnn` console script: see fastrnn.cli
(`fastrnn train`, `fastrnn predict`, `fastrnn bench`, `fastrnn demo`)."""
import sys

from .cli import demo, main  # noqa: F401  (demo kept importable from here)

if __name__ == "__main__":
    sys.exit(main())
