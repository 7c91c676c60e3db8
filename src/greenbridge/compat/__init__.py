"""Drop-in replacements for the APIs of greenbridge's peers, built on greenbridge.

Each module here is named after the library it stands in for and exposes
that library's public names with its semantics, so that switching is an
import line: ``import greenbridge.compat.greenback as greenback``.  Where the
behaviour differs, the module's docstring and its migration guide say how
and why.  Nothing is imported from here by the rest of the package.
"""
