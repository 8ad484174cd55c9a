"""One config module per table of the paper; see experiments/README.md for the mapping."""
