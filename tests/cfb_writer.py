"""A small writer of Compound File Binary files ([MS-CFB] version 3), for the tests only.

Legacy Office files (.doc, .xls, .ppt) and Outlook .msg files are CFB containers. No
library we trust writes a new one (olefile only reads, and patches streams in place),
so the tests build their legacy files from documented parts with this writer and read
them back with olefile and libmagic, exactly as the gateway does. It writes what the
specification requires and nothing more: 512-byte sectors, a mini stream for streams
under 4096 bytes, one FAT addressed from the header (files up to about 6.8 MB), and
each storage's children as a balanced binary tree coloured black.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

Tree = dict  # name -> bytes (a stream) or Tree (a storage)

SECTOR = 512
MINI_SECTOR = 64
MINI_CUTOFF = 4096
FREE, END_OF_CHAIN, FAT_SECTOR, NO_STREAM = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFF
STORAGE, STREAM, ROOT = 1, 2, 5


@dataclass
class _Entry:
    name: str
    kind: int
    data: bytes = b""
    clsid: bytes = bytes(16)
    children: list[int] = field(default_factory=list)
    left: int = NO_STREAM
    right: int = NO_STREAM
    child: int = NO_STREAM
    start: int = END_OF_CHAIN
    size: int = 0


def _cfb_order(name: str) -> tuple[int, str]:
    return len(name), name.upper()  # [MS-CFB] 2.6.4: shorter names first, then case-insensitively


def build_cfb(tree: Tree, root_clsid: bytes = bytes(16)) -> bytes:
    """The bytes of a compound file holding `tree` (stream names map to bytes, storage names to dicts)."""
    entries = [_Entry("Root Entry", ROOT, clsid=root_clsid)]

    def add(storage: int, subtree: Tree) -> None:
        for name, value in subtree.items():
            if len(name) > 31:
                raise ValueError(f"CFB names are at most 31 characters: {name!r}")
            entries.append(_Entry(name, STORAGE if isinstance(value, dict) else STREAM,
                                  b"" if isinstance(value, dict) else bytes(value)))
            index = len(entries) - 1
            entries[storage].children.append(index)
            if isinstance(value, dict):
                add(index, value)

    add(0, tree)
    for e in entries:
        e.child = _balanced(sorted(e.children, key=lambda i: _cfb_order(entries[i].name)), entries)

    fat: list[int] = []
    body = bytearray()

    def chain(n_sectors: int) -> int:
        first = len(fat)
        fat.extend(range(first + 1, first + n_sectors))
        fat.append(END_OF_CHAIN)
        return first

    def put(data: bytes) -> int:
        if not data:
            return END_OF_CHAIN
        n = -(-len(data) // SECTOR)
        body.extend(data.ljust(n * SECTOR, b"\0"))
        return chain(n)

    ministream = bytearray()
    minifat: list[int] = []
    for e in entries:
        if e.kind != STREAM:
            continue
        e.size = len(e.data)
        if e.size >= MINI_CUTOFF:
            e.start = put(e.data)
        elif e.size:
            n = -(-e.size // MINI_SECTOR)
            e.start = len(minifat)
            minifat.extend(range(e.start + 1, e.start + n))
            minifat.append(END_OF_CHAIN)
            ministream.extend(e.data.ljust(n * MINI_SECTOR, b"\0"))
    entries[0].start = put(bytes(ministream))
    entries[0].size = len(ministream)
    minifat_start = put(b"".join(struct.pack("<I", x) for x in minifat))
    n_minifat = -(-len(minifat) * 4 // SECTOR)

    directory = b"".join(_dir_entry(e) for e in entries)
    while len(directory) % SECTOR:
        directory += _dir_entry(_Entry("", 0))
    dir_start = put(directory)

    n_fat = 1
    while n_fat * (SECTOR // 4) < len(fat) + n_fat:
        n_fat += 1
    if n_fat > 109:
        raise ValueError("this writer keeps the whole FAT in the header's DIFAT (files up to about 6.8 MB)")
    fat_sectors = list(range(len(fat), len(fat) + n_fat))
    fat.extend([FAT_SECTOR] * n_fat)
    fat.extend([FREE] * (n_fat * (SECTOR // 4) - len(fat)))
    body.extend(b"".join(struct.pack("<I", x) for x in fat))

    header = struct.pack(
        "<8s16sHHHHH6sIIIIIIIII",
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", bytes(16), 0x003E, 0x0003, 0xFFFE, 9, 6, bytes(6),
        0, n_fat, dir_start, 0, MINI_CUTOFF, minifat_start if minifat else END_OF_CHAIN, n_minifat,
        END_OF_CHAIN, 0,
    )
    difat = fat_sectors + [FREE] * (109 - n_fat)
    header += b"".join(struct.pack("<I", x) for x in difat)
    assert len(header) == SECTOR
    return header + bytes(body)


def _balanced(ordered: list[int], entries: list[_Entry]) -> int:
    if not ordered:
        return NO_STREAM
    mid = len(ordered) // 2
    node = entries[ordered[mid]]
    node.left = _balanced(ordered[:mid], entries)
    node.right = _balanced(ordered[mid + 1:], entries)
    return ordered[mid]


def _dir_entry(e: _Entry) -> bytes:
    name = e.name.encode("utf-16-le") + b"\0\0" if e.name else b""
    return struct.pack(
        "<64sHBBIII16sIQQIQ",
        name, len(name), e.kind, 1, e.left, e.right, e.child, e.clsid, 0, 0, 0,
        e.start if e.kind in (STREAM, ROOT) else 0, e.size,
    )


# ---------------------------------------------------------------------------------------
# What goes inside: the smallest documented forms of the legacy formats the gateway reads.

def summary_information(title: str = "", subject: str = "", author: str = "", app: str = "") -> bytes:
    """A \\x05SummaryInformation property set ([MS-OLEPS]): code page 1252 and VT_LPSTR strings."""
    props = [(1, struct.pack("<HHh2x", 0x02, 0, 1252))]
    for pid, value in ((2, title), (3, subject), (4, author), (18, app)):
        if value:
            raw = value.encode("cp1252") + b"\0"
            raw += b"\0" * (-len(raw) % 4)
            props.append((pid, struct.pack("<HHI", 0x1E, 0, len(value) + 1) + raw))
    offsets, body = [], b""
    base = 8 + 8 * len(props)
    for pid, value in props:
        offsets.append(struct.pack("<II", pid, base + len(body)))
        body += value
    section = struct.pack("<II", base + len(body), len(props)) + b"".join(offsets) + body
    fmtid = bytes.fromhex("e0859ff2f94f6810ab9108002b27b3d9")  # F29F85E0-4FF9-1068-AB91-08002B27B3D9
    return struct.pack("<HHI16sI", 0xFFFE, 0, 0x00020006, bytes(16), 1) + fmtid + struct.pack("<I", 48) + section


def word97(main: str, header: str = "", footer: str = "", encrypted: bool = False) -> dict:
    """The streams of a Word 97-2003 document ([MS-DOC]): a FIB in WordDocument, the text
    as two pieces (the body 8-bit "compressed", the header story UTF-16), and in 1Table
    the piece table (Clx) and the PlcfHdd that divides the header story into headers and footers."""
    body = main.replace("\n", "\r") + "\r"
    stories = ""
    hdd: list[int] = [0] * 6                       # footnote and endnote separators: empty
    if header or footer:
        h, f = header.replace("\n", "\r") + "\r", footer.replace("\n", "\r") + "\r"
        # even header, odd header, even footer, odd footer, first header, first footer
        hdd += [0, 0, len(h), len(h), len(h) + len(f), len(h) + len(f), len(h) + len(f)]
        stories = h + f + "\r"
    text_fc = 0x800
    wd = bytearray(text_fc)
    wd[text_fc:] = body.encode("cp1252")
    stories_fc = len(wd)
    wd += stories.encode("utf-16-le")
    flags = 0x0200 | (0x0100 if encrypted else 0)   # fWhichTblStm: 1Table; fEncrypted
    struct.pack_into("<HHHHHH", wd, 0, 0xA5EC, 0x00C1, 0, 0x0809, 0, flags)
    struct.pack_into("<H", wd, 0x20, 14)            # csw, then fibRgW (14 shorts)
    struct.pack_into("<H", wd, 0x3E, 22)            # cslw, then fibRgLw (22 longs)
    struct.pack_into("<iiiiii", wd, 0x40 + 12, len(body), 0, len(stories), 0, 0, 0)  # ccpText, Ftn, Hdd ...
    struct.pack_into("<H", wd, 0x98, 0x5D)          # cbRgFcLcb, then fibRgFcLcbBlob (93 pairs)
    cps = [0, len(body), len(body) + len(stories)] if stories else [0, len(body)]
    pcds = [struct.pack("<HIH", 0, (text_fc * 2) | 0x40000000, 0)]
    if stories:
        pcds.append(struct.pack("<HIH", 0, stories_fc, 0))
    plc = struct.pack(f"<{len(cps)}I", *cps) + b"".join(pcds)
    clx = b"\x02" + struct.pack("<I", len(plc)) + plc
    plcf_hdd = struct.pack(f"<{len(hdd)}I", *hdd) if stories else b""
    table = bytes(16) + plcf_hdd + clx
    struct.pack_into("<II", wd, 0x9A + 11 * 8, 16, len(plcf_hdd))
    struct.pack_into("<II", wd, 0x9A + 33 * 8, 16 + len(plcf_hdd), len(clx))
    return {"WordDocument": bytes(wd), "1Table": table}


def _ppt_record(kind: int, body: bytes = b"", instance: int = 0, children: list[bytes] | None = None) -> bytes:
    if children is not None:
        body = b"".join(children)
        return struct.pack("<HHI", 0x000F | (instance << 4), kind, len(body)) + body
    return struct.pack("<HHI", instance << 4, kind, len(body)) + body


def powerpoint97(slides: list[str], footer: str = "", encrypted: bool = False) -> dict:
    """The streams of a PowerPoint 97-2003 presentation ([MS-PPT]): a DocumentContainer with
    the slide text (SlideListWithText: TextCharsAtom), a master whose placeholder text must
    not be read, and the footer in HeadersFooters; and the Current User atom, whose header
    token says whether the document is encrypted."""
    text = [_ppt_record(0x0FA0, s.replace("\n", "\r").encode("utf-16-le")) for s in slides]
    document = _ppt_record(0x03E8, children=[
        _ppt_record(0x03F8, children=[_ppt_record(0x0FA0, "Click to edit Master title style".encode("utf-16-le"))]),
        _ppt_record(0x0FF0, children=text),
        _ppt_record(0x0FD9, children=[_ppt_record(0x0FBA, footer.encode("utf-16-le"), instance=2)]),
    ])
    token = 0xF3D1C4DF if encrypted else 0xE391C05F
    current_user = _ppt_record(0x0FF6, struct.pack("<IIIHHBBH", 20, token, 0, 0, 0x03F4, 3, 0, 0))
    return {"PowerPoint Document": document, "Current User": current_user}


MSG_CLSID = bytes.fromhex("0b0d020000000000c000000000000046")  # {00020D0B-0000-0000-C000-000000000046}


def _unicode(prop: int, value: str) -> tuple[str, bytes]:
    return f"__substg1.0_{prop:04X}001F", value.encode("utf-16-le")     # no terminating null in the stream


def _fixed(header: int, props: dict[int, int]) -> bytes:
    """__properties_version1.0: a header, then 16 bytes per fixed-size property (tag, flags, value)."""
    return bytes(header) + b"".join(struct.pack("<IIiI", (pid << 16) | 0x0003, 6, value, 0)
                                    for pid, value in props.items())


def outlook_message(subject: str, body: str, sender: tuple[str, str], to: list[tuple[str, str]],
                    attachments: list[tuple[str, bytes]] = (), embedded: list[dict] = (),  # type: ignore[assignment]
                    top: bool = True, message_class: str = "IPM.Note") -> dict:
    """The storages and streams of an Outlook message ([MS-OXMSG]): string properties as
    UTF-16 __substg1.0_XXXX001F streams, recipients and attachments as storages. An
    attached message (`embedded`, built by this function with top=False) sits in the
    attachment's __substg1.0_3701000D storage with attach method 5."""
    tree: dict = dict([_unicode(0x001A, message_class), _unicode(0x0037, subject), _unicode(0x1000, body),
                       _unicode(0x0C1A, sender[0]), _unicode(0x5D01, sender[1])])
    tree["__properties_version1.0"] = _fixed(32 if top else 24, {0x3FFD: 65001})
    if top:
        tree["__nameid_version1.0"] = {"__substg1.0_00020102": b"", "__substg1.0_00030102": b"",
                                       "__substg1.0_00040102": b""}
    for i, (name, address) in enumerate(to):
        tree[f"__recip_version1.0_#{i:08X}"] = dict([_unicode(0x3001, name), _unicode(0x39FE, address),
                                                    ("__properties_version1.0", _fixed(8, {0x0C15: 1}))])
    for i, (name, data) in enumerate(attachments):
        tree[f"__attach_version1.0_#{i:08X}"] = dict([_unicode(0x3707, name), ("__substg1.0_37010102", data),
                                                     ("__properties_version1.0", _fixed(8, {0x3705: 1}))])
    for j, inner in enumerate(embedded, start=len(attachments)):
        tree[f"__attach_version1.0_#{j:08X}"] = {"__substg1.0_3701000D": inner,
                                                 "__properties_version1.0": _fixed(8, {0x3705: 5})}
    return tree
