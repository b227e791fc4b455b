# pytest rootdir marker: keeps the repository root importable for tests (see tests/__init__.py).
