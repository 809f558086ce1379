"""Models on this machine: the catalog, pulling a GGUF from a Hub, and reading GGUF metadata.
"""
