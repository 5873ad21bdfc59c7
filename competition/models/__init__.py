"""Models stage: backbones by name, their weights, pooling, projections, the retrieval embedder and its view."""
