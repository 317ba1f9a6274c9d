"""python -m data.synthetic --out_dir DIR [...]: see data/synthetic/dataset.py."""

import sys

from data.synthetic.dataset import main

if __name__ == "__main__":
    sys.exit(main())
