"""HTTP/1.x rules that need no sockets: request heads, targets, headers, problem responses."""
