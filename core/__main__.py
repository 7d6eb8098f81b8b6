"""`python -m core ...`: the command line lives in cli/ (an adapter over core, beside ui/); this entry
point only hands over, so every documented command keeps working."""
import sys

from cli.main import main

if __name__ == "__main__":
    sys.exit(main())
