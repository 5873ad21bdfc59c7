"""Submit stage: from models to a scored, recorded submission (retrieval/ is its library)."""
