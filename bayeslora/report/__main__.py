import sys

from bayeslora.report.cli import main

sys.exit(main())
