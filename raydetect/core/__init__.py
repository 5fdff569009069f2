"""The detector as a library: :class:`FaceDetector`, its work budget, input checks, results, crops (square,
W x H or aligned on the landmarks) and the per-track clip rule.

Nothing here imports Ray: the offline job and the online service wrap these pieces.
"""
