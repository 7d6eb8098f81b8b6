"""`python -m core.train ...`: the training command; the code lives in core.lab.train."""
import sys

from core.lab.train import main

if __name__ == "__main__":
    sys.exit(main())
