"""Print a free TCP port on 127.0.0.1 (for the demo's local services)."""

import socket

with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1])
