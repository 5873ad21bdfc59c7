"""Retrieval stage: embed images, fuse models, post-process, search the gallery."""
