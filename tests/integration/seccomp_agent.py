"""A small seccomp agent for the tests: receives notify fds from a runtime and answers the calls.

    python seccomp_agent.py SOCKET RECORD [--mkdir-errno N] [--die-after-fd]

Listens on SOCKET (a path, or ``@name`` for an abstract socket), prints ``listening`` on stdout once it
accepts connections, and appends one JSON line per event to RECORD:

* ``{"event": "fd", "message": <the container process state>, "fds": <how many fds came>}`` for each
  connection (one message and its SCM_RIGHTS fd, as runc's seccomp agent protocol has it);
* ``{"event": "call", "name": <syscall>, "pid": <caller>, "answer": ...}`` for each notification.

Answers: mkdir/mkdirat fail with errno N when ``--mkdir-errno N`` is given (N > 0), otherwise they
(and any other trapped call) continue in the kernel as if not trapped.  ``--die-after-fd`` makes the
agent exit right after recording the first fd, without answering anything: the container's trapped
calls then fail with ENOSYS.

Uses the project's own binding (inclavare.linux.seccomp.notify_*), so run it with src/ on the path.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import sys


def _record(path: str, entry: dict[str, object]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")


def _receive(conn: socket.socket) -> tuple[dict[str, object], list[int]]:
    # One recvmsg, as runc's sample agent does: runc keeps its end open while `runc run` lives, so
    # waiting for EOF would hang; the state and the fd come in one sendmsg.
    conn.settimeout(10)
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 4)
    return json.loads(data), fds


def main() -> int:
    from inclavare.errors import SeccompError
    from inclavare.linux import seccomp

    ap = argparse.ArgumentParser()
    ap.add_argument("socket")
    ap.add_argument("record")
    ap.add_argument("--mkdir-errno", type=int, default=0)
    ap.add_argument("--die-after-fd", action="store_true")
    opts = ap.parse_args()

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\0" + opts.socket[1:] if opts.socket.startswith("@") else opts.socket)
    server.listen(8)
    print("listening", flush=True)
    poller = select.poll()
    poller.register(server.fileno(), select.POLLIN)
    notify_fds: set[int] = set()
    while True:
        for fd, events in poller.poll():
            if fd == server.fileno():
                conn, _ = server.accept()
                with conn:
                    message, fds = _receive(conn)
                _record(opts.record, {"event": "fd", "message": message, "fds": len(fds)})
                if opts.die_after_fd:
                    return 0
                for extra in fds[1:]:
                    os.close(extra)
                if fds:
                    notify_fds.add(fds[0])
                    poller.register(fds[0], select.POLLIN)
                continue
            if not events & select.POLLIN:  # POLLHUP: every process under the filter is gone
                poller.unregister(fd)
                notify_fds.discard(fd)
                os.close(fd)
                continue
            try:
                call = seccomp.notify_receive(fd)
            except SeccompError:
                continue  # the caller went away before we read it
            name = call.syscall_name()
            answer: dict[str, int]
            if name in ("mkdir", "mkdirat") and opts.mkdir_errno > 0:
                answer = {"error": opts.mkdir_errno}
            else:
                answer = {"flags": seccomp.NOTIFY_FLAG_CONTINUE}
            _record(opts.record, {"event": "call", "name": name, "pid": call.pid, "answer": answer})
            try:
                seccomp.notify_respond(fd, call.id, **answer)
            except SeccompError:
                pass  # interrupted or killed meanwhile


if __name__ == "__main__":
    sys.exit(main())
