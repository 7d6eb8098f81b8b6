"""`python -m core.train ...`: the training command lives in cli/train.py (the work in core.lab.train
and core.lab.finetune); this entry point only hands over."""
import sys

from cli.train import main

if __name__ == "__main__":
    sys.exit(main())
