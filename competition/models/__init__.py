"""Models stage: backbones by name, their weights, pooling, heads and the retrieval embedder."""
