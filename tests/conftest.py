"""Suite-wide settings: reproducible hypothesis runs with no per-example deadline (CI machines are slow)."""

from hypothesis import settings

settings.register_profile("project", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("project")
