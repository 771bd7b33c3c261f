"""microexpr: facial micro-expression recognition on the edge.

Importing the package must never need a display: matplotlib (imported by
mediapipe's vision tasks) is pinned to the Agg backend before anything else.
"""

import os as _os

_os.environ.setdefault("MPLBACKEND", "Agg")

__version__ = "0.1.0"
