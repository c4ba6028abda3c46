"""Evidence beyond the pixels: what a file says about its own origin, read offline from its bytes.

Content credentials (C2PA manifests, checked with ``c2pa-python``), EXIF, XMP and IPTC metadata,
generator settings in PNG text chunks, and JPEG compression tables, as :class:`Finding` objects
that sit beside the model's verdict (``findings`` states the rules). The public names load on
first use, so the result types can import ``findings`` without loading the C2PA library.
"""

from typing import TYPE_CHECKING

from deepfake.lazy import lazy_exports

_EXPORTS = {
    "EVIDENCE_RULES": "deepfake.provenance.findings",
    "Finding": "deepfake.provenance.findings",
    "model_finding": "deepfake.provenance.findings",
    "container_format": "deepfake.provenance.reader",
    "read_provenance": "deepfake.provenance.reader",
    "TRUST_ANCHORS_ENV": "deepfake.provenance.settings",
    "ProvenanceSettings": "deepfake.provenance.settings",
}

__all__ = [
    "EVIDENCE_RULES",
    "TRUST_ANCHORS_ENV",
    "Finding",
    "ProvenanceSettings",
    "container_format",
    "model_finding",
    "read_provenance",
]

if TYPE_CHECKING:
    from deepfake.provenance.findings import EVIDENCE_RULES, Finding, model_finding
    from deepfake.provenance.reader import container_format, read_provenance
    from deepfake.provenance.settings import TRUST_ANCHORS_ENV, ProvenanceSettings


__getattr__ = lazy_exports(__name__, _EXPORTS)
