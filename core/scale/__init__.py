"""Past one machine: index on a Ray cluster into embedding shards, merge them into a library.

    python -m core index photos/ laion-000.tar urls.parquet --engine ray [--ray-address HOST:6379]
    python -m core index --from-shards DIR          # merge shards written earlier (or elsewhere)
    python -m core index --from-embeddings DIR      # clip-retrieval's img_emb/ + metadata/

`ray_job` is the only module that imports Ray; nothing else here does, so the command line
loads it for `--engine ray` alone. `sources` expands and partitions the inputs, `shards`
is the Parquet shard format, `merge` adds shards to a library in one bulk step, `embeddings`
imports clip-retrieval output.
"""
from .embeddings import import_clip_retrieval
from .merge import merge_shards
from .shards import default_shard_dir, list_shards
from .sources import expand_sources

__all__ = ["merge_shards", "import_clip_retrieval", "default_shard_dir", "list_shards", "expand_sources"]
