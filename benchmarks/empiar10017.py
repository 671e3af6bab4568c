"""EMPIAR-10017 benchmark, kept for its old command: ``dataset.py`` on that folder.

    python benchmarks/empiar10017.py --data ../shared/data/empiar10017 --out OUT

takes the same options as ``dataset.py``, which it runs.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dataset import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
