"""The lab: mini-CLIP training on Shapes / Flickr8k, datasets, metrics, evaluation, plots.

Commands: `python -m core.train` and `python -m core.evaluate`.
"""
