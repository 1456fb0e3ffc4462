"""Routers of the CompreFace-compatible API, one module per URL prefix."""
