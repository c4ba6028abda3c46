"""Embedded metadata: EXIF, XMP, IPTC, PNG/WebP text chunks, JPEG quantisation tables, and the
QuickTime and Apple metadata of MP4/MOV videos.

The containers are walked here byte by byte (JPEG segments, PNG and RIFF chunks, MP4/MOV boxes)
rather than through a decoder, so every size and count can be capped: a huge XMP packet, thousands
of text chunks or boxes, a damaged EXIF block or a box that lies about its size each become a
"could not be read" finding, and the rest of the file is still read. HEIF and other picture
formats go through their Pillow plugin, which reads the metadata without decoding pixels.
"""

from __future__ import annotations

import io
import json
import math
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree

import numpy as np
import pillow_heif
from PIL import Image

from deepfake.provenance.findings import (
    AI_SOURCE_TYPES,
    CONTEXT,
    LEANS_FAKE,
    METADATA,
    SOURCE_TYPE_WORDS,
    STRONG,
    Finding,
    source_type_name,
    trim,
    unreadable,
)

MAX_SEGMENTS = 4096  # JPEG segments or RIFF chunks walked before giving up
MAX_PNG_CHUNKS = 100_000  # pixel data is often split into 8 KB chunks: a 40 MP picture has thousands
MAX_TEXT_CHUNKS = 256  # PNG text chunks read; the rest are counted and reported
MAX_TEXT_BYTES = 4 * 2**20  # one text chunk, after decompression (ComfyUI workflows run to hundreds of KB)
MAX_TEXT_TOTAL = 16 * 2**20  # all text chunks of a file together
MAX_XMP_BYTES = 2 * 2**20
MAX_EXIF_BYTES = 2**20  # JPEG caps a segment at 64 KB; in PNG and HEIF an EXIF block may claim anything
MAX_COMMENT = 4096
MAX_BOXES = 4096  # MP4/MOV boxes walked, at every level together
MAX_BOX_DEPTH = 16  # real metadata sits 6 deep (moov/udta/meta/ilst/item/data)
MAX_KEYS = 1024  # entries of an Apple metadata key table
MAX_LOCI_BYTES = 1024  # a 3GPP location box: a name, then 13 bytes of coordinates

XMP_JPEG = b"http://ns.adobe.com/xap/1.0/\x00"
XMP_EXTENDED = b"http://ns.adobe.com/xmp/extension/\x00"
NS = {
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "xmpMM": "http://ns.adobe.com/xap/1.0/mm/",
    "stEvt": "http://ns.adobe.com/xap/1.0/sType/ResourceEvent#",
    "iptcExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    "exif": "http://ns.adobe.com/exif/1.0/",
    "tiff": "http://ns.adobe.com/tiff/1.0/",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
}
EXIF_IFD, GPS_IFD = 0x8769, 0x8825
MAKE, MODEL, SOFTWARE, DATETIME = 0x010F, 0x0110, 0x0131, 0x0132
DATETIME_ORIGINAL, USER_COMMENT, LENS_MODEL = 0x9003, 0x9286, 0xA434
IMAGE_DESCRIPTION = 0x010E

# Names that only generators carry: a file whose software is one of them says it was AI-made.
# ("Veo" alone is also a sports camera, so only "Google Veo" counts.)
AI_GENERATORS = re.compile(r"midjourney|dall[\s\-·]?e|stable[\s\-]?diffusion|novelai|comfyui|invokeai|fooocus|"
                           r"automatic1111|adobe firefly|\bimagen\b|ideogram|leonardo\.ai|bing image creator|"
                           r"dreamstudio|nightcafe|\bsora\b|\brunway(?:ml)?\b|\bpika\b|\bkling\b|google veo|"
                           r"dream machine|hailuo|synthesia|heygen", re.IGNORECASE)  # fmt: skip
EDITORS = re.compile(r"photoshop|lightroom|gimp|snapseed|pixelmator|affinity|paint\.net|canva|picsart|facetune|"
                     r"faceapp|photoscape|luminar|capture one|darktable|rawtherapee|acdsee|fotor|befunky|"
                     r"photopea|meitu|vsco|remini|photoroom|premiere|final cut|imovie|davinci resolve|"
                     r"after effects|capcut|kdenlive|shotcut|filmora|inshot|clipchamp|handbrake", re.IGNORECASE)  # fmt: skip
# FFmpeg's libavformat stamps every MP4/MOV it writes ("Lavf61.7.100"): whoever converted, cut or
# re-encoded the file with it (platforms included), not what made the pictures.
FFMPEG_STAMP = re.compile(r"lavf\d|ffmpeg\b", re.IGNORECASE)
# Stable Diffusion web UIs (AUTOMATIC1111, Forge, SD.Next, Fooocus) end their 'parameters' text so.
SD_PARAMETERS = re.compile(r"(?:^|\n|, )(?:Steps|Sampler|Seed|CFG scale): ")
SD_FIELD = re.compile(r'([A-Za-z][\w \-/]*): ("(?:[^"\\]|\\.)*"|[^,]*)(?:, |$)')

# The IJG (libjpeg) tables at quality 50, in zigzag order as stored in a JPEG file.
_ZIGZAG = np.array([0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27,
                    20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
                    58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63])  # fmt: skip
_IJG_BASE = {
    0: np.array([16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
                 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
                 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99])[_ZIGZAG],
    1: np.array([17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
                 47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32)[_ZIGZAG],
}  # fmt: skip


@dataclass
class Container:
    """The raw metadata pulled out of a file, before any of it is interpreted."""

    exif: bytes | None = None
    xmp: bytes | None = None
    xmp_extended: bytes | None = None  # JPEG: the second packet that holds what did not fit in 64 KB
    iptc: bytes | None = None  # IPTC-IIM datasets (from a JPEG's Photoshop block)
    texts: dict[str, str] = field(default_factory=dict)  # PNG text chunks, JPEG comments
    quant_tables: dict[int, np.ndarray] = field(default_factory=dict)  # JPEG, zigzag order
    adobe_marker: bool = False  # a JPEG APP14 "Adobe" segment: saved by Adobe software
    movie: dict[str, str | bytes] = field(default_factory=dict)  # MP4/MOV: MOVIE_NAMES items as text,
    # 'mvhd' (the movie header, when it sets a time) and 'loci' (3GPP location) as their bytes
    writer: str | None = None  # MP4/MOV: FFmpeg's stamp, kept apart: it says nothing about the origin
    problems: list[Finding] = field(default_factory=list)


# --- containers ---------------------------------------------------------------------------------


def walk(data: bytes, fmt: str) -> Container:
    """The metadata blocks of a ``fmt`` file ("jpeg", "png", "webp", "mp4", "mov", or any Pillow reads)."""
    if fmt == "jpeg":
        return _walk_jpeg(data)
    if fmt == "png":
        return _walk_png(data)
    if fmt == "webp":
        return _walk_webp(data)
    if fmt in ("mp4", "mov"):
        return _walk_movie(data)
    return _walk_with_plugin(data, fmt)


def _walk_jpeg(data: bytes) -> Container:
    found = Container()
    extended: dict[int, bytes] = {}
    pos, segments, extended_size = 2, 0, 0
    while pos + 4 <= len(data) and segments < MAX_SEGMENTS:
        if data[pos] != 0xFF:
            found.problems.append(unreadable(METADATA, "JPEG structure", f"no segment marker at byte {pos}"))
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan: metadata comes before the pixels
            break
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if length < 2 or pos + 2 + length > len(data):
            found.problems.append(unreadable(METADATA, "JPEG metadata", "a segment runs past the end of the file"))
            break
        body = data[pos + 4 : pos + 2 + length]
        segments += 1
        if marker == 0xE1 and body.startswith(b"Exif\x00\x00") and found.exif is None:
            found.exif = body
        elif marker == 0xE1 and body.startswith(XMP_JPEG) and found.xmp is None:
            found.xmp = body[len(XMP_JPEG) :]
        elif marker == 0xE1 and body.startswith(XMP_EXTENDED) and len(body) > len(XMP_EXTENDED) + 40:
            offset = struct.unpack(">I", body[len(XMP_EXTENDED) + 36 : len(XMP_EXTENDED) + 40])[0]
            extended_size += len(body) - len(XMP_EXTENDED) - 40
            if extended_size <= MAX_XMP_BYTES:
                extended[offset] = body[len(XMP_EXTENDED) + 40 :]
        elif marker == 0xED and body.startswith(b"Photoshop 3.0\x00"):
            found.iptc = _photoshop_iptc(body[14:]) or found.iptc
        elif marker == 0xEE and body.startswith(b"Adobe"):
            found.adobe_marker = True
        elif marker == 0xDB:
            _quant_tables(body, found.quant_tables)
        elif marker == 0xFE and "comment" not in found.texts:
            found.texts["comment"] = body[:MAX_COMMENT].decode("utf-8", "replace").strip("\x00 ")
        pos += 2 + length
    if extended_size > MAX_XMP_BYTES:  # refused before joining: 4096 segments could hold 256 MB
        found.problems.append(unreadable(METADATA, "extended XMP packet", f"it is {extended_size / 2**20:.1f} MB, "
                                         f"over the {MAX_XMP_BYTES // 2**20} MB limit"))  # fmt: skip
    elif extended:
        # Extended XMP: a packet of its own, split over segments that say at which offset they go.
        found.xmp_extended = b"".join(extended[k] for k in sorted(extended))
    return found


def _quant_tables(body: bytes, tables: dict[int, np.ndarray]) -> None:
    pos = 0
    while pos < len(body):
        precision, slot = body[pos] >> 4, body[pos] & 0x0F
        size = 128 if precision else 64
        raw = body[pos + 1 : pos + 1 + size]
        if len(raw) < size:
            return
        tables[slot] = np.frombuffer(raw, dtype=">u2" if precision else np.uint8).astype(np.int64)
        pos += 1 + size


def _photoshop_iptc(blocks: bytes) -> bytes | None:
    """The IPTC-IIM record inside a Photoshop image-resource block (resource 0x0404)."""
    pos = 0
    while pos + 12 <= len(blocks) and blocks[pos : pos + 4] == b"8BIM":
        resource = struct.unpack(">H", blocks[pos + 4 : pos + 6])[0]
        name_length = blocks[pos + 6]
        pos += 6 + 1 + name_length + ((1 + name_length) % 2)  # the name is padded to an even length
        if pos + 4 > len(blocks):
            return None
        size = struct.unpack(">I", blocks[pos : pos + 4])[0]
        pos += 4
        if resource == 0x0404:
            return blocks[pos : pos + size]
        pos += size + size % 2
    return None


def _walk_png(data: bytes) -> Container:
    found = Container()
    pos, chunks, texts, skipped, total = 8, 0, 0, 0, 0
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunks += 1
        if pos + 12 + length > len(data) or chunks > MAX_PNG_CHUNKS:
            found.problems.append(unreadable(METADATA, "PNG structure", "a chunk runs past the end of the file"
                                             if chunks <= MAX_PNG_CHUNKS else f"over {MAX_PNG_CHUNKS} chunks"))  # fmt: skip
            break
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IEND":
            break
        if kind == b"eXIf" and found.exif is None:
            _keep_exif(found, body)
            continue
        if kind not in (b"tEXt", b"zTXt", b"iTXt"):
            continue
        texts += 1
        if texts > MAX_TEXT_CHUNKS or total > MAX_TEXT_TOTAL:
            skipped += 1
            continue
        try:
            key, text = _png_text(kind, body)
        except (ValueError, zlib.error) as exc:
            found.problems.append(unreadable(METADATA, f"PNG text chunk {texts}", str(exc)))
            continue
        total += len(text)
        if key == "XML:com.adobe.xmp":
            found.xmp = found.xmp or text.encode("utf-8")
        else:
            found.texts.setdefault(key, text)
    if skipped:
        found.problems.append(unreadable(METADATA, "PNG text chunks", f"the file holds {texts} of them; only the "
                                         f"first {texts - skipped} were read", chunks=texts))  # fmt: skip
    return found


def _png_text(kind: bytes, body: bytes) -> tuple[str, str]:
    key, sep, rest = body.partition(b"\x00")
    if not sep or not 1 <= len(key) <= 79:
        raise ValueError("its keyword is missing or too long")
    if kind == b"tEXt":
        return key.decode("latin-1"), rest[:MAX_TEXT_BYTES].decode("latin-1")
    if kind == b"zTXt":
        return key.decode("latin-1"), _inflate(rest[1:]).decode("latin-1")
    if len(rest) < 2:
        raise ValueError("it is truncated")
    compressed, rest = rest[0], rest[2:]
    _, _, rest = rest.partition(b"\x00")  # language tag
    _, _, rest = rest.partition(b"\x00")  # translated keyword
    return key.decode("latin-1"), (_inflate(rest) if compressed else rest[:MAX_TEXT_BYTES]).decode("utf-8", "replace")


def _inflate(data: bytes) -> bytes:
    """Decompressed text, refused past MAX_TEXT_BYTES (a few KB of zlib can expand to gigabytes)."""
    inflater = zlib.decompressobj()
    text = inflater.decompress(data, MAX_TEXT_BYTES)
    if inflater.unconsumed_tail:
        raise ValueError(f"it expands to over {MAX_TEXT_BYTES // 2**20} MB")
    return text


def _walk_webp(data: bytes) -> Container:
    found = Container()
    pos, chunks = 12, 0
    end = min(len(data), 8 + struct.unpack("<I", data[4:8])[0])
    while pos + 8 <= end and chunks < MAX_SEGMENTS:
        kind, size = struct.unpack("<4sI", data[pos : pos + 8])
        chunks += 1
        if pos + 8 + size > end:
            found.problems.append(unreadable(METADATA, "WebP structure", "a chunk runs past the end of the file"))
            break
        body = data[pos + 8 : pos + 8 + size]
        if kind == b"EXIF" and found.exif is None:
            _keep_exif(found, body)
        elif kind == b"XMP ":
            found.xmp = body
        pos += 8 + size + size % 2
    return found


def _walk_with_plugin(data: bytes, fmt: str) -> Container:
    """HEIF through pillow-heif, everything else through Pillow: both read metadata, not pixels."""
    found = Container()
    try:
        if fmt == "heif":
            info = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False).info
            exif, found.xmp = info.get("exif"), info.get("xmp")
        else:
            with Image.open(io.BytesIO(data)) as image:
                tags = image.getexif()  # TIFF keeps its tags in the file's own directory, not an EXIF block
                exif, found.xmp = image.info.get("exif") or (tags.tobytes() if tags else None), image.info.get("xmp")
    except Exception as exc:  # noqa: BLE001 - a damaged container: its metadata is unreadable, the analysis goes on
        found.problems.append(unreadable(METADATA, f"{fmt.upper()} metadata", f"{type(exc).__name__}: {exc}"))
        return found
    if exif is not None:
        _keep_exif(found, exif)
    return found


# What each MP4/MOV metadata item says, most specific name first: Apple's metadata keys, QuickTime's
# user-data atoms, and the plain names FFmpeg writes with ``-movflags use_metadata_tags``.
MOVIE_ITEMS = {
    "make": ("com.apple.quicktime.make", "©mak", "make"),
    "model": ("com.apple.quicktime.model", "©mod", "model"),
    "software": ("com.apple.quicktime.software", "©swr", "©too", "software", "encoder"),
    "date": ("com.apple.quicktime.creationdate", "©day", "creation_time", "date"),
    "location": ("com.apple.quicktime.location.ISO6709", "©xyz", "location"),
}
MOVIE_NAMES = {name for names in MOVIE_ITEMS.values() for name in names}
XMP_UUID = bytes.fromhex("be7acfcb97a942e89c71999491e3afac")  # the 'uuid' box Adobe writes XMP into
TEXT_TYPES = {1: "utf-8", 2: "utf-16-be", 4: "utf-8", 5: "utf-16-be"}  # 'data' box value types that are text


def _walk_movie(data: bytes) -> Container:
    """MP4/MOV (ISO-BMFF): only the movie box's user data and metadata are entered; the media data
    ('mdat', however large) and the tracks are stepped over by their sizes, never read."""
    found = Container()
    try:
        _Boxes(data, found).walk(0, len(data), 0)
    except ValueError as exc:  # what was read before the bad box is kept
        found.problems.append(unreadable(METADATA, "MP4/MOV structure", str(exc)))
    return found


@dataclass
class _Boxes:
    data: bytes
    found: Container
    count: int = 0
    saw_movie: bool = False

    def boxes(self, start: int, end: int, depth: int) -> Iterator[tuple[bytes, int, int]]:
        """(type, body start, body end) of each box between ``start`` and ``end``; ValueError when
        one lies about its size, or past the caps on nesting and count."""
        if depth > MAX_BOX_DEPTH:
            raise ValueError(f"its boxes are nested over {MAX_BOX_DEPTH} deep")
        pos = start
        while end - pos >= 8:
            size, kind = struct.unpack_from(">I4s", self.data, pos)
            header = 8
            if size == 1:  # a 64-bit size follows the type
                if end - pos < 16:
                    raise ValueError(f"box '{_box_name(kind)}' at byte {pos} is cut off in its header")
                size, header = struct.unpack_from(">Q", self.data, pos + 8)[0], 16
            elif size == 0:  # "to the end": the last box of the file (or of its parent)
                size = end - pos
            if size < header:
                raise ValueError(f"box '{_box_name(kind)}' at byte {pos} claims {size} bytes, less than its header")
            if size > end - pos:
                raise ValueError(f"box '{_box_name(kind)}' at byte {pos} claims {size} bytes, but only {end - pos} "
                                 "are left: the file is cut short or the box is damaged")  # fmt: skip
            self.count += 1
            if self.count > MAX_BOXES:
                raise ValueError(f"it holds over {MAX_BOXES} boxes")
            yield kind, pos + header, pos + size
            pos += size
        if any(self.data[pos:end]):  # QuickTime ends some lists with four zero bytes; anything else is damage
            raise ValueError(f"{end - pos} stray bytes at byte {pos}, too few for a box")

    def walk(self, start: int, end: int, depth: int, keys: tuple[str, ...] = ()) -> None:
        data, found = self.data, self.found
        for kind, body, stop in self.boxes(start, end, depth):
            if kind in (b"moov", b"udta"):
                self.saw_movie = self.saw_movie or kind == b"moov"
                self.walk(body, stop, depth + 1)
            elif kind == b"meta":  # ISO's is a full box (4 bytes of version and flags first), QuickTime's is not
                self.walk(body if data[body + 4 : body + 8] == b"hdlr" else body + 4, stop, depth + 1)
            elif kind == b"keys":
                keys = self._keys(body, stop)
            elif kind == b"ilst":
                self.walk(body, stop, depth + 1, keys)
            elif kind == b"mvhd":
                header = data[body : min(stop, body + 32)]
                if any(header[4:20] if header[:1] == b"\x01" else header[4:12]):  # a time is set (0: unset)
                    found.movie.setdefault("mvhd", header)
            elif kind == b"loci":
                found.movie.setdefault("loci", data[body : min(stop, body + MAX_LOCI_BYTES)])
            elif kind == b"XMP_" or (kind == b"uuid" and data[body : body + 16] == XMP_UUID):
                self._xmp(body + 16 if kind == b"uuid" else body, stop)
            elif kind == b"moof" and self.saw_movie:
                return  # a fragmented file: media fragments follow, to the end
            elif (name := _item_name(kind, keys)) in MOVIE_NAMES:
                self._keep(name, self._item_text(name, body, stop, depth + 1))

    def _keys(self, start: int, end: int) -> tuple[str, ...]:
        """Apple's metadata key table: the names that the 'ilst' items refer to by number (from 1)."""
        if end - start < 8:
            raise ValueError("the metadata key table is cut off")
        count = struct.unpack_from(">I", self.data, start + 4)[0]
        keys, pos = [], start + 8
        for _ in range(min(count, MAX_KEYS)):
            size = struct.unpack_from(">I", self.data, pos)[0] if end - pos >= 4 else 0
            if size < 8 or size > end - pos:
                raise ValueError(f"entry {len(keys) + 1} of the metadata key table runs past its end")
            keys.append(self.data[pos + 8 : pos + min(size, 8 + 256)].decode("utf-8", "replace"))  # after namespace
            pos += size
        return tuple(keys)

    def _item_text(self, name: str, start: int, end: int, depth: int) -> str | None:
        data = self.data
        if data[start + 4 : start + 8] == b"data":  # an item: its value in 'data' boxes, the first text one counts
            for kind, body, stop in self.boxes(start, end, depth):
                encoding = TEXT_TYPES.get(int.from_bytes(data[body + 1 : body + 4], "big"))
                if kind == b"data" and stop - body >= 8 and encoding:
                    return data[body + 8 : min(stop, body + 8 + MAX_COMMENT)].decode(encoding, "replace")
            return None
        # A QuickTime text atom: the text's length and language (under 0x400: an old Mac code, Mac Roman text).
        if end - start < 4:
            raise ValueError(f"the text atom '{name}' is cut off")
        length, language = struct.unpack_from(">HH", data, start)
        if length > end - start - 4:
            raise ValueError(f"the text atom '{name}' claims {length} bytes of text, but holds {end - start - 4}")
        return data[start + 4 : start + 4 + min(length, MAX_COMMENT)].decode(
            "mac_roman" if language < 0x400 else "utf-8", "replace")  # fmt: skip

    def _keep(self, name: str, value: str | None) -> None:
        text = _text(value)
        if not text:
            return
        if name in MOVIE_ITEMS["software"] and FFMPEG_STAMP.match(text):
            self.found.writer = self.found.writer or text
        else:
            self.found.movie.setdefault(name, text)

    def _xmp(self, start: int, end: int) -> None:
        if end - start > MAX_XMP_BYTES:  # refused before copying: the box may claim anything the file holds
            self.found.problems.append(unreadable(METADATA, "XMP packet", f"it is {(end - start) / 2**20:.1f} MB, "
                                                  f"over the {MAX_XMP_BYTES // 2**20} MB limit"))  # fmt: skip
        elif self.found.xmp is None:
            self.found.xmp = self.data[start:end]


def _box_name(kind: bytes) -> str:
    name = kind.decode("latin-1")
    return name if name.isprintable() else "0x" + kind.hex()


def _item_name(kind: bytes, keys: tuple[str, ...]) -> str | None:
    """A metadata item's name: its type ('©mak'), or in an Apple 'ilst' the key its number points to."""
    if kind[:1] == b"\xa9":
        return kind.decode("latin-1")
    number = int.from_bytes(kind, "big")
    return keys[number - 1] if 0 < number <= len(keys) else None


def _keep_exif(found: Container, block: bytes) -> None:
    if len(block) > MAX_EXIF_BYTES:
        found.problems.append(unreadable(METADATA, "EXIF block", f"it is {len(block)} bytes, over the limit"))
    else:
        found.exif = block


# --- fields -------------------------------------------------------------------------------------


@dataclass
class Fields:
    """What the metadata says, field by field (``None``: not stated)."""

    make: str | None = None
    model: str | None = None
    lens: str | None = None
    software: list[str] = field(default_factory=list)  # EXIF Software, XMP CreatorTool, IPTC program, MP4/MOV software
    taken_at: str | None = None
    modified_at: str | None = None
    location: dict | None = None  # {} when present but the coordinates were not asked for
    source_type: str | None = None  # IPTC DigitalSourceType, short name
    history: list[dict] = field(default_factory=list)  # XMP edit history
    derived_from: bool = False
    generator_text: str | None = None  # an SD 'parameters' text found in EXIF


def exif_fields(raw: bytes, fields: Fields, include_location: bool) -> None:
    base = read_tiff(raw)
    fields.make = _text(base.get(MAKE)) or fields.make
    fields.model = _text(base.get(MODEL)) or fields.model
    if software := _text(base.get(SOFTWARE)):
        fields.software.append(software)
    fields.modified_at = _text(base.get(DATETIME)) or fields.modified_at
    detail = base.get(EXIF_IFD) or {}
    fields.taken_at = _text(detail.get(DATETIME_ORIGINAL)) or fields.taken_at
    fields.lens = _text(detail.get(LENS_MODEL)) or fields.lens
    for text in (_user_comment(detail.get(USER_COMMENT)), _text(base.get(IMAGE_DESCRIPTION))):
        if text and SD_PARAMETERS.search(text):
            fields.generator_text = text
    gps = base.get(GPS_IFD)
    if gps:
        fields.location = _gps(gps) if include_location else {}


# TIFF field types we decode: (struct code, size). Others are skipped by tag, never read.
_TIFF_TYPES = {1: ("B", 1), 2: ("s", 1), 3: ("H", 2), 4: ("I", 4), 5: ("II", 8), 7: ("s", 1), 9: ("i", 4),
               10: ("ii", 8), 13: ("I", 4)}  # fmt: skip
_WANTED = {MAKE, MODEL, SOFTWARE, DATETIME, IMAGE_DESCRIPTION, DATETIME_ORIGINAL, USER_COMMENT, LENS_MODEL,
           EXIF_IFD, GPS_IFD, 1, 2, 3, 4, 6}  # fmt: skip


def read_tiff(raw: bytes) -> dict:
    """The EXIF tags we use, from a TIFF-structured block (``Exif\\0\\0`` prefix optional): the
    base IFD with the Exif and GPS IFDs nested under their tags. Raises ValueError when the
    structure is damaged (an IFD or a value past the end, a bad header)."""
    if raw.startswith(b"Exif\x00\x00"):
        raw = raw[6:]
    order = {b"II": "<", b"MM": ">"}.get(raw[:2])
    if order is None or len(raw) < 8 or struct.unpack(order + "H", raw[2:4])[0] != 42:
        raise ValueError("no TIFF header")
    base = _ifd(raw, order, struct.unpack(order + "I", raw[4:8])[0])
    for tag in (EXIF_IFD, GPS_IFD):
        if isinstance(base.get(tag), int):
            base[tag] = _ifd(raw, order, base[tag])
    return base


def _ifd(raw: bytes, order: str, offset: int) -> dict:
    if offset + 2 > len(raw):
        raise ValueError("a directory starts past the end")
    count = struct.unpack(order + "H", raw[offset : offset + 2])[0]
    if count > 1024 or offset + 2 + 12 * count > len(raw):
        raise ValueError("a directory runs past the end")
    entries = {}
    for i in range(count):
        at = offset + 2 + 12 * i
        tag, kind, n = struct.unpack(order + "HHI", raw[at : at + 8])
        if tag not in _WANTED or kind not in _TIFF_TYPES:
            continue
        code, size = _TIFF_TYPES[kind]
        length = size * n
        start = at + 8 if length <= 4 else struct.unpack(order + "I", raw[at + 8 : at + 12])[0]
        if start + length > len(raw):
            raise ValueError(f"the value of tag {tag:#06x} runs past the end")
        data = raw[start : start + length]
        if code == "s":
            entries[tag] = data
        elif code in ("II", "ii"):
            pairs = struct.unpack(f"{order}{2 * n}{code[0]}", data)
            entries[tag] = tuple(a / b if b else float("nan") for a, b in zip(pairs[::2], pairs[1::2]))
        else:
            values = struct.unpack(f"{order}{n}{code}", data)
            entries[tag] = values[0] if n == 1 else values
    return entries


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value[:MAX_COMMENT] or None


def _user_comment(value: object) -> str | None:
    """EXIF UserComment: an 8-byte character-set prefix, then the text."""
    if not isinstance(value, bytes) or len(value) < 8:
        return _text(value)
    prefix, body = value[:8], value[8:]
    if prefix.startswith(b"UNICODE"):
        encoding = "utf-16-le" if body[1:2] == b"\x00" else "utf-16-be"
        return body.decode(encoding, "replace").replace("\x00", "").strip() or None
    return body.decode("utf-8", "replace").replace("\x00", "").strip() or None


def _gps(gps: dict) -> dict:
    def degrees(values: object, ref: object) -> float | None:
        if not isinstance(values, tuple) or len(values) != 3:
            return None
        d, m, s = values
        sign = -1 if _text(ref) in ("S", "W") else 1
        value = round(sign * (d + m / 60 + s / 3600), 6)
        return value if math.isfinite(value) else None

    altitude = gps.get(6)
    return {"latitude": degrees(gps.get(2), gps.get(1)), "longitude": degrees(gps.get(4), gps.get(3)),
            "altitude_m": round(altitude[0], 1) if isinstance(altitude, tuple) and math.isfinite(altitude[0]) else None}


def movie_fields(items: dict[str, str | bytes], fields: Fields, include_location: bool) -> None:
    """Fields from an MP4/MOV's metadata (``Container.movie``). Raises ValueError when its movie
    header or location box is damaged; the text items are taken first."""

    def first(what: str) -> str | None:
        return next((_text(items[n]) for n in MOVIE_ITEMS[what] if n in items), None)

    fields.make = first("make") or fields.make
    fields.model = first("model") or fields.model
    fields.software += [t for n in MOVIE_ITEMS["software"] if (t := _text(items.get(n)))]
    fields.taken_at = _movie_time(first("date")) or fields.taken_at
    location = first("location")
    if location or "loci" in items:  # read even when not shown: a damaged box is no location
        where = _iso6709(location) if location else _loci(items["loci"])
        fields.location = where if include_location else {}
    if isinstance(header := items.get("mvhd"), bytes):
        created, modified, duration = _movie_header(header)
        if created and not fields.taken_at:
            fields.taken_at = f"{created:%Y:%m:%d %H:%M:%S} UTC"
        # Some cameras stamp the end of the recording as its modification: only later than that is an edit.
        if created and modified and (modified - created).total_seconds() > duration + 60:
            fields.modified_at = f"{modified:%Y:%m:%d %H:%M:%S} UTC"


QUICKTIME_EPOCH = datetime(1904, 1, 1, tzinfo=UTC)


def _movie_header(header: bytes) -> tuple[datetime | None, datetime | None, float]:
    """(creation, modification, duration in seconds) from an 'mvhd' box; a time of 0 is unset."""
    version = header[:1]
    layout = ">QQIQ" if version == b"\x01" else ">IIII"
    if len(header) < 4 + struct.calcsize(layout):
        raise ValueError("the movie header is cut off")
    created, modified, timescale, duration = struct.unpack_from(layout, header, 4)
    try:
        times = [QUICKTIME_EPOCH + timedelta(seconds=s) if s else None for s in (created, modified)]
    except OverflowError:
        raise ValueError("the movie header's times are out of range") from None
    return times[0], times[1], duration / timescale if timescale else 0.0


def _movie_time(text: str | None) -> str | None:
    """An ISO 8601 time with a zone, in UTC as EXIF writes times ("2024:05:01 17:00:00 UTC"); any
    other text as written ("2024"), since a time without a zone cannot be compared with the header's."""
    try:
        moment = datetime.fromisoformat(text) if text else None
        return f"{moment.astimezone(UTC):%Y:%m:%d %H:%M:%S} UTC" if moment and moment.tzinfo else text
    except (ValueError, OverflowError):
        return text


ISO6709 = re.compile(r"([+-]\d{1,3}(?:\.\d*)?)([+-]\d{1,3}(?:\.\d*)?)([+-]\d+(?:\.\d*)?)?")


def _iso6709(text: str) -> dict:
    """"+37.7749-122.4194+010.000/" (decimal degrees, as phones write it); other forms of ISO 6709
    (degrees and minutes) are kept as written."""
    match = ISO6709.match(text)
    latitude, longitude = (float(match[1]), float(match[2])) if match else (math.nan, math.nan)
    if not (abs(latitude) <= 90 and abs(longitude) <= 180):
        return {"location_text": text[:80]}
    return {"latitude": latitude, "longitude": longitude, "altitude_m": round(float(match[3]), 1) if match[3] else None}


def _loci(raw: bytes) -> dict:
    """A 3GPP location box: version and flags, language, a name ending in a zero (UTF-16 when it
    starts with a byte-order mark), a role byte, then longitude, latitude and altitude in 16.16."""
    if raw[6:8] in (b"\xfe\xff", b"\xff\xfe"):
        end = next((i for i in range(8, len(raw) - 1, 2) if raw[i : i + 2] == b"\x00\x00"), len(raw)) + 2
    else:
        end = raw.find(b"\x00", 6) + 1 or len(raw)  # no terminator: nothing follows the name
    if len(raw) < end + 13:
        raise ValueError("the 3GPP location is cut off")
    longitude, latitude, altitude = (v / 65536 for v in struct.unpack_from(">iii", raw, end + 1))
    if not (abs(latitude) <= 90 and abs(longitude) <= 180):
        raise ValueError("the 3GPP location is out of range")
    return {"latitude": round(latitude, 6), "longitude": round(longitude, 6), "altitude_m": round(altitude, 1)}


def xmp_fields(raw: bytes, fields: Fields, include_location: bool) -> None:
    if len(raw) > MAX_XMP_BYTES:
        raise ValueError(f"it is {len(raw) / 2**20:.1f} MB, over the {MAX_XMP_BYTES // 2**20} MB limit")
    start = raw.find(b"<x:xmpmeta")
    end = raw.rfind(b"</x:xmpmeta>")
    if start < 0 or end < 0:
        start, end = raw.find(b"<rdf:RDF"), raw.rfind(b"</rdf:RDF>")
        closing = len(b"</rdf:RDF>")
    else:
        closing = len(b"</x:xmpmeta>")
    if start < 0 or end < start:
        raise ValueError("no XMP packet in it")
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:  # XMP never declares entities; expansion attacks do
        raise ValueError("it declares XML entities")
    packet = raw[start : end + closing]
    try:
        root = ElementTree.fromstring(packet)
    except ElementTree.ParseError as exc:
        raise ValueError(f"malformed XML: {exc}") from None
    if value := _xmp_value(root, "iptcExt", "DigitalSourceType"):
        fields.source_type = source_type_name(value)
    if tool := _xmp_value(root, "xmp", "CreatorTool"):
        fields.software.append(tool[:MAX_COMMENT])
    fields.make = fields.make or _xmp_value(root, "tiff", "Make")
    fields.model = fields.model or _xmp_value(root, "tiff", "Model")
    fields.taken_at = fields.taken_at or _xmp_value(root, "exif", "DateTimeOriginal")
    fields.derived_from = fields.derived_from or _xmp_present(root, "xmpMM", "DerivedFrom")
    for history in root.iter(f"{{{NS['xmpMM']}}}History"):
        for event in history.iter(f"{{{NS['rdf']}}}li"):
            fields.history.append({k: _xmp_value(event, "stEvt", k) or "" for k in ("action", "softwareAgent", "when")})
            if len(fields.history) >= 64:
                break
    latitude = _xmp_value(root, "exif", "GPSLatitude")
    if latitude and fields.location is None:
        fields.location = ({"latitude": latitude, "longitude": _xmp_value(root, "exif", "GPSLongitude")}
                           if include_location else {})  # fmt: skip


def _xmp_value(element: ElementTree.Element, prefix: str, name: str) -> str | None:
    """A property written either way XMP allows: as an attribute, or as an element (with text, an
    ``rdf:resource``, or an rdf:Alt/Seq/Bag whose first item holds the value)."""
    qualified = f"{{{NS[prefix]}}}{name}"
    for node in element.iter():
        if qualified in node.attrib:
            return node.attrib[qualified].strip() or None
        if node.tag == qualified:
            resource = node.attrib.get(f"{{{NS['rdf']}}}resource")
            if resource:
                return resource.strip()
            item = next(node.iter(f"{{{NS['rdf']}}}li"), None)
            text = (item.text if item is not None else node.text) or ""
            return text.strip() or None
    return None


def _xmp_present(element: ElementTree.Element, prefix: str, name: str) -> bool:
    qualified = f"{{{NS[prefix]}}}{name}"
    return any(node.tag == qualified or qualified in node.attrib for node in element.iter())


def iptc_fields(raw: bytes, fields: Fields) -> None:
    """IPTC-IIM: the originating program (2:65) and its version (2:70)."""
    values: dict[int, str] = {}
    pos = 0
    while pos + 5 <= len(raw) and raw[pos] == 0x1C:
        record, dataset, size = raw[pos + 1], raw[pos + 2], struct.unpack(">H", raw[pos + 3 : pos + 5])[0]
        if size & 0x8000:  # extended lengths are for big binary datasets, not for the text we want
            break
        if record == 2 and dataset in (65, 70):
            values[dataset] = raw[pos + 5 : pos + 5 + size].decode("utf-8", "replace").strip()
        pos += 5 + size
    if values.get(65):
        fields.software.append(f"{values[65]} {values.get(70, '')}".strip())


# --- findings -----------------------------------------------------------------------------------


def metadata_findings(data: bytes, fmt: str, jpeg_quality: int | None, include_location: bool) -> tuple[list[Finding], bool]:
    """Findings from a picture's or a video's embedded metadata, and whether it had any metadata at
    all (FFmpeg's stamp and JPEG tables are traces of the writing software, not metadata)."""
    container = walk(data, fmt)
    findings = list(container.problems)
    fields = Fields()
    for name, raw, read in (("EXIF block", container.exif, exif_fields), ("XMP packet", container.xmp, xmp_fields),
                            ("extended XMP packet", container.xmp_extended, xmp_fields),
                            ("MP4/MOV metadata", container.movie or None, movie_fields)):  # fmt: skip
        if raw is None:
            continue
        try:
            read(raw, fields, include_location)
        except Exception as exc:  # noqa: BLE001 - damaged bytes raise anything from struct, Pillow or XML
            findings.append(unreadable(METADATA, name, str(exc) or type(exc).__name__))
    if container.iptc is not None:
        try:
            iptc_fields(container.iptc, fields)
        except (struct.error, IndexError) as exc:
            findings.append(unreadable(METADATA, "IPTC record", str(exc)))

    findings += _declarations(container.texts, fields)
    findings += _source_type(fields)
    findings += _camera(fields)
    findings += _edit_traces(container, fields, jpeg_quality)
    findings += _location(fields, include_location)
    findings += _other_texts(container.texts)
    found_any = bool(container.exif or container.xmp or container.xmp_extended or container.iptc or container.texts
                     or container.movie)  # fmt: skip
    return findings, found_any


def _declarations(texts: dict[str, str], fields: Fields) -> list[Finding]:
    """Metadata that says the picture was made by an AI generator: these decide the verdict."""
    found = []
    parameters = texts.get("parameters") if SD_PARAMETERS.search(texts.get("parameters", "")) else None
    for where, text in (("PNG text 'parameters'", parameters), ("EXIF comment", fields.generator_text)):
        if text:
            settings = _sd_settings(text)
            shown = ", ".join(f"{k} {settings[k]}" for k in ("Model", "Steps", "Sampler", "Seed") if k in settings)
            found.append(Finding(METADATA, "metadata.generator_parameters", "Metadata: AI generation settings",
                                 f"The file carries the generation settings of a Stable Diffusion tool ({where}"
                                 f"{': ' + shown if shown else ''}): it was generated by AI.", STRONG, LEANS_FAKE,
                                 decides=True, assertion=f"metadata: {where} with generation settings",
                                 details=trim({"settings": settings, "prompt": text.split("\n")[0]})))  # fmt: skip
    comfy = _comfyui(texts)
    if comfy is not None:
        keys, nodes = comfy
        models = sorted({str(v) for n in nodes for k, v in n.get("inputs", {}).items() if k.endswith("ckpt_name")
                         or k == "unet_name"})  # fmt: skip
        found.append(Finding(METADATA, "metadata.comfyui", "Metadata: ComfyUI workflow", "The file carries a ComfyUI "
                             f"generation graph (PNG text {', '.join(repr(k) for k in keys)}"
                             f"{'; model ' + ', '.join(models) if models else ''}): it was generated by AI.", STRONG,
                             LEANS_FAKE, decides=True, assertion=f"metadata: PNG text {' and '.join(keys)} (ComfyUI)",
                             details=trim({"node_types": sorted({str(n.get('class_type')) for n in nodes}),
                                           "models": models})))  # fmt: skip
    for key, tool in (("invokeai_metadata", "InvokeAI"), ("sd-metadata", "InvokeAI"), ("Dream", "InvokeAI"),
                      ("fooocus_scheme", "Fooocus")):  # fmt: skip
        if key in texts and not found:
            found.append(Finding(METADATA, "metadata.generator_text", f"Metadata: {tool} settings",
                                 f"The file carries {tool}'s generation settings (PNG text '{key}'): it was generated "
                                 "by AI.", STRONG, LEANS_FAKE, decides=True, assertion=f"metadata: PNG text '{key}'",
                                 details=trim({key: texts[key]})))  # fmt: skip
    generators = [s for s in [*fields.software, texts.get("Software", ""), texts.get("Source", "")]
                  if s and AI_GENERATORS.search(s)]  # fmt: skip
    if generators and not found:
        found.append(Finding(METADATA, "metadata.generator_software", "Metadata: made by an AI generator",
                             f"The metadata names an AI generator as the software that made it "
                             f"({generators[0]}).", STRONG, LEANS_FAKE, decides=True,
                             assertion=f"metadata: software '{generators[0]}'", details=trim({"software": generators})))  # fmt: skip
    return found


def _sd_settings(text: str) -> dict[str, str]:
    last = text.strip().rsplit("\n", 1)[-1]
    return {k.strip(): v.strip().strip('"') for k, v in SD_FIELD.findall(last)}


def _comfyui(texts: dict[str, str]) -> tuple[list[str], list[dict]] | None:
    """(the keys, the graph's nodes) when 'prompt' or 'workflow' hold a ComfyUI graph."""
    keys, nodes = [], []
    for key in ("prompt", "workflow"):
        try:
            graph = json.loads(texts[key]) if key in texts else None
        except ValueError:
            continue
        if key == "prompt" and isinstance(graph, dict) and graph:
            graph_nodes = [n for n in graph.values() if isinstance(n, dict) and "class_type" in n]
            if graph_nodes:
                keys.append(key)
                nodes += graph_nodes
        elif key == "workflow" and isinstance(graph, dict) and isinstance(graph.get("nodes"), list):
            keys.append(key)
            nodes += [{"class_type": n.get("type"), "inputs": {}} for n in graph["nodes"] if isinstance(n, dict)]
    return (keys, nodes) if keys else None


def _source_type(fields: Fields) -> list[Finding]:
    kind = fields.source_type
    if not kind:
        return []
    words = SOURCE_TYPE_WORDS.get(kind, kind)
    if kind in AI_SOURCE_TYPES:
        return [Finding(METADATA, "metadata.ai_source_type", "XMP: AI-generated" if kind == "trainedAlgorithmicMedia"
                        else "XMP: AI-edited", f"The file's XMP metadata declares it {words} (IPTC digital source "
                        f"type '{kind}').", STRONG, LEANS_FAKE, decides=True,
                        assertion=f"metadata: XMP Iptc4xmpExt:DigitalSourceType {kind}",
                        details={"digital_source_type": kind})]  # fmt: skip
    return [Finding(METADATA, "metadata.source_type", "XMP: source type", f"The file's XMP metadata says it was "
                    f"{words} (IPTC digital source type '{kind}'). Metadata can be edited, so this is context, not "
                    "proof.", CONTEXT, details={"digital_source_type": kind})]  # fmt: skip


def _camera(fields: Fields) -> list[Finding]:
    if not (fields.make or fields.model):
        return []
    make, model = fields.make or "", fields.model or ""
    camera = model if model.lower().startswith(make.lower()) else f"{make} {model}".strip()  # "Canon Canon EOS R5"
    taken = f", taken {fields.taken_at}" if fields.taken_at else ""
    lens = f", lens {fields.lens}" if fields.lens else ""
    return [Finding(METADATA, "metadata.camera", "Metadata: camera", f"Camera metadata: {camera}{taken}{lens}. "
                    "Metadata can be copied or edited, so this is context, not proof.", CONTEXT,
                    details=trim({"make": fields.make, "model": fields.model, "lens": fields.lens,
                                  "taken_at": fields.taken_at, "modified_at": fields.modified_at,
                                  "software": fields.software}))]  # fmt: skip


def _edit_traces(container: Container, fields: Fields, jpeg_quality: int | None) -> list[Finding]:
    """Signs of editing or re-saving: editing software, a later modification time, an edit
    history, compression tables that do not fit the camera named. None of them is manipulation."""
    traces = []
    editors = [s for s in fields.software if EDITORS.search(s)]
    if editors:
        traces.append(f"saved with {', '.join(dict.fromkeys(editors))}")
    elif fields.software:
        traces.append(f"software named: {', '.join(dict.fromkeys(fields.software))}")
    if fields.taken_at and fields.modified_at and _later(fields.modified_at, fields.taken_at):
        traces.append(f"modified ({fields.modified_at}) after it was taken ({fields.taken_at})")
    actions = [h for h in fields.history if h.get("action")]
    if actions:
        steps = ", ".join(dict.fromkeys(f"{h['action']}" + (f" in {h['softwareAgent']}" if h["softwareAgent"] else "")
                                        for h in actions))  # fmt: skip
        traces.append(f"an edit history of {len(actions)} step(s): {steps}")
    if fields.derived_from:
        traces.append("it says it was derived from another document")
    if container.adobe_marker:
        traces.append("saved by Adobe software (an Adobe JPEG marker)")
    if container.writer:
        traces.append(f"written or re-encoded by FFmpeg ({container.writer})")
    tables = _table_family(container.quant_tables, jpeg_quality)
    if tables == "standard" and (fields.make or fields.model):
        traces.append("the camera is named, but the compression tables are the standard libjpeg ones that editing "
                      "software, platforms and generators use: it may have been re-saved since")  # fmt: skip
    findings = []
    if traces:
        findings.append(Finding(METADATA, "metadata.edit_traces", "Metadata: edit traces",
                                "Signs of editing or re-saving: " + "; ".join(traces) + ". Editing is not "
                                "manipulation in itself.", CONTEXT,
                                details=trim({"software": fields.software, "history": fields.history,
                                              "modified_at": fields.modified_at, "taken_at": fields.taken_at})))  # fmt: skip
    if tables is not None:
        words = (f"the standard libjpeg tables at quality about {jpeg_quality}, as most editing software, web "
                 "platforms and generators write them" if tables == "standard" else
                 "custom tables, as camera firmware and Adobe software write them")  # fmt: skip
        findings.append(Finding(METADATA, "metadata.jpeg_tables", "JPEG: " + ("standard tables" if tables == "standard"
                                else "custom tables"), f"JPEG compression: {words}.", CONTEXT,
                                details={"family": tables, "estimated_quality": jpeg_quality}))  # fmt: skip
    return findings


def _table_family(tables: dict[int, np.ndarray], quality: int | None) -> str | None:
    """"standard" when the luminance (and chrominance) tables are libjpeg's scaled to about the
    estimated quality, "custom" otherwise; None without tables."""
    if quality is None or 0 not in tables:
        return None
    for q in range(max(1, quality - 2), min(100, quality + 2) + 1):
        scale = 5000 / q if q < 50 else 200 - 2 * q
        if all(np.array_equal(tables[slot], np.clip((base * scale + 50) // 100, 1, 255))
               for slot, base in _IJG_BASE.items() if slot in tables):  # fmt: skip
            return "standard"
    return "custom"


def _later(modified: str, taken: str) -> bool:
    try:
        return datetime.strptime(modified[:19], "%Y:%m:%d %H:%M:%S") > datetime.strptime(taken[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return False


def _location(fields: Fields, include_location: bool) -> list[Finding]:
    if fields.location is None:
        return []
    if include_location:
        where = ", ".join(f"{k} {v}" for k, v in fields.location.items() if v is not None)
        return [Finding(METADATA, "metadata.location", "Location: present (shown)", f"The file records where it was "
                        f"taken ({where}).", CONTEXT, details=trim(fields.location))]  # fmt: skip
    return [Finding(METADATA, "metadata.location", "Location: present", "The file records where it was taken (GPS); "
                    "the coordinates are left out of this report to protect the source.", CONTEXT,
                    details={"location_present": True})]  # fmt: skip


KNOWN_TEXT_KEYS = {"parameters", "prompt", "workflow", "invokeai_metadata", "sd-metadata", "Dream", "fooocus_scheme"}


def _other_texts(texts: dict[str, str]) -> list[Finding]:
    other = {k: v for k, v in texts.items() if k not in KNOWN_TEXT_KEYS}
    if not other:
        return []
    shown = "; ".join(f"{k}: {v[:80]}" for k, v in list(other.items())[:5])
    return [Finding(METADATA, "metadata.text", "Metadata: text notes", f"Text notes in the file: {shown}.", CONTEXT,
                    details=trim(other))]  # fmt: skip
