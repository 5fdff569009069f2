"""Exceptions raised by raydetect for bad input and broken installations."""


class RaydetectError(Exception):
    """Base class of every error raydetect raises on purpose."""


class InvalidImageError(RaydetectError, ValueError):
    """An image given to the detector has the wrong type, shape, dtype or size."""


class WeightsError(RaydetectError, RuntimeError):
    """A weight file is missing, corrupt or does not match its published checksum."""
