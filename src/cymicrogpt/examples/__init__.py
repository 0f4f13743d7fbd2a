"""Runnable examples, ``python -m cymicrogpt.examples.NAME``; each module's docstring says
what it shows and how to run it.  They are not imported by ``import cymicrogpt``."""
