"""Data stage: find the images of a competition folder and read them robustly."""
