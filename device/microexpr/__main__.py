import sys

from microexpr.cli import main

sys.exit(main())
