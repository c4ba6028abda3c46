"""Typed errors with messages a user can act on.

Every error the engine raises on purpose derives from :class:`DeepfakeError`, carries a short
machine-readable ``code`` (used by the API and the exports) and a message written for people.
"""

from __future__ import annotations


class DeepfakeError(Exception):
    """Base class of every error the engine raises on purpose."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InputError(DeepfakeError):
    """The file or object given to a detector cannot be analysed."""

    code = "bad_input"


class MediaNotFoundError(InputError):
    code = "not_found"


class EmptyFileError(InputError):
    code = "empty_file"


class NotMediaError(InputError):
    """The bytes are neither an image nor a video we know."""

    code = "not_media"


class UnsupportedFormatError(InputError):
    """A real image or video, but of a kind this detector does not handle."""

    code = "unsupported_format"


class CorruptFileError(InputError):
    """Truncated or damaged data."""

    code = "corrupt_file"


class ImageTooLargeError(InputError):
    """Over the pixel limit: refused before decoding, as decompression bombs are."""

    code = "image_too_large"


class ImageTooSmallError(InputError):
    """Too few pixels to hold a face the detector could find."""

    code = "image_too_small"


class NoDecodableFramesError(InputError):
    code = "no_decodable_frames"


class VideoTooSmallError(InputError):
    """Frames too small to hold a face: the same floor as for images, not a whole-frame guess."""

    code = "video_too_small"


class AnalysisCancelled(DeepfakeError):
    """An analysis stopped at a checkpoint because its job was cancelled or timed out."""

    code = "cancelled"


class ModelError(DeepfakeError):
    """The model file cannot be used."""

    code = "model_error"


class ModelNotFoundError(ModelError):
    code = "model_not_found"


class CorruptModelError(ModelError):
    code = "model_corrupt"


class UnknownArchitectureError(ModelError):
    code = "unknown_architecture"


class ModelMismatchError(ModelError):
    """Weights that do not fit the named architecture."""

    code = "model_mismatch"


class UntrustedPickleError(ModelError):
    """A pickled module would run arbitrary code when loaded."""

    code = "untrusted_pickle"


class TrustAnchorsError(DeepfakeError):
    """The trust-anchors file given for content credentials cannot be used."""

    code = "bad_trust_anchors"
