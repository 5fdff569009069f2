"""The offline job on Ray Data: sources, video decoding, frame-range shards, detection actors, Parquet output."""
