"""Data: video/image decoding and encoding for lip-sync generation, and the dataset filelists."""
