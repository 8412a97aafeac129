"""Distributed embedding with Ray Data: encode very large collections on many workers, then ingest.

`embed_with_ray(inputs, encoder_spec, out_dir)` runs `map_batches` with an actor pool (one encoder
per actor) over image paths or URIs and writes Parquet shards plus a manifest; `ingest_vectors(lib,
out_dir)` adds them to a library's catalog and vector store exactly as `picscope index` would.
Needs the `distributed` extra (`pip install 'picscope[distributed]'`) for the Ray part; ingesting
needs only pyarrow.
"""

from picscope.distributed.ingest import IngestReport, ingest_vectors
from picscope.distributed.ray_embed import EmbedSummary, embed_with_ray, list_inputs

__all__ = ["EmbedSummary", "IngestReport", "embed_with_ray", "ingest_vectors", "list_inputs"]
