"""Translation at the edges: Kela's formats in, municipal formats out. Formats, never routing."""

__all__: list[str] = []
