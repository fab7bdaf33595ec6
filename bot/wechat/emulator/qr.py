"""A small SVG for ``showqrcode``: a QR-looking pattern (not scannable) with the scene in text.

Nobody scans the emulator's codes with a phone: a follower "scans" through the control API. The
picture only has to look like a QR code in the demo and say which scene it stands for.
"""

from __future__ import annotations

import hashlib
from xml.sax.saxutils import escape

_SIZE = 25
_CELL = 8
_MARGIN = 2


def _finder(x0: int, y0: int) -> set[tuple[int, int]]:
    cells = set()
    for x in range(7):
        for y in range(7):
            ring = x in (0, 6) or y in (0, 6)
            core = 2 <= x <= 4 and 2 <= y <= 4
            if ring or core:
                cells.add((x0 + x, y0 + y))
    return cells


def qr_svg(ticket: str, scene: str) -> str:
    finders = _finder(0, 0) | _finder(_SIZE - 7, 0) | _finder(0, _SIZE - 7)
    reserved = {
        (x, y)
        for x in range(_SIZE)
        for y in range(_SIZE)
        if (x < 8 and y < 8) or (x >= _SIZE - 8 and y < 8) or (x < 8 and y >= _SIZE - 8)
    }
    bits = hashlib.sha256(ticket.encode()).digest() * 3
    cells = set(finders)
    i = 0
    for y in range(_SIZE):
        for x in range(_SIZE):
            if (x, y) in reserved:
                continue
            if bits[i // 8 % len(bits)] >> (i % 8) & 1:
                cells.add((x, y))
            i += 1
    side = (_SIZE + 2 * _MARGIN) * _CELL
    rects = "".join(
        f'<rect x="{(x + _MARGIN) * _CELL}" y="{(y + _MARGIN) * _CELL}" width="{_CELL}" height="{_CELL}"/>'
        for x, y in sorted(cells)
    )
    label = escape(scene)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{side}" height="{side + 24}" '
        f'viewBox="0 0 {side} {side + 24}"><rect width="100%" height="100%" fill="#fff"/>'
        f'<g fill="#000">{rects}</g>'
        f'<text x="{side // 2}" y="{side + 16}" font-size="12" text-anchor="middle" '
        f'font-family="monospace">{label}</text></svg>'
    )
