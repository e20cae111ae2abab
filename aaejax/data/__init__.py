"""The images: MNIST / Fashion-MNIST through TFDS or the IDX files (datasets.py, download.py),
batch orders gathered on the device (batching.py), augmentation, and image conversions."""
