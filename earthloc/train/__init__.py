"""Training: the EarthLoc recipe (clustered batches, year-wise augmentation, neutral-aware MS loss)."""
