"""`python3 -m agent`: the MongoDB member container's main process (image/Dockerfile)."""

from __future__ import annotations

import sys

from .api import main

sys.exit(main())
