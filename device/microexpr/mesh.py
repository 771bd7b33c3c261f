"""Named points of the FaceLandmarker's 478-point mesh, for the stages that
look at pixels around them (motion regions, synthetic warps).

"Left" and "right" are the subject's: with a camera that does not mirror,
the subject's left is the image's right. Indices were checked by drawing
them on ``astronaut.png`` and ``single_face.mp4``.
"""

from __future__ import annotations

#: Outer/inner eye corners.
RIGHT_EYE_OUTER, RIGHT_EYE_INNER, LEFT_EYE_INNER, LEFT_EYE_OUTER = 33, 133, 362, 263
#: Points that no facial action moves much: inner eye corners, nasal root
#: and bridge, forehead, temples and the upper face oval. A similarity
#: fitted on them removes in-plane head motion. The *outer* eye corners are
#: left out on purpose: the mesh pulls them inward by ~3 % of the IOD during
#: a blink (measured), which as a scale error moved the chin region by
#: 0.03 IOD and read as a chin movement.
STABLE_POINTS: tuple[int, ...] = (
    133, 362, 168, 6, 197, 195, 9, 151, 10, 234, 454, 127, 356, 93, 323,
    21, 251, 54, 284, 103, 332, 67, 297, 109, 338,
)
#: Skin points spread over the face that expressions move least (nasal
#: root and bridge, inner eye corners, temples): the optical flow sampled
#: there measures what the landmark alignment got wrong (tracker lag during
#: head motion, jitter), and a similarity fitted to it is removed.
FLOW_ANCHORS: tuple[int, ...] = (168, 6, 197, 195, 133, 362, 127, 356, 234, 454)

#: Subject's-left point → its mirror on the subject's right.
MIRROR: dict[int, int] = {
    291: 61, 287: 57, 336: 107, 296: 66, 334: 105, 300: 70, 293: 63, 276: 46, 283: 53,
    285: 55, 282: 52, 295: 65, 386: 159, 385: 158, 387: 160, 388: 161, 384: 157, 466: 246,
    398: 173, 374: 145, 373: 144, 380: 153, 390: 163, 381: 154, 249: 7, 382: 155,
    257: 27, 258: 28, 259: 29, 260: 30, 286: 56, 414: 190, 467: 247, 450: 230, 449: 229,
    425: 205, 280: 50, 330: 101, 347: 118, 358: 129, 327: 98, 423: 203, 429: 209, 437: 217,
    419: 196, 399: 174, 432: 212, 422: 202, 267: 37, 269: 39, 270: 40, 409: 185, 314: 84,
    405: 181, 321: 91, 375: 146, 335: 106, 273: 43, 262: 32, 428: 208, 369: 140, 396: 171,
    377: 148, 312: 82, 311: 81, 310: 80, 317: 87, 402: 178, 318: 88, 308: 78, 415: 191,
    324: 95, 263: 33, 362: 133,
}
#: Points on the face's midline.
MIDLINE: frozenset[int] = frozenset(
    {0, 11, 12, 13, 14, 15, 16, 17, 18, 200, 199, 175, 152, 9, 8, 168, 6, 197, 195, 5, 4, 1, 2, 151}
)

#: Upper-lid margin → the lower-lid point it meets when the eye closes.
BLINK_PAIRS: tuple[tuple[int, int], ...] = (
    (246, 7), (161, 163), (160, 144), (159, 145), (158, 153), (157, 154), (173, 155),
    (466, 249), (388, 390), (387, 373), (386, 374), (385, 380), (384, 381), (398, 382),
)
#: Upper-lid skin above the margin (crease) → the margin point it follows.
LID_CREASE: dict[int, int] = {
    247: 159, 30: 160, 29: 159, 27: 159, 28: 158, 56: 157, 190: 173,
    467: 386, 260: 387, 259: 386, 257: 386, 258: 385, 286: 384, 414: 398,
}
RIGHT_IRIS: tuple[int, ...] = tuple(range(468, 473))
LEFT_IRIS: tuple[int, ...] = tuple(range(473, 478))
#: Points of the face mesh proper (the iris points follow).
MESH_POINTS = 468

