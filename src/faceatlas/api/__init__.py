"""CompreFace-compatible REST server (FastAPI): ``faceatlas serve``."""
