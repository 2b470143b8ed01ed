"""Evaluation: the official protocol (areas, positives, recall), the official run, the real-photo benchmark."""
