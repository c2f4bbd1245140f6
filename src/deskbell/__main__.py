"""`python -m deskbell` is the same as the `deskbell` command."""

from __future__ import annotations

from deskbell.cli import main

main()
