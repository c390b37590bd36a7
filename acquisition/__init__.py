"""crf-daq: the Controlled Release Facility acquisition daemon."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("crf-daq")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
