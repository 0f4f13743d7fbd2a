"""`python -m cymicrogpt ...`: the same command line as the `cymicrogpt` script."""
from .cli import main

raise SystemExit(main())
