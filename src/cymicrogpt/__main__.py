"""`python -m cymicrogpt ...`: the same command line as the `cymicrogpt` script."""
from .launch import main

raise SystemExit(main())
