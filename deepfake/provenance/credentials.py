"""Content credentials (C2PA): read and check a file's signed manifest with ``c2pa-python``, offline.

Remote manifests and OCSP revocation checks are never fetched. Whose signatures count as trusted
is the user's choice (:class:`ProvenanceSettings`); the library's verdict ("Trusted", "Valid",
"Invalid") and its status codes are put into words here.
"""

from __future__ import annotations

import io
import json
import threading
from typing import Any

import c2pa

from deepfake.provenance.findings import (
    AI_SOURCE_TYPES,
    C2PA,
    CAPTURE_SOURCE_TYPES,
    CONTEXT,
    LEANS_FAKE,
    LEANS_REAL,
    STRONG,
    SUPPORTING,
    Finding,
    has_location,
    source_type_name,
    trim,
    unreadable,
    without_location,
)
from deepfake.provenance.settings import ProvenanceSettings

MAX_INGREDIENT_DEPTH = 8  # manifests of ingredients of ingredients ...: deeper chains are not followed
# Status codes meaning the signed data no longer matches: the file was changed after signing.
TAMPER_CODES = {"assertion.dataHash.mismatch", "assertion.bmffHash.mismatch", "assertion.boxesHash.mismatch",
                "assertion.collectionHash.mismatch", "assertion.hashedURI.mismatch", "claimSignature.mismatch"}  # fmt: skip
STATUS_WORDS = {
    "signingCredential.untrusted": "the signer is not in your trust list",
    "signingCredential.trusted": "the signer is in your trust list",
    "signingCredential.expired": "the signing certificate had expired when it signed",
    "signingCredential.revoked": "the signing certificate was revoked",
    "signingCredential.invalid": "the signing certificate is not valid for signing credentials",
    "claimSignature.mismatch": "the signature does not match what was signed",
    "claimSignature.missing": "the signature is missing",
    "claimSignature.outsideValidity": "it was signed outside the certificate's validity period",
    "assertion.dataHash.mismatch": "the picture's data changed after signing",
    "assertion.bmffHash.mismatch": "the file's data changed after signing",
    "assertion.boxesHash.mismatch": "the file's data changed after signing",
    "assertion.collectionHash.mismatch": "the file's data changed after signing",
    "assertion.hashedURI.mismatch": "a statement in the credentials was changed after signing",
    "assertion.missing": "a signed statement is missing",
    "assertion.multipleHardBindings": "the credentials bind to the data more than once",
    "assertion.undeclared": "the credentials hold an unsigned statement",
    "manifest.inaccessible": "the credentials could not be reached",
    "manifest.multipleParents": "they name more than one parent file",
    "timeStamp.mismatch": "the time stamp does not match the signature",
    "timeStamp.untrusted": "the time stamp's authority is not trusted",
    "timeStamp.outsideValidity": "the time stamp is outside its certificate's validity",
    "general.error": "the check failed with an error",
}
ACTION_WORDS = {
    "c2pa.created": "created", "c2pa.opened": "opened", "c2pa.edited": "edited", "c2pa.cropped": "cropped",
    "c2pa.color_adjustments": "colour-adjusted", "c2pa.resized": "resized", "c2pa.filtered": "filtered",
    "c2pa.drawing": "drawn on", "c2pa.placed": "had another picture placed in it", "c2pa.removed": "had parts removed",
    "c2pa.transcoded": "re-encoded", "c2pa.converted": "converted", "c2pa.repackaged": "repackaged",
    "c2pa.published": "published", "c2pa.orientation": "rotated", "c2pa.redacted": "redacted",
    "c2pa.watermarked": "watermarked", "c2pa.edited.metadata": "had its metadata edited",
    "c2pa.unknown": "changed in a way not stated",
}  # fmt: skip
NOT_EDITS = {"c2pa.created", "c2pa.opened", "c2pa.published", "c2pa.edited.metadata", "c2pa.watermarked"}


class _Contexts:
    """One c2pa Context per trust list: building one parses the anchors, so it is done once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_anchors: dict[str | None, c2pa.Context] = {}

    def get(self, trust_anchors: str | None) -> c2pa.Context:
        with self._lock:
            if trust_anchors not in self._by_anchors:
                # Offline: no remote manifests, no OCSP. Trust only what the user gave.
                config: dict[str, Any] = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False,
                                                     "verify_trust": True}}  # fmt: skip
                if trust_anchors:
                    config["trust"] = {"user_anchors": trust_anchors}
                self._by_anchors[trust_anchors] = c2pa.Context.from_dict(config)
            return self._by_anchors[trust_anchors]


_CONTEXTS = _Contexts()


def read_manifest_store(data: bytes, mime: str, settings: ProvenanceSettings) -> dict | None:
    """The manifest store as the library reports it (with ``validation_state``), or None when the
    file has no manifest or is of a kind C2PA does not cover. Raises ``c2pa.C2paError`` otherwise."""
    try:
        reader = c2pa.Reader.try_create(mime, io.BytesIO(data), None, _CONTEXTS.get(settings.trust_anchors))
    except c2pa.C2paError.NotSupported:
        return None
    if reader is None:
        return None
    with reader:
        store = json.loads(reader.json())
        store["validation_state"] = reader.get_validation_state() or store.get("validation_state")
    return store


def credential_findings(data: bytes, mime: str, settings: ProvenanceSettings) -> list[Finding]:
    """What the file's content credentials say, as findings (none when it has none)."""
    try:
        store = read_manifest_store(data, mime, settings)
    except c2pa.C2paError.RemoteManifest:
        return [Finding(C2PA, "c2pa.remote", "C2PA: stored online", "The file points to content credentials stored "
                        "online; they were not fetched, as the analysis stays offline.", CONTEXT)]  # fmt: skip
    except c2pa.C2paError as exc:
        return [unreadable(C2PA, "content credentials (C2PA) in the file", "they are damaged or malformed",
                           error=str(exc))]  # fmt: skip
    if store is None:
        return []
    return interpret(store, settings)


def interpret(store: dict, settings: ProvenanceSettings) -> list[Finding]:
    """Findings from a manifest store: its check, any AI declaration, capture, edits and ingredients."""
    manifests = store.get("manifests") or {}
    active = manifests.get(store.get("active_manifest") or "")
    state = str(store.get("validation_state") or "")
    failures = [s for s in store.get("validation_status") or [] if isinstance(s, dict)]
    codes = [str(s.get("code", "")) for s in failures]
    if not isinstance(active, dict):
        return [unreadable(C2PA, "content credentials (C2PA) in the file", "no active manifest in them",
                           validation_state=state, status=codes)]  # fmt: skip

    signer = _signer(active)
    generator = _generator(active)
    actions = _actions(active)
    ingredients = [i for i in active.get("ingredients") or [] if isinstance(i, dict)]
    details = {
        "validation_state": state,
        "status": [{"code": c, "meaning": STATUS_WORDS.get(c, s.get("explanation", ""))} for c, s in zip(codes, failures)],
        "signer": signer,
        "claim_generator": generator,
        "signed_at": (active.get("signature_info") or {}).get("time"),
        "actions": actions,
        "ingredients": [{k: i.get(k) for k in ("title", "format", "relationship")} for i in ingredients],
        "trust_list": list(settings.trust_anchor_names),
    }  # fmt: skip
    if not settings.include_location:
        details = without_location(details)
    details = trim(details)

    signed_by = f"signed by {signer['common_name'] or 'an unnamed signer'}"
    if signer["issuer"]:
        signed_by += f" ({signer['issuer']})"
    made_with = f", made with {generator}" if generator else ""
    when = f", on {details['signed_at']}" if details["signed_at"] else ""
    valid = state in ("Valid", "Trusted")
    trusted = state == "Trusted"
    tampered = sorted(set(codes) & TAMPER_CODES)
    if trusted:
        check = "the signature is valid and the signer is in your trust list"
    elif valid:
        check = "the signature is valid, but the signer is not in your trust list"
    elif tampered:
        check = "they fail their check: " + "; ".join(dict.fromkeys(STATUS_WORDS[c] for c in tampered))
    else:
        reasons = [STATUS_WORDS.get(c, c) for c in codes if c != "signingCredential.untrusted"] or ["unknown reasons"]
        check = "they fail their check: " + "; ".join(dict.fromkeys(reasons))
    head = f"Content credentials (C2PA) {signed_by}{made_with}{when}: {check}."
    findings = []
    if trusted:
        findings.append(Finding(C2PA, "c2pa.trusted", "C2PA: valid, trusted signer", head, CONTEXT, details=details))
    elif valid:
        findings.append(Finding(C2PA, "c2pa.valid_untrusted", "C2PA: valid, signer not in your trust list", head,
                                CONTEXT, details=details))  # fmt: skip
    elif tampered:
        findings.append(Finding(C2PA, "c2pa.tampered", "C2PA: tampered",
                                head + " The file was changed after it was signed, so what the credentials say no "
                                "longer describes it.", STRONG, LEANS_FAKE, details=details))  # fmt: skip
    else:
        findings.append(Finding(C2PA, "c2pa.invalid", "C2PA: invalid", head, SUPPORTING, LEANS_FAKE, details=details))

    declared = _ai_declaration(active, manifests)
    if declared is not None:
        kind, assertion = declared
        words = AI_SOURCE_TYPES[kind]
        code = "c2pa.ai_generated" if kind == "trainedAlgorithmicMedia" else "c2pa.ai_edited"
        label = "C2PA: AI-generated" if kind == "trainedAlgorithmicMedia" else "C2PA: AI-edited"
        if valid:
            signer_note = ("" if trusted else " The signer is not in your trust list, but a declaration of AI is "
                           "taken at its word: it is made against the maker's own interest.")  # fmt: skip
            findings.append(Finding(C2PA, code, label, f"The content credentials declare this picture {words} "
                                    f"({assertion}).{signer_note}", STRONG, LEANS_FAKE, decides=True,
                                    assertion=f"c2pa: {assertion}", details=details))  # fmt: skip
        else:
            findings.append(Finding(C2PA, code, label, f"The content credentials declare this picture {words} "
                                    f"({assertion}), but as they fail their check this does not decide the "
                                    "verdict.", SUPPORTING, LEANS_FAKE, details=details))  # fmt: skip
    elif valid and _is_plain_capture(actions, ingredients):
        findings.append(Finding(C2PA, "c2pa.capture", "C2PA: camera capture, no edits",
                                f"The content credentials say the picture was captured by a camera{made_with} and "
                                "record no edits since. This supports authenticity"
                                + ("." if trusted else ", but the signer is not in your trust list, so anyone "
                                   "could have made this claim."), SUPPORTING if trusted else CONTEXT, LEANS_REAL,
                                details=details))  # fmt: skip
    edits = [a for a in actions if a["action"] not in NOT_EDITS]
    if edits:
        done = ", ".join(dict.fromkeys(ACTION_WORDS.get(a["action"], a["action"].removeprefix("c2pa.")) for a in edits))
        tools = ", ".join(dict.fromkeys(a["software"] for a in edits if a["software"]))
        findings.append(Finding(C2PA, "c2pa.edits", "C2PA: edits recorded", f"The credentials record edits: "
                                f"{done}{f' (with {tools})' if tools else ''}.", CONTEXT, details=details))  # fmt: skip
    if ingredients:
        names = ", ".join(f"'{i.get('title') or 'untitled'}' ({i.get('relationship') or 'ingredient'})"
                          for i in ingredients[:5])  # fmt: skip
        findings.append(Finding(C2PA, "c2pa.ingredients", "C2PA: made from other files",
                                f"The credentials say it was made from other files: {names}.", CONTEXT,
                                details=details))  # fmt: skip
    if has_location(active) and not settings.include_location:
        findings.append(Finding(C2PA, "c2pa.location", "C2PA: location present", "The credentials hold location "
                                "data; it is left out of this report to protect the source.", CONTEXT))  # fmt: skip
    return findings


def _signer(manifest: dict) -> dict:
    info = manifest.get("signature_info") or {}
    return {"common_name": str(info.get("common_name") or ""), "issuer": str(info.get("issuer") or ""),
            "algorithm": str(info.get("alg") or "")}  # fmt: skip


def _generator(manifest: dict) -> str:
    infos = manifest.get("claim_generator_info")
    if isinstance(infos, list) and infos and isinstance(infos[0], dict):
        return " ".join(str(infos[0].get(k)) for k in ("name", "version") if infos[0].get(k))
    return str(manifest.get("claim_generator") or "")


def _actions(manifest: dict) -> list[dict]:
    found = []
    for assertion in manifest.get("assertions") or []:
        if not isinstance(assertion, dict) or not str(assertion.get("label", "")).startswith("c2pa.actions"):
            continue
        for action in (assertion.get("data") or {}).get("actions") or []:
            if not isinstance(action, dict):
                continue
            agent = action.get("softwareAgent")
            agent = agent.get("name") if isinstance(agent, dict) else agent
            found.append({"assertion": str(assertion["label"]), "action": str(action.get("action", "")),
                          "digital_source_type": source_type_name(str(action.get("digitalSourceType") or "")),
                          "software": str(agent or ""), "when": str(action.get("when") or "")})  # fmt: skip
    return found


def _ai_declaration(manifest: dict, manifests: dict, depth: int = 0) -> tuple[str, str] | None:
    """(source type, where it was declared) for the first AI declaration in the manifest or in the
    manifests of its ingredients (an AI picture that was then cropped is still AI-made)."""
    for action in _actions(manifest):
        if action["digital_source_type"] in AI_SOURCE_TYPES:
            return action["digital_source_type"], (f"{action['assertion']}: {action['action']}, digitalSourceType "
                                                   f"{action['digital_source_type']}")  # fmt: skip
    if depth >= MAX_INGREDIENT_DEPTH:
        return None
    for ingredient in manifest.get("ingredients") or []:
        label = ingredient.get("active_manifest") if isinstance(ingredient, dict) else None
        parent = manifests.get(label) if isinstance(label, str) else None
        if isinstance(parent, dict):
            found = _ai_declaration(parent, manifests, depth + 1)
            if found is not None:
                return found[0], f"ingredient '{ingredient.get('title') or 'untitled'}': {found[1]}"
    return None


def _is_plain_capture(actions: list[dict], ingredients: list[dict]) -> bool:
    created = [a for a in actions if a["action"] == "c2pa.created"]
    return (not ingredients and bool(created) and all(a["digital_source_type"] in CAPTURE_SOURCE_TYPES for a in created)
            and all(a["action"] in NOT_EDITS for a in actions))  # fmt: skip
