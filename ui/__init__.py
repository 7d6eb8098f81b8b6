"""The Gradio app over core/ (no model logic here): `build_app(workbench, lang) -> gr.Blocks`."""
from .app import build_app, build_error_app, launch_options

__all__ = ["build_app", "build_error_app", "launch_options"]
