"""Lip-sync inference: the streaming clip pipeline, filelists, and the generate command line."""
