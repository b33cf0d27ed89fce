"""Minimal PDF files written by hand for the attachment tests: one page per text, each line of it shown in
Helvetica (one of the 14 standard fonts, so no font is embedded). The text is the test's independent reference:
what a PDF reader must extract (pdf.js in the page, web/pdf_text.js).

    >>> minimal_pdf(["The winner was Oskar Brandt."])[:8]
    b'%PDF-1.4'
"""
from __future__ import annotations

from typing import List


def _escaped(line: str) -> str:
    """A PDF literal string's body: backslashes and parentheses escaped (ASCII text only)."""
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def minimal_pdf(pages: List[str]) -> bytes:
    """A valid PDF 1.4 file (catalog, page tree, pages, one font, content streams, cross-reference table)."""
    count = len(pages)
    font = 3 + 2 * count  # object numbers: 1 catalog, 2 page tree, then a page and its content per text, the font
    objects = {1: "<< /Type /Catalog /Pages 2 0 R >>",
               2: "<< /Type /Pages /Kids [%s] /Count %d >>" % (" ".join("%d 0 R" % (3 + 2 * i) for i in range(count)),
                                                                count),
               font: "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"}
    for i, text in enumerate(pages):
        lines = "".join("(%s) Tj T* " % _escaped(line) for line in text.split("\n"))
        stream = "BT /F1 12 Tf 14 TL 72 720 Td %sET" % lines
        objects[3 + 2 * i] = ("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                              "/Resources << /Font << /F1 %d 0 R >> >> >>" % (4 + 2 * i, font))
        objects[4 + 2 * i] = "<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number in range(1, font + 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, objects[number].encode("ascii"))
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (font + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (font + 1, xref)
    return bytes(out)
