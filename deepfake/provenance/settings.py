"""What provenance reading is allowed to do: whose signatures to trust, and whether to keep locations."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from deepfake.errors import TrustAnchorsError

TRUST_ANCHORS_ENV = "DEEPFAKE_TRUST_ANCHORS"
MAX_TRUST_ANCHORS_BYTES = 16 * 2**20


@dataclass(frozen=True)
class ProvenanceSettings:
    """``trust_anchors``: PEM certificates of the signers (or their CAs) the user trusts; without
    them a valid signature is "valid, signer not in your trust list", never "trusted".
    ``include_location``: keep GPS coordinates in results (off: only say that they are present)."""

    trust_anchors: str | None = None
    trust_anchor_names: tuple[str, ...] = ()  # subjects of the anchors, to say whose list it is
    include_location: bool = False

    @classmethod
    def load(cls, trust_anchors: str | os.PathLike | None = None, *, include_location: bool = False,
             env: str | None = None) -> ProvenanceSettings:  # fmt: skip
        """Settings from a PEM file (default: the file named by ``DEEPFAKE_TRUST_ANCHORS``, if set)."""
        path = trust_anchors if trust_anchors is not None else (env if env is not None else os.environ.get(TRUST_ANCHORS_ENV))
        if not path:
            return cls(include_location=include_location)
        pem, names = read_trust_anchors(Path(path))
        return cls(pem, names, include_location)


def read_trust_anchors(path: Path) -> tuple[str, tuple[str, ...]]:
    """The PEM text of a trust-anchors file and the subjects of its certificates; a missing,
    huge or certificate-less file is an error (a typo must not silently leave no trust list)."""
    try:
        if path.stat().st_size > MAX_TRUST_ANCHORS_BYTES:
            raise TrustAnchorsError(f"The trust-anchors file {path.name} is over {MAX_TRUST_ANCHORS_BYTES // 2**20} MiB.")
        data = path.read_bytes()
    except OSError as exc:
        raise TrustAnchorsError(f"The trust-anchors file {path} cannot be read ({exc.strerror or exc}).") from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TrustAnchorsError(f"The trust-anchors file {path.name} holds no PEM certificate "
                                "(expected '-----BEGIN CERTIFICATE-----' blocks).") from None  # fmt: skip
    names = tuple(c.subject.rfc4514_string() for c in certificates)
    return data.decode("ascii", "replace"), names
