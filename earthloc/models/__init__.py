"""Descriptor models (official EarthLoc, offline EfficientNet-Lite0), preprocessing and batched encoding."""
