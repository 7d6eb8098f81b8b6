"""The command line: an adapter over core, beside ui/ (the Gradio app).

    python -m core index|search|classify|library|caption|translate ...   cli/main.py (cli/scale.py past one machine)
    python -m core.train ...                                            cli/train.py
    python -m core.evaluate zeroshot|retrieval ...                      cli/evaluate.py

The `python -m` entry points stay in core/ (core/__main__.py, core/train.py, core/evaluate.py) so the
documented commands keep working; they only hand over to this package. Nothing in core imports it.
"""
