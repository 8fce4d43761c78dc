import sys

from bayeslora.bench.cli import main

sys.exit(main())
