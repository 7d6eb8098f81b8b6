"""Test-wide setup: no test may reach a model hub, and the core fixtures are visible everywhere."""
import os
import tempfile

# Hugging Face libraries must never try the network in tests (it is unreachable, and retries are slow).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# ONNX exports and the fingerprint cache of test models go to a throw-away cache, never the user's.
os.environ.setdefault("CLIP_WB_CACHE", tempfile.mkdtemp(prefix="clip-wb-test-cache-"))
# Gradio's uploads and served copies go to this run's own folder, not the machine-wide /tmp/gradio
# that an app started earlier on this machine may have filled (tests scan it for leftover uploads).
os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="clip-wb-test-gradio-")

from core_fixtures import encoder, tiny_clip_path  # noqa: E402,F401  (fixtures shared by the core tests)
