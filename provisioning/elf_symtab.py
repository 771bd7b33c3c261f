"""Drop the static symbol table (.symtab + its .strtab) from an ELF shared library.

Why: mediapipe's libmediapipe.so ships 30 MB of .symtab/.strtab, names of
internal functions that only a debugger or a symbolising crash handler reads.
They are not in any loadable segment, so the dynamic loader never maps them;
the exported names ctypes looks up live in .dynsym/.dynstr, which stay. This
is what `strip` does for that part, written in the standard library because
the device has no binutils (no toolchain at all: issue 15).

Only 64-bit little-endian ELF files (x86_64, aarch64) are handled; anything
else, or a layout where the removed bytes could be inside a segment, is
refused with ValueError and the file is left untouched. The file is replaced
atomically (written beside it, then renamed).
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

SHT_NOBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_REL = 8, 2, 3, 4, 9
SHF_ALLOC, SHF_INFO_LINK = 0x2, 0x40
_SHDR = struct.Struct("<IIQQQQIIQQ")
_PHDR = struct.Struct("<IIQQQQQQ")


@dataclass(slots=True)
class _Section:
    name: int
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    info: int
    align: int
    entsize: int


def _read(data: bytes) -> tuple[list[_Section], int]:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", data, 0x36)
    if shentsize != _SHDR.size or phentsize != _PHDR.size or shnum == 0 or shoff + shnum * shentsize > len(data):
        raise ValueError("unexpected section or program header layout")
    sections = [_Section(*_SHDR.unpack_from(data, shoff + i * shentsize)) for i in range(shnum)]
    seg_end = 0
    for i in range(phnum):
        _ptype, _flags, offset, _va, _pa, filesz, _memsz, _align = _PHDR.unpack_from(data, phoff + i * phentsize)
        seg_end = max(seg_end, offset + filesz)
    return sections, seg_end


def symtab_size(path: Path) -> int:
    """Bytes a strip would free (0: nothing to remove)."""
    data = path.read_bytes()
    sections, _ = _read(data)
    return sum(sections[i].size for i in _removable(sections))


def _removable(sections: list[_Section]) -> list[int]:
    symtabs = [i for i, s in enumerate(sections) if s.type == SHT_SYMTAB]
    out: list[int] = []
    for i in symtabs:
        out.append(i)
        strtab = sections[i].link
        users = [j for j, s in enumerate(sections) if s.link == strtab and j != i]
        if 0 < strtab < len(sections) and sections[strtab].type == SHT_STRTAB and not users:
            out.append(strtab)
    return sorted(out)


def strip_symtab(path: Path) -> int:
    """Remove .symtab and its string table in place; returns the bytes freed (0 if none)."""
    data = path.read_bytes()
    sections, seg_end = _read(data)
    drop = _removable(sections)
    if not drop:
        return 0
    shstrndx = struct.unpack_from("<H", data, 0x3E)[0]
    if shstrndx in drop:
        raise ValueError("the section name table is the symbol string table")
    cut = min(sections[i].offset for i in drop)
    if cut < seg_end:
        raise ValueError("the symbol table lies inside a loadable segment")
    for j, s in enumerate(sections):
        if j in drop or s.type == SHT_NOBITS or s.size == 0 or s.offset < cut:
            continue
        if s.flags & SHF_ALLOC:
            raise ValueError("an allocated section follows the symbol table")
    index = {}
    kept: list[_Section] = []
    for j, s in enumerate(sections):
        if j not in drop:
            index[j] = len(kept)
            kept.append(_Section(**{k: getattr(s, k) for k in _Section.__slots__}))
    out = bytearray(data[:cut])
    for old, s in zip([j for j in range(len(sections)) if j not in drop], kept):
        if s.link:
            if s.link in drop:
                raise ValueError(f"section {old} links the removed symbol table")
            s.link = index[s.link]
        if s.info and (s.type in (SHT_RELA, SHT_REL) or s.flags & SHF_INFO_LINK):
            if s.info in drop:
                raise ValueError(f"section {old} refers to the removed symbol table")
            s.info = index[s.info]
        if s.offset >= cut and s.type != SHT_NOBITS and s.size:
            align = max(s.align, 1)
            out += b"\0" * (-len(out) % align)
            chunk = data[s.offset:s.offset + s.size]
            s.offset = len(out)
            out += chunk
    out += b"\0" * (-len(out) % 8)
    shoff = len(out)
    for s in kept:
        out += _SHDR.pack(s.name, s.type, s.flags, s.addr, s.offset, s.size, s.link, s.info, s.align, s.entsize)
    struct.pack_into("<Q", out, 0x28, shoff)
    struct.pack_into("<HH", out, 0x3C, len(kept), index[shstrndx])
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(out)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(data) - len(out)
