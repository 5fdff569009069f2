"""The Serve import path the cluster configs name: ``serve run raydetect.serve:app``.

The application itself lives in :mod:`raydetect.online.application`.
"""

from raydetect.online.application import app, build_app

__all__ = ["app", "build_app"]
