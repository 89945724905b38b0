"""The asyncio adapter: sockets, connections, workers. Policy lives in the other packages."""
