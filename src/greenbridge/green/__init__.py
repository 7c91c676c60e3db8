"""Green replacements for stdlib modules, one file per module, named after it.

``greenbridge.green.socket`` mirrors ``socket``, ``greenbridge.green.ssl``
mirrors ``ssl``, and so on: each exports everything its stdlib module exports,
with the blocking operations made cooperative (they suspend only the calling
greenlet when run under greenbridge, and block exactly like the stdlib when no
event loop runs in the thread).

Import them directly (``from greenbridge.green import socket``) or let
:func:`greenbridge.patch_blocking` / :func:`greenbridge.monkey_patch` put them
in place while a library is imported.  The patcher discovers the modules by
listing this package, so a new ``green/<name>.py`` joins without further
registration.  What the modules share (the re-export of the stdlib module,
the timeout of a retry loop, the waits for descriptors and child processes)
is in ``_util``, which has no stdlib twin.
"""
