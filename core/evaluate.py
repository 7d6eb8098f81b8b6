"""`python -m core.evaluate ...`: the evaluation command; the code lives in core.lab.evaluate."""
import sys

from core.lab.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
