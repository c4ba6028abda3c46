"""Files with provenance, made at test time: a test CA and a C2PA signer (``cryptography`` and
``c2pa-python``, offline), generator PNG text chunks, XMP packets, camera EXIF with GPS, MP4/MOV
videos with container metadata (PyAV) and hand-built MP4 boxes."""

from __future__ import annotations

import datetime
import functools
import io
import json
import struct
from dataclasses import dataclass
from fractions import Fraction

import av
import c2pa
import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image, PngImagePlugin

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
SIGNER_NAME = "Test Generator Signer"
GPS_LATITUDE = (52.0, 22.0, 12.5)  # 52.370139 N: what must never leak


@dataclass(frozen=True)
class SignerKeys:
    ca_pem: bytes  # the root: what a user would put in their trust anchors
    chain_pem: bytes  # leaf then root, as c2pa signs with
    key_pem: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Workbench Test CA")])  # fmt: skip


def _usage(**flags: bool) -> x509.KeyUsage:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")  # fmt: skip
    return x509.KeyUsage(**{n: flags.get(n, False) for n in names})


@functools.cache
def signer_keys() -> SignerKeys:
    """A root CA and a leaf it issued, fit for C2PA: digitalSignature, an emailProtection EKU, SKI and AKI."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("Workbench Test Root")).issuer_name(_name("Workbench Test Root"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(_usage(key_cert_sign=True, crl_sign=True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))  # fmt: skip
    leaf = (x509.CertificateBuilder().subject_name(_name(SIGNER_NAME)).issuer_name(ca.subject)
            .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))  # fmt: skip
    pem = serialization.Encoding.PEM
    key = leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return SignerKeys(ca.public_bytes(pem), leaf.public_bytes(pem) + ca.public_bytes(pem), key)


def manifest(source_type: str, *, actions: tuple[dict, ...] = (), generator: str = "TestGen") -> dict:
    created = {"action": "c2pa.created", "digitalSourceType": IPTC + source_type}
    return {"claim_generator_info": [{"name": generator, "version": "1.0"}], "title": "picture.jpg",
            "assertions": [{"label": "c2pa.actions", "data": {"actions": [created, *actions]}}]}  # fmt: skip


def sign(data: bytes, definition: dict, mime: str = "image/jpeg") -> bytes:
    """``data`` with a C2PA manifest embedded and signed by the test signer."""
    keys = signer_keys()
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, keys.chain_pem, keys.key_pem, None))
    out = io.BytesIO()
    with c2pa.Builder(definition) as builder:
        builder.sign(signer, mime, io.BytesIO(data), out)
    return out.getvalue()


def tamper(signed: bytes) -> bytes:
    """The signed JPEG with a few pixels' worth of compressed data changed after signing."""
    changed = bytearray(signed)
    for offset in (300, 301, 302):
        changed[-offset] ^= 0x5A
    return bytes(changed)


def noise_jpeg(size: tuple[int, int] = (96, 80), seed: int = 0) -> bytes:
    pixels = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def reencode(data: bytes, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    with Image.open(io.BytesIO(data)) as image:
        image.convert("RGB").save(buffer, fmt, **options)
    return buffer.getvalue()


def png_with_texts(texts: dict[str, str], compressed: tuple[str, ...] = ()) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in texts.items():
        if key in compressed:
            info.add_itxt(key, value, zip=True)
        else:
            info.add_text(key, value)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 90, 60)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


A1111_PARAMETERS = ("portrait of a smiling woman, studio light\nNegative prompt: blurry\nSteps: 28, Sampler: DPM++ 2M "
                    "Karras, CFG scale: 7, Seed: 1234567, Size: 512x640, Model hash: abc123, Model: sdxl_base_1.0")  # fmt: skip
COMFYUI_PROMPT = json.dumps({
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "portrait photo", "clip": ["4", 1]}},
    "3": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 20, "model": ["4", 0]}},
})  # fmt: skip


def xmp_packet(source_type: str | None = None, creator_tool: str | None = None, history: bool = False) -> bytes:
    attributes = "".join([
        f' Iptc4xmpExt:DigitalSourceType="{IPTC + source_type}"' if source_type else "",
        f' xmp:CreatorTool="{creator_tool}"' if creator_tool else "",
    ])  # fmt: skip
    events = ('<xmpMM:History><rdf:Seq><rdf:li stEvt:action="saved" stEvt:softwareAgent="Adobe Photoshop 25.0"/>'
              "</rdf:Seq></xmpMM:History>") if history else ""  # fmt: skip
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about=""'
        ' xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
        ' xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/" xmlns:stEvt="http://ns.adobe.com/xap/1.0/sType/ResourceEvent#"'
        f"{attributes}>{events}</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    ).encode()


def camera_exif(*, gps: bool = True, software: str | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS R5"
    exif[0x0132] = "2024:05:01 10:20:00"
    if software:
        exif[0x0131] = software
    exif.get_ifd(0x8769)[0x9003] = "2024:05:01 10:00:00"
    if gps:
        exif.get_ifd(0x8825).update({1: "N", 2: GPS_LATITUDE, 3: "E", 4: (4.0, 53.0, 24.0)})
    return exif


def signed_ai_photo_with_gps(photo: bytes) -> bytes:
    """``photo`` as a JPEG with camera EXIF and GPS, then signed as AI-generated: the verdict must
    be FAKE, and the coordinates must not leave the machine unless asked for."""
    return sign(reencode(photo, "JPEG", quality=92, exif=camera_exif(gps=True)), manifest("trainedAlgorithmicMedia"))


LEAKED_COORDINATES = ("52.37", "4.89")  # how GPS_LATITUDE and the longitude would print in any output


# --- videos -------------------------------------------------------------------------------------

ISO6709 = "+37.7749-122.4194+010.000/"
VIDEO_COORDINATES = ("37.77", "122.41")  # how ISO6709 would print in any output
APPLE_METADATA = {  # as an iPhone writes them ('com.apple.quicktime.*' keys in moov/meta)
    "com.apple.quicktime.make": "Apple",
    "com.apple.quicktime.model": "iPhone 15 Pro",
    "com.apple.quicktime.location.ISO6709": ISO6709,
    "com.apple.quicktime.creationdate": "2024-05-01T10:00:00-0700",
}


def pyav_video(fmt: str = "mp4", metadata: dict[str, str] | None = None, *, metadata_tags: bool = False) -> bytes:
    """Five 64x64 H.264 frames in an MP4 or MOV that PyAV (FFmpeg) writes, with ``metadata`` as
    container metadata; ``metadata_tags``: every key written as is (``movflags use_metadata_tags``),
    Apple's keys included, rather than only those the muxer maps to atoms of its own."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt, options={"movflags": "use_metadata_tags"} if metadata_tags else {}) as out:
        out.metadata.update(metadata or {})
        stream = out.add_stream("libx264", rate=Fraction(10))
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 40 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():  # what the encoder still holds
            out.mux(packet)
    return buffer.getvalue()


def box(kind: bytes, *body: bytes, large: bool = False) -> bytes:
    """An ISO-BMFF box: its size (32-bit, or 64-bit with ``large``), its type, its body."""
    content = b"".join(body)
    if large:
        return struct.pack(">I4sQ", 1, kind, 16 + len(content)) + content
    return struct.pack(">I4s", 8 + len(content), kind) + content


def text_atom(kind: bytes, text: str) -> bytes:
    """A QuickTime user-data text atom ('\xa9mak' ...): length, language ('und'), UTF-8 text."""
    encoded = text.encode()
    return box(kind, struct.pack(">HH", len(encoded), 0x55C4), encoded)


def movie_header(created: int, modified: int, duration_s: int = 10, *, version: int = 0) -> bytes:
    """An 'mvhd' box: times in seconds since 1904 (0: unset), timescale 1000."""
    if version == 1:
        times = struct.pack(">QQIQ", created, modified, 1000, duration_s * 1000)
    else:
        times = struct.pack(">IIII", created, modified, 1000, duration_s * 1000)
    return box(b"mvhd", bytes([version, 0, 0, 0]), times, bytes(80))


def movie_file(*boxes: bytes, brand: bytes = b"isom") -> bytes:
    """A hand-built MP4 (or MOV with brand b"qt  "): an 'ftyp' box, then ``boxes``."""
    return box(b"ftyp", brand, bytes(4), brand) + b"".join(boxes)
