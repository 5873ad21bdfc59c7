"""`compete sweep`: many train + submit configurations from one file, resumable, into one table."""
