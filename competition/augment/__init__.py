"""Augment stage: named transforms, readable recipes, parallel reproducible generation."""
