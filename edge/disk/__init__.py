"""edge.disk: the edge's on-disk cache store, behind the in-process memory store.

``fileformat`` is the checksummed binary file layout (pure, bytes in and out), ``store`` the
byte-bounded LRU of files with its loader, writer and reader threads, ``tiered`` the memory +
disk store the proxy uses when ``[edge] disk_path`` is set (disk reads awaited off the event
loop). Imports ``edge.store`` and ``edge.policy`` only.
"""
