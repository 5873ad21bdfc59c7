"""compete: landmark image retrieval, from a folder of photos to a scored submission."""

import os

# albumentations asks PyPI for a newer version at import: a network call on every run, and a
# warning offline (Kaggle's notebooks). A user who wants the check sets the variable to 0.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
