"""`python -m metatune ...` (and `torchrun -m metatune ...`): the same command as `metatune`."""
import sys

from metatune.cli import main

sys.exit(main())
