"""Depth for many files: the file-to-file job (resumable, atomic writes, per-file failures) and its Ray twin."""
