"""The detector as a library: :class:`FaceDetector`, its work budget, input checks, results and crops.

Nothing here imports Ray: the offline job and the online service wrap these pieces.
"""
