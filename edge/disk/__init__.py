"""edge.disk: the edge's on-disk cache store, behind the in-process memory store.

``fileformat`` is the checksummed file layout (pure, bytes in and out), ``store`` the
byte-bounded LRU of files with its loader and writer threads, ``tiered`` the memory + disk
store the proxy uses when ``[edge] disk_path`` is set. Imports ``edge.store``,
``edge.policy`` and ``edge.tier.entrycodec`` only.
"""
