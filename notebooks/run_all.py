"""Execute every notebook in this folder top to bottom (used by .ci/run).

The notebooks are stored without outputs; this runs them in a fresh kernel and fails on the
first cell that raises.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def main() -> int:
    folder = Path(__file__).resolve().parent
    notebooks = sorted(folder.glob("*.ipynb"))
    for path in notebooks:
        notebook = nbformat.read(path, as_version=4)
        NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
        print(f"executed {path.name}")
    print(f"{len(notebooks)} notebooks executed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
