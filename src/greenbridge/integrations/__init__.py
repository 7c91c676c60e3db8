"""Web framework and server integrations, each an optional extra.

Nothing in greenbridge's core imports from here; each submodule imports its
framework itself, so installing greenbridge does not pull any of them in.
"""
