"""Data sources: every source ends as an HDF5 file in the MIT 6.S191 layout, read lazily."""
