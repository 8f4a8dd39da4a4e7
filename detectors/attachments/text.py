"""Plain text, CSV and HTML attachments, in whatever charset they were written.

The charset is worked out from the bytes: a byte-order mark, then strict UTF-8, then
charset-normalizer's guess, then Windows-1252 (what "ANSI" exports from Excel are).
"""

from __future__ import annotations

import codecs

from detectors.attachments.core import Budget, Extraction, extractor, extractor_for_prefix

_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_GUESS_SAMPLE = 256 * 1024


def decode_bytes(data: bytes) -> str:
    """Text from bytes of an unknown charset; never raises."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return data.decode(codec, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    sample = data[:_GUESS_SAMPLE]
    if sample.count(b"\x00") > len(sample) // 4:  # UTF-16 without a byte-order mark
        even_nuls = sample[0::2].count(b"\x00")
        return data.decode("utf-16-be" if even_nuls > len(sample) // 4 else "utf-16-le", errors="replace")
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(sample).best()
        # Short Western text is ambiguous between the Latin code pages; in UK mail it is almost
        # always Windows-1252 ("ANSI" exports), so only a non-Latin guess (Cyrillic, CJK ...) wins.
        if best is not None and best.encoding not in _LATIN_GUESSES:
            return data.decode(best.encoding, errors="replace")
    except Exception:
        pass
    return data.decode("cp1252", errors="replace")


_LATIN_GUESSES = {"utf_8", "ascii", "cp1250", "cp1252", "cp1254", "cp1257", "latin_1", "iso8859_2", "iso8859_3",
                  "iso8859_4", "iso8859_9", "iso8859_10", "iso8859_13", "iso8859_14", "iso8859_15", "iso8859_16",
                  "mac_roman", "mac_latin2", "cp850", "cp437", "cp858"}


@extractor_for_prefix("text/")
@extractor("text/plain", "text/csv", "application/csv", "application/xml", "application/json")
def read_text(data: bytes, budget: Budget) -> Extraction:
    from detectors.attachments.crypto import read_crypto_object

    # libmagic calls PEM PKCS#7, saved S/MIME parts and text with an armoured PGP block plain text.
    found = read_crypto_object(data, budget)
    if found is not None:
        return Extraction(text=decode_bytes(data), members=found.members, encrypted=found.encrypted,
                          incomplete=found.incomplete)
    return Extraction(text=decode_bytes(data))


@extractor("text/html", "application/xhtml+xml")
def read_html(data: bytes, budget: Budget) -> Extraction:
    from gateway.message import html_to_text

    return Extraction(text=html_to_text(decode_bytes(data)))
