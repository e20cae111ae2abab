"""Evaluation: the papers' metrics and protocols (metrics.py) and the LeNet judge (classifier.py)."""
