"""`python -m core.evaluate ...`: the evaluation command lives in cli/evaluate.py (the work in
core.lab.evaluate); this entry point only hands over."""
import sys

from cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
