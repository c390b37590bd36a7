"""The station file: TOML tables validated by pydantic, cross-checked, resolved once at load."""
