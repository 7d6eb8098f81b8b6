"""CLIP workbench core: encoders, the growing library, search, zero-shot, captions, training.

No Gradio here; the app (demo.py) and the CLI (python -m core) build on these modules.
"""
import warnings

# The `clip` package imports pkg_resources, which warns on every start; the pin setuptools<81 keeps it working.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
